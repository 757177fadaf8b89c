"""Wall time of a study, sequential vs parallel, measured side by side in one session.

Each launcher runs the same study into its own fresh SQLite store (so neither
resumes the other's runs), one after the other, alternating over repeats; the
ratio is what matters on a shared, noisy machine. Also part 4 of `bench.py`.

    python scripts/dev/bench_sweep.py [--experiment depth_sweep] [--epochs N] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path
from tempfile import TemporaryDirectory

from benchkit import interleaved, run_python, stopwatch

ROOT = Path(__file__).resolve().parents[2]

LAUNCHERS = {
    "sequential": ["hydra/launcher=basic"],
    "parallel (joblib)": ["hydra/launcher=joblib"],
}


def run_study(experiment: str, extra: list[str], launcher: list[str]) -> float:
    with TemporaryDirectory() as tmp, stopwatch() as elapsed:
        command = [str(ROOT / "experiments" / "train.py"), "-m", f"experiment={experiment}"]
        command += [*extra, *launcher, f"hydra.sweep.dir={tmp}/multirun"]
        run_python(command, env={"MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db"}, cwd=tmp)
    return elapsed()


def time_study(
    experiment: str, extra: list[str], repeats: int, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Each launcher's seconds for the study, interleaved."""
    launches = {name: partial(run_study, experiment, extra, how) for name, how in LAUNCHERS.items()}
    return interleaved(launches, repeats, log)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="depth_sweep")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    extra = [f"trainer.epochs={args.epochs}"] if args.epochs else []
    times = time_study(args.experiment, extra, args.repeats)
    sequential, parallel = min(times["sequential"]), min(times["parallel (joblib)"])
    print(
        f"\n{args.experiment} ({'preset epochs' if not args.epochs else f'{args.epochs} epochs'}, "
        f"{os.cpu_count()} cores): sequential {sequential:.0f} s, parallel {parallel:.0f} s, "
        f"speed-up x{sequential / parallel:.2f}"
    )


if __name__ == "__main__":
    main()
