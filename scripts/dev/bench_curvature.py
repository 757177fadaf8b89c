"""What issue 18's measurements cost next to one training epoch of the default study.

    python scripts/dev/bench_curvature.py                      # depths 20 and 56, 2 repeats
    python scripts/dev/bench_curvature.py --depths 56 --repeats 1 --out /tmp/bench_curvature

For each depth: a residual CIFAR ResNet (the default `model` config) on the digits
(1,437 training examples), and three variants run alternately (`benchkit.interleaved`):

* "epoch": `model.fit` for one epoch, batch 128 (after a warm-up epoch that traces);
* "curvature": `hessian_curvature` on 256 training examples, top eigenvalue with 20
  power iterations (rtol 0: all 20 run) and the trace from 20 Hutchinson samples;
* "landscape": `loss_landscape` on 1,000 training examples, a 21 x 21 surface (its
  middle row is the 1D slice).

Both measurements build a new probe each time, so their times include the trace, as
a run would pay it. Ratios of medians are printed per depth, in wall and in this
process's CPU seconds (steadier on a shared machine). The floor: a 21 x 21 surface
is 441 forward passes over 1,000 examples (441,000 example-forwards), an epoch
1,437 forward and backward passes (about 4,300 forward-equivalents), so the
landscape costs about a hundred epochs' worth of arithmetic at equal speed per
example; the curvature is 40 Hessian-vector products on 256 examples (10,240
example-products, each about a training step's work per example: 7 epochs).
"""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path

from benchkit import interleaved, log, markdown, ratio_row, stopwatch, write_table


def setup(depth: int, threads: int, batch_size: int, curvature_examples: int, examples: int):
    """(model, training arrays, curvature batch, landscape subset), warmed up."""
    import keras

    from resnet_exp.config.schema import DataConfig, ModelConfig
    from resnet_exp.data.splits import load_dataset, probe_batch
    from resnet_exp.models import build_model
    from resnet_exp.training.fit import configure_runtime

    configure_runtime(threads, False, 0)
    data = load_dataset(DataConfig(name="digits"), seed=0)
    model = build_model(
        ModelConfig(name="resnet_cifar", depth=depth),
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        seed=0,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.02, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    model.fit(data.x_train, data.y_train, batch_size=batch_size, epochs=2, verbose=0)  # warm-up
    return (
        model,
        (data.x_train, data.y_train),
        probe_batch(data, curvature_examples, seed=0),
        probe_batch(data, examples, seed=1),
    )


def timed(name: str, work, cpu: dict, reported: dict) -> float:
    """Run `work`; its CPU seconds go to `cpu[name]`, its result to `reported[name]` (if
    kept); returns its wall seconds."""
    with stopwatch(cpu=True) as cpu_seconds, stopwatch() as wall:
        result = work()
    cpu[name].append(cpu_seconds())
    if name in reported:
        reported[name].append(result)
    return wall()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="as each job of the study: 1")
    parser.add_argument("--batch-size", type=int, default=128, help="of the timed epoch")
    parser.add_argument("--grid", type=int, default=21)
    parser.add_argument("--examples", type=int, default=1000, help="landscape subset")
    parser.add_argument("--curvature-examples", type=int, default=256)
    parser.add_argument("--iterations", type=int, default=20)
    parser.add_argument("--samples", type=int, default=20)
    parser.add_argument("--out", type=Path, default=None, help="also write bench.csv/.md here")
    args = parser.parse_args(argv)

    from resnet_exp.recording.curvature import hessian_curvature
    from resnet_exp.recording.landscape import loss_landscape

    start_load = os.getloadavg()[0]
    log(f"load average at start: {start_load:.2f} ({os.cpu_count()} cores)")
    rows, notes = [], []
    for depth in args.depths:
        model, (x_train, y_train), (xc, yc), (xl, yl) = setup(
            depth, args.threads, args.batch_size, args.curvature_examples, args.examples
        )
        cpu: dict[str, list[float]] = {"epoch": [], "curvature": [], "landscape": []}
        reported: dict[str, list[str]] = {"curvature": [], "landscape": []}

        work = {
            "epoch": partial(
                model.fit, x_train, y_train, batch_size=args.batch_size, epochs=1, verbose=0
            ),
            "curvature": partial(
                hessian_curvature,
                model,
                xc,
                yc,
                iterations=args.iterations,
                rtol=0.0,
                samples=args.samples,
            ),
            "landscape": partial(loss_landscape, model, xl, yl, grid=args.grid),
        }
        variants = {name: partial(timed, name, w, cpu, reported) for name, w in work.items()}

        log(f"ResNet-{depth}:")
        wall = interleaved(variants, args.repeats, log)
        label = f"ResNet-{depth}"
        for measure, times in (("wall s", wall), ("CPU s", cpu)):
            rows.append(
                ratio_row(
                    f"landscape {args.grid}x{args.grid}, {args.examples} ex / epoch",
                    f"{measure}, {label}",
                    times,
                    "landscape",
                    "epoch",
                    target="<= ~1",
                )
            )
            rows.append(
                ratio_row(
                    f"curvature {args.iterations} it + {args.samples} samples, "
                    f"{args.curvature_examples} ex / epoch",
                    f"{measure}, {label}",
                    times,
                    "curvature",
                    "epoch",
                    target="<= ~1",
                )
            )
        last_c, last_l = reported["curvature"][-1], reported["landscape"][-1]
        notes.append(
            f"{label}: {last_c.size} parameters; curvature's own times (last repeat): "
            f"{last_c.seconds:.1f} s in all, top eigenvalue {last_c.top.seconds:.1f} s "
            f"({int(last_c.top.iterations[0])} products), trace {last_c.trace.seconds:.1f} s; "
            f"landscape {last_l.seconds:.1f} s, {last_l.surface.seconds / args.grid**2:.3f} s a "
            f"grid point; top eigenvalue {last_c.top.top:.4g}, trace {last_c.trace.trace:.4g} "
            f"+- {last_c.trace.stderr:.2g}, sharpness {last_l.slice.sharpness:.4g}, "
            f"non-convexity {last_l.surface.nonconvexity:.3f}"
        )
    end_load = os.getloadavg()[0]
    header = (
        f"{args.repeats} interleaved repeats, {args.threads} thread(s); load average "
        f"{start_load:.2f} at start, {end_load:.2f} at end, {os.cpu_count()} cores"
    )
    print(header + "\n\n" + markdown(rows) + "\n" + "\n".join(notes))
    if args.out is not None:
        write_table(rows, args.out, header + "\n\n" + "\n\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
