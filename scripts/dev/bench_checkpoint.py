"""What the per-epoch checkpoint costs: runs with and without it, side by side, one table.

    python scripts/dev/bench_checkpoint.py                    # ResNet-20 and -56, digits, 6 ep
    python scripts/dev/bench_checkpoint.py --depths 20 --epochs 15 --repeats 4

The default study's runs (`experiment=depth_sweep`, plain nets, through `run_job` in
this process, into a temporary store), `tracking.checkpoint=false` against `true`,
interleaved (A B, B A, ...). Per run it takes the steady epoch as the training loop
sees it, from one epoch's start to the next (so every callback's end-of-epoch work,
the checkpoint's included, is in it), the run's duration in MLflow, and the
checkpoint's own clocks: what the training thread spends at each epoch's end (reading
the variables, serialising the state) and what the background writer spends writing
the file (overlapping the next epoch). The load average before and after is printed:
above the core count, read wall-time ratios within +-15% as noise and trust the
checkpoint's own per-epoch milliseconds.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench import Runner, digits_run
from benchkit import Row, interleaved, log, markdown, ratio_row

EPOCH_STARTS: list[float] = []
EPOCH_CPU_STARTS: list[float] = []  # this process's CPU seconds (all threads) at the same points
MAIN_SECONDS: list[float] = []  # the training thread's share, per epoch
MAIN_CPU: list[float] = []  # ... in that thread's CPU seconds
WRITE_SECONDS: list[float] = []  # the writer thread's, per epoch
WRITE_CPU: list[float] = []


def clock_everything() -> None:
    """Epoch-start clock on every fit; clocks on the checkpoint's two halves."""
    import keras

    from resnet_exp.training import callbacks
    from resnet_exp.training.checkpoint import Checkpoint

    fit = keras.Model.fit

    def clocked(self, *args, callbacks=None, **kwargs):
        def mark(*_):
            EPOCH_STARTS.append(time.perf_counter())
            EPOCH_CPU_STARTS.append(time.process_time())

        clock = keras.callbacks.LambdaCallback(on_epoch_begin=mark, on_train_end=mark)
        return fit(self, *args, callbacks=[clock, *(callbacks or [])], **kwargs)

    keras.Model.fit = clocked

    on_epoch_end = callbacks.EpochCheckpoint.on_epoch_end

    def timed_end(self, epoch, logs=None):
        start, cpu = time.perf_counter(), time.thread_time()
        on_epoch_end(self, epoch, logs)
        MAIN_SECONDS.append(time.perf_counter() - start)
        MAIN_CPU.append(time.thread_time() - cpu)

    callbacks.EpochCheckpoint.on_epoch_end = timed_end

    write = Checkpoint._write

    def timed_write(self, *args):
        start, cpu = time.perf_counter(), time.thread_time()
        write(self, *args)
        WRITE_SECONDS.append(time.perf_counter() - start)
        WRITE_CPU.append(time.thread_time() - cpu)

    Checkpoint._write = timed_write


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depths", type=int, nargs="+", default=[20, 56])
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args(argv)
    log(f"load average at start: {os.getloadavg()[0]:.2f} ({os.cpu_count()} cores)")
    rows: list[Row] = []
    notes: list[str] = []
    with tempfile.TemporaryDirectory() as tmp:
        runner = Runner(Path(tmp))
        clock_everything()
        for depth in args.depths:
            base = digits_run(depth, args.epochs)
            label = f"digits, ResNet-{depth} plain, {args.epochs} ep"
            steady: dict[str, list[float]] = {"off": [], "on": []}
            steady_cpu: dict[str, list[float]] = {"off": [], "on": []}
            ms: dict[str, list[float]] = {"main": [], "write": [], "main CPU": [], "write CPU": []}

            def run(variant: str, base=base, steady=steady, steady_cpu=steady_cpu, ms=ms):
                clocks = (EPOCH_STARTS, EPOCH_CPU_STARTS, MAIN_SECONDS, MAIN_CPU)
                for clock in (*clocks, WRITE_SECONDS, WRITE_CPU):
                    clock.clear()
                flag = "true" if variant == "on" else "false"
                seconds, _ = runner.timed([*base, f"tracking.checkpoint={flag}"])
                for starts, into in ((EPOCH_STARTS, steady), (EPOCH_CPU_STARTS, steady_cpu)):
                    epochs = [b - a for a, b in zip(starts, starts[1:], strict=False)]
                    into[variant].append(statistics.median(epochs[1:]))
                if variant == "on":  # the first epoch's end traces the variables' reader
                    for key, clock in (
                        ("main", MAIN_SECONDS),
                        ("write", WRITE_SECONDS),
                        ("main CPU", MAIN_CPU),
                        ("write CPU", WRITE_CPU),
                    ):
                        ms[key].extend(1000 * s for s in clock[1:])
                return seconds

            log(f"checkpoint: {label}")
            durations = interleaved({v: partial(run, v) for v in ("off", "on")}, args.repeats, log)
            rows.append(ratio_row("checkpoint", f"run duration, {label}", durations, "on", "off"))
            rows.append(ratio_row("checkpoint", f"steady epoch, {label}", steady, "on", "off"))
            rows.append(
                ratio_row("checkpoint", f"steady epoch CPU, {label}", steady_cpu, "on", "off")
            )
            epoch = statistics.median(steady["off"])
            epoch_cpu = statistics.median(steady_cpu["off"])
            med = {k: statistics.median(v) for k, v in ms.items()}
            span = {k: f"{min(v):.1f}-{max(v):.1f}" for k, v in ms.items()}
            notes.append(
                f"- {label}, without checkpoint: steady epoch {epoch * 1000:.0f} ms wall, "
                f"{epoch_cpu * 1000:.0f} ms CPU (all threads). Per epoch, medians (ranges): the "
                f"checkpoint's training-thread share {med['main']:.1f} ms wall ({span['main']}), "
                f"{med['main CPU']:.1f} ms CPU ({span['main CPU']}) = "
                f"{100 * med['main CPU'] / 1000 / epoch_cpu:.1f}% of the epoch's CPU; the "
                f"background write {med['write']:.1f} ms wall ({span['write']}), "
                f"{med['write CPU']:.1f} ms CPU ({span['write CPU']}) = "
                f"{100 * med['write CPU'] / 1000 / epoch_cpu:.1f}%"
            )
    log(f"load average at end: {os.getloadavg()[0]:.2f}")
    print(markdown(rows))
    print("\n".join(notes))
    return 0


if __name__ == "__main__":
    sys.exit(main())
