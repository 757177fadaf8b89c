"""What does GradientRecorder cost? Time `fit` with and without it, side by side.

For each model the two variants run alternately in one process (off on, on off,
off on, ...), each from the same seed and a freshly built model, so drift in
the machine's load hits both alike; we report medians over the repeats.

Differences of two noisy totals are themselves noisy on a shared machine, so
the "on" runs also clock the recorder's own hooks. That splits the cost into
what it is made of: a one-off first measurement (tracing the probe function,
then one call) and one probe call per epoch.

Columns (medians; wall seconds unless marked):
    fit off / fit on / A-B %: whole `fit` without / with the recorder.
    CPU A-B %: the same difference in the process's CPU time (all threads).
    hooks %: time inside the recorder's hooks / `fit` without it.
    first s: the first measurement (trace + call); probe ms: a later one.
    epoch ms: a steady-state epoch without the recorder (epochs 2..E).
    probe/epoch %: what a long run pays per epoch once tracing is paid for.

    python scripts/bench_gradient_overhead.py --depths 8 20 56 --epochs 4 --repeats 3
"""

from __future__ import annotations

import argparse
import statistics
import time

import keras
import tensorflow as tf

from resnet_exp.data import Dataset, load_dataset, probe_batch
from resnet_exp.gradients import GradientRecorder
from resnet_exp.models import build_model


def now() -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process, all threads)."""
    return time.perf_counter(), time.process_time()


def since(start: tuple[float, float]) -> tuple[float, float]:
    wall, cpu = now()
    return wall - start[0], cpu - start[1]


class EpochClock(keras.callbacks.Callback):
    """Wall time of each epoch, including every callback listed before this one."""

    def __init__(self) -> None:
        super().__init__()
        self.seconds: list[float] = []

    def on_epoch_begin(self, epoch, logs=None):
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):
        self.seconds.append(time.perf_counter() - self._start)


class ClockedRecorder(GradientRecorder):
    """GradientRecorder that also clocks each of its measurements (wall seconds)."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.hook_seconds: list[float] = []

    def on_train_begin(self, logs=None):
        start = time.perf_counter()
        super().on_train_begin(logs)
        self.hook_seconds.append(time.perf_counter() - start)

    def on_epoch_end(self, epoch, logs=None):
        start = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.hook_seconds.append(time.perf_counter() - start)


def timed_fit(
    data: Dataset, depth: int, residual: bool, *, record: bool, args: argparse.Namespace
) -> dict[str, float]:
    """Times of one `fit` of a freshly built, seeded model."""
    keras.utils.set_random_seed(args.seed)
    model = build_model(
        "resnet_cifar",
        depth,
        input_shape=data.input_shape,
        num_classes=data.num_classes,
        residual=residual,
        seed=args.seed,
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    clock = EpochClock()
    callbacks: list[keras.callbacks.Callback] = [clock]
    recorder = None
    if record:
        recorder = ClockedRecorder(*probe_batch(data, args.probe_size, args.seed))
        callbacks.append(recorder)
    validation = (data.x_val, data.y_val) if args.validation else None
    start = now()
    model.fit(
        data.x_train,
        data.y_train,
        batch_size=args.batch_size,
        epochs=args.epochs,
        validation_data=validation,
        callbacks=callbacks,
        verbose=0,
    )
    fit_wall, fit_cpu = since(start)
    times = {
        "fit_wall": fit_wall,
        "fit_cpu": fit_cpu,
        "epoch": statistics.median(clock.seconds[1:] or clock.seconds),
    }
    if recorder is not None:
        times["hooks"] = sum(recorder.hook_seconds)
        times["first"] = recorder.hook_seconds[0]
        times["probe"] = statistics.median(recorder.hook_seconds[1:])
    return times


def percent(extra: float, base: float) -> float:
    return 100.0 * extra / base


def summary_cells(runs: dict[bool, list[dict[str, float]]]) -> list[str]:
    """One table row from the runs without (False) and with (True) the recorder."""

    def off(key: str) -> float:
        return statistics.median(run[key] for run in runs[False])

    def on(key: str) -> float:
        return statistics.median(run[key] for run in runs[True])

    return [
        f"{off('fit_wall'):.2f}",
        f"{on('fit_wall'):.2f}",
        f"{percent(on('fit_wall') - off('fit_wall'), off('fit_wall')):+.1f}",
        f"{percent(on('fit_cpu') - off('fit_cpu'), off('fit_cpu')):+.1f}",
        f"{percent(on('hooks'), off('fit_wall')):.1f}",
        f"{on('first'):.2f}",
        f"{1e3 * on('probe'):.0f}",
        f"{1e3 * off('epoch'):.0f}",
        f"{percent(on('probe'), off('epoch')):.1f}",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[8, 20, 56])
    parser.add_argument(
        "--variants", nargs="+", choices=["plain", "residual"], default=["plain", "residual"]
    )
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--probe-size", type=int, default=128)
    parser.add_argument("--validation", action="store_true", help="also evaluate each epoch")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.epochs < 2:
        parser.error("--epochs must be at least 2 (the first epoch includes tracing)")

    data = load_dataset("digits", seed=args.seed)
    print(
        f"digits: {len(data.x_train)} train samples, batch {args.batch_size}, "
        f"{args.epochs} epochs, probe {args.probe_size}, {args.repeats} interleaved repeats, "
        f"TF {tf.__version__}"
    )
    columns = ["fit off", "fit on", "A-B %", "CPU A-B %", "hooks %"]
    columns += ["first s", "probe ms", "epoch ms", "probe/epoch %"]
    print(f"{'model':<24}" + "".join(f"{c:>14}" for c in columns))
    for depth in args.depths:
        for variant in args.variants:
            runs: dict[bool, list[dict[str, float]]] = {False: [], True: []}
            for repeat in range(args.repeats):
                for record in (False, True) if repeat % 2 == 0 else (True, False):
                    runs[record].append(
                        timed_fit(data, depth, variant == "residual", record=record, args=args)
                    )

            cells = summary_cells(runs)
            name = f"resnet_cifar{depth} {variant}"
            print(f"{name:<24}" + "".join(f"{c:>14}" for c in cells), flush=True)


if __name__ == "__main__":
    main()
