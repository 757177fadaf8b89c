"""A run against its hand-written `fit`, recording off and on, side by side: one table.

    python scripts/dev/bench_fit_overhead.py            # ResNet-20 plain, digits, 8 ep, 3 repeats
    python scripts/dev/bench_fit_overhead.py --repeats 6 --epochs 15 --residual

`bench.py`'s part 2 (`fit_series`) with gradient recording on as a third variant:
"bare Keras" (`bare_fit`), "off" and "on (step)" (`run_job`, the MLflow run's
duration), rotated in this one process (A B C, B C A, C A B, ...). It reports the
whole run and the steady epoch (median of epochs 2..), each in wall seconds and in
this process's CPU seconds (all threads). On a shared machine the wall times of
single runs spread by 20-40%; CPU seconds spread by a few percent and are the
measure to read for differences under ~10%. The load average before and after is
printed: above the core count, treat wall ratios within +-15% as noise.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

from bench import RECORDING, Runner, bare_fit, digits_run, fit_series
from benchkit import log, markdown, ratio_row

EPOCH_CPU: list[float] = []  # per-epoch CPU seconds of the latest fit


def clock_every_fit() -> None:
    """Prepend a per-epoch CPU clock to every `fit` in this process (project runs and bare)."""
    import keras

    starts: list[float] = []
    fit = keras.Model.fit

    def clocked(self, *args, callbacks=None, **kwargs):
        clock = keras.callbacks.LambdaCallback(
            on_epoch_begin=lambda epoch, logs: starts.append(time.process_time()),
            on_epoch_end=lambda epoch, logs: EPOCH_CPU.append(time.process_time() - starts[-1]),
        )
        return fit(self, *args, callbacks=[clock, *(callbacks or [])], **kwargs)

    keras.Model.fit = clocked


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--depth", type=int, default=20)
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--residual", action="store_true", help="residual net (bare fit: plain)")
    args = parser.parse_args(argv)
    start_load = os.getloadavg()
    log(f"load average at start: {start_load[0]:.2f} ({os.cpu_count()} cores)")
    base = digits_run(args.depth, args.epochs)
    if args.residual:
        base = [o for o in base if not o.startswith("model.residual")] + ["model.residual=true"]
    # in the store's folder, so that its artifacts (./mlruns) stay in the temp dir
    with tempfile.TemporaryDirectory() as store, contextlib.chdir(store):
        runner = Runner(Path(store))  # includes a warm-up run
        clock_every_fit()
        variants = {
            "bare Keras": partial(bare_fit, args.depth, args.epochs, 64),
            **{v: partial(runner.timed, base + RECORDING[v]) for v in ("off", "on (step)")},
        }
        series = fit_series(variants, args.repeats, EPOCH_CPU)
    end_load = os.getloadavg()
    label = f"ResNet-{args.depth} {'residual' if args.residual else 'plain'}, {args.epochs} ep"
    rows = []
    for measure, key, target in (
        ("whole run, wall", "run", "<= 1.10"),
        ("whole run, CPU", "run CPU", "<= 1.10"),
        ("steady epoch, wall", "steady", ""),
        ("steady epoch, CPU", "steady CPU", ""),
    ):
        measure = f"{measure}, {label}"
        for subject in ("off", "on (step)"):
            rows.append(
                ratio_row("run / bare", measure, series[key], subject, "bare Keras", target)
            )
        rows.append(ratio_row("off / on", measure, series[key], "off", "on (step)", "<= 1.00"))
    header = (
        f"{args.repeats} interleaved repeats; load average {start_load[0]:.2f} at start, "
        f"{end_load[0]:.2f} at end, {os.cpu_count()} cores"
    )
    print(header + "\n\n" + markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
