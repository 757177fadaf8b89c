"""Wall time of a study, sequential vs parallel, measured side by side in one session.

Each launcher runs the same study into its own fresh SQLite store (so neither
resumes the other's runs), one after the other, alternating over repeats; the
ratio is what matters on a shared, noisy machine. Also part 4 of `bench.py`.

    python scripts/dev/bench_sweep.py [--experiment depth_sweep] [--epochs N] [--repeats 1]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from benchkit import interleaved, stopwatch

ROOT = Path(__file__).resolve().parents[2]

LAUNCHERS = {
    "sequential": ["hydra/launcher=basic"],
    "parallel (joblib)": ["hydra/launcher=joblib"],
}


def run_study(experiment: str, extra: list[str], launcher: list[str]) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        env = {
            **os.environ,
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp}/mlflow.db",
            "TF_CPP_MIN_LOG_LEVEL": "2",
        }
        command = [sys.executable, str(ROOT / "experiments" / "train.py"), "-m"]
        command += [f"experiment={experiment}", *extra, *launcher]
        command.append(f"hydra.sweep.dir={tmp}/multirun")
        with stopwatch() as elapsed:
            subprocess.run(command, env=env, cwd=tmp, check=True, capture_output=True)
        return elapsed()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="depth_sweep")
    parser.add_argument("--epochs", type=int, default=None, help="override the preset's epochs")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    extra = [f"trainer.epochs={args.epochs}"] if args.epochs else []
    times = interleaved(
        {
            name: (lambda launch=launcher: run_study(args.experiment, extra, launch))
            for name, launcher in LAUNCHERS.items()
        },
        args.repeats,
    )
    best = {name: min(values) for name, values in times.items()}
    sequential, parallel = best["sequential"], best["parallel (joblib)"]
    print(
        f"\n{args.experiment} ({'preset epochs' if not args.epochs else f'{args.epochs} epochs'}, "
        f"{os.cpu_count()} cores): sequential {sequential:.0f} s, parallel {parallel:.0f} s, "
        f"speed-up x{sequential / parallel:.2f}"
    )


if __name__ == "__main__":
    main()
