"""Seconds per training step of CIFAR ResNets at batch 128, for a cost estimate of a study.

Synthetic 32x32x3 data (no dataset needed), the training step Keras `fit` runs
(SGD momentum, the project's models), timed over an epoch of `--steps` steps
after a first epoch that traces the graph. Prints one line per depth and the
paper study's estimated cost (64k iterations per run, plain and residual).

    python scripts/dev/bench_step_time.py --depths 20 56 110 --steps 10
"""

from __future__ import annotations

import argparse
import time

PAPER_STEPS = 64_000


def step_time(depth: int, batch: int, steps: int, mixed: bool, threads: int) -> float:
    import keras
    import numpy as np
    import tensorflow as tf

    from resnet_exp.config.schema import ModelConfig
    from resnet_exp.models import build_model
    from resnet_exp.training.fit import configure_runtime

    configure_runtime(threads, False, 0, mixed_precision=mixed)
    rng = np.random.default_rng(0)
    x = rng.normal(size=(batch * 4, 32, 32, 3)).astype("float32")
    y = rng.integers(0, 10, size=batch * 4)
    data = tf.data.Dataset.from_tensor_slices((x, y)).repeat().batch(batch).prefetch(2)
    model = build_model(
        ModelConfig(name="resnet_cifar", depth=depth), input_shape=(32, 32, 3), num_classes=10
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(data, epochs=1, steps_per_epoch=2, verbose=0)  # trace
    start = time.perf_counter()
    model.fit(data, epochs=1, steps_per_epoch=steps, verbose=0)
    return (time.perf_counter() - start) / steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56, 110])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--threads", type=int, default=0)
    parser.add_argument("--mixed-precision", action="store_true")
    args = parser.parse_args()
    total = 0.0
    for depth in args.depths:
        seconds = step_time(depth, args.batch_size, args.steps, args.mixed_precision, args.threads)
        hours = seconds * PAPER_STEPS / 3600
        total += 2 * hours  # plain and residual
        print(
            f"resnet_cifar{depth}: {seconds:.3f} s/step, {args.batch_size / seconds:.0f} images/s; "
            f"{PAPER_STEPS} steps = {hours:.1f} h per run"
        )
    print(f"estimate for these depths, plain + residual, one seed: {total:.0f} h")


if __name__ == "__main__":
    main()
