"""A run against its hand-written `fit`, recording off and on, side by side: one table.

    python scripts/dev/bench_fit_overhead.py            # ResNet-20 plain, digits, 8 ep, 3 repeats
    python scripts/dev/bench_fit_overhead.py --repeats 6 --epochs 15 --residual

Variants, interleaved in this one process (A B C, B C A, C A B, ...; `benchkit.interleaved`):

- bare Keras: `scripts/dev/bench.py`'s `bare_fit` (load, build, compile, `model.fit` on the arrays,
  with validation; data loading, model build and both traces included);
- off: `run_job` with `gradients.enabled=false` (the MLflow run's duration);
- on (step): `run_job` with the default in-step recorder.

For each it reports the whole run and the steady epoch (median of epochs 2..), each in wall
seconds and in this process's CPU seconds (all threads). On a shared machine the wall
times of single runs spread by 20-40%; CPU seconds spread by a few percent and are the
measure to read for differences under ~10%. The load average before and after is printed:
above the core count, treat wall ratios within +-15% as noise.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))  # bench and benchkit, next to this file
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")

from bench import Runner, bare_fit, digits_run, log  # noqa: E402
from benchkit import interleaved, markdown, ratio_row, stopwatch  # noqa: E402

EPOCH_CPU: list[float] = []  # per-epoch CPU seconds of the latest fit


def clock_every_fit() -> None:
    """Prepend a per-epoch CPU clock to every `fit` in this process (project runs and bare)."""
    import keras

    class CpuClock(keras.callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self._start = time.process_time()

        def on_epoch_end(self, epoch, logs=None):
            EPOCH_CPU.append(time.process_time() - self._start)

    fit = keras.Model.fit

    def clocked(self, *args, callbacks=None, **kwargs):
        return fit(self, *args, callbacks=[CpuClock(), *(callbacks or [])], **kwargs)

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
    variants = {
        "bare Keras": None,
        "off": ["gradients.enabled=false"],
        "on (step)": ["gradients.enabled=true", "gradients.source=step"],
    }
    wall_epochs: dict[str, list[float]] = {v: [] for v in variants}
    cpu_epochs: dict[str, list[float]] = {v: [] for v in variants}
    cpu_runs: dict[str, list[float]] = {v: [] for v in variants}
    with tempfile.TemporaryDirectory() as store:
        cwd = os.getcwd()
        os.chdir(store)  # the store's artifacts (./mlruns) stay in the temp dir
        try:
            runner = Runner(Path(store))  # includes a warm-up run
            clock_every_fit()

            def measure(name: str, overrides: list[str] | None) -> float:
                EPOCH_CPU.clear()
                with stopwatch(cpu=True) as cpu:
                    if overrides is None:
                        seconds, epochs = bare_fit(args.depth, args.epochs, 64)
                    else:
                        run_id = runner.run(base + overrides)
                        seconds, epochs = runner.duration(run_id), runner.epoch_times(run_id)
                cpu_runs[name].append(cpu())
                wall_epochs[name].append(statistics.median(epochs[1:] or epochs))
                cpu_epochs[name].append(statistics.median(EPOCH_CPU[1:] or EPOCH_CPU))
                return seconds

            times = interleaved(
                {v: (lambda v=v, o=o: measure(v, o)) for v, o in variants.items()},
                args.repeats,
                log,
            )
        finally:
            os.chdir(cwd)
    end_load = os.getloadavg()
    label = f"ResNet-{args.depth} {'residual' if args.residual else 'plain'}, {args.epochs} ep"
    rows = []
    for measure_name, table, target in (
        ("whole run, wall", times, "<= 1.10"),
        ("whole run, CPU", cpu_runs, "<= 1.10"),
        ("steady epoch, wall", wall_epochs, ""),
        ("steady epoch, CPU", cpu_epochs, ""),
    ):
        for subject in ("off", "on (step)"):
            measure = f"{measure_name}, {label}"
            rows.append(ratio_row("run / bare", measure, table, subject, "bare Keras", target))
        rows.append(
            ratio_row("off / on", f"{measure_name}, {label}", table, "off", "on (step)", "<= 1.00")
        )
    header = (
        f"{args.repeats} interleaved repeats; load average {start_load[0]:.2f} at start, "
        f"{end_load[0]:.2f} at end, {os.cpu_count()} cores"
    )
    print(header + "\n\n" + markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
