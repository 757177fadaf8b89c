"""Seed realistic bugs one at a time into a copy of the project; report which tests catch each.

    python scripts/seed_bugs.py                 # every bug, its relevant fast tests
    python scripts/seed_bugs.py 1 5 9           # only these bugs
    python scripts/seed_bugs.py --list          # what each bug is

A hand-made mutation test: each bug is one exact text replacement in one file,
applied to a copy of the checkout's tracked files (in a temp dir, so the
checkout is never touched), then the bug's relevant tests run (not slow ones)
and the failing tests are printed. A bug that no test catches is a gap in the
suite. When the code changes so that a replacement no longer applies, the bug
says so rather than passing silently: update its text.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUN_TEST = "tests/test_run_end_to_end.py::test_run_logs_every_param_metric_and_artifact"
MODELS = ["tests/test_model_values.py", "tests/test_models.py"]
ANALYSIS = ["tests/test_summary_figures.py", "tests/test_analysis.py"]
JOBS = ["tests/test_job_lifecycle.py"]


@dataclass(frozen=True)
class Bug:
    name: str
    path: str
    edits: tuple[tuple[str, str], ...]  # (old, new): the first whose old text occurs once applies
    tests: tuple[str, ...]


def bug(
    name: str, path: str, old: str, new: str, tests: list[str], *other_versions: tuple[str, str]
) -> Bug:
    """`other_versions`: the same bug's (old, new) in other versions of the file."""
    return Bug(name, path, ((old, new), *other_versions), tuple(tests))


BUGS = [
    # The nine bugs of issue 12, which the suite used to miss.
    bug(
        "plain MLP adds the identity",
        "resnet_exp/models/blocks.py",
        "return _merge(y, x if residual else None, activation=activation, name=name)",
        "return _merge(y, x, activation=activation, name=name)",
        MODELS,
    ),
    bug(
        "resnet_cifar depth 2 (n = 0) accepted",
        "resnet_exp/architecture.py",
        "if depth < 8 or (depth - 2) % 6:",
        "if depth < 2 or (depth - 2) % 6:",
        [*MODELS, "tests/test_config_errors.py"],
    ),
    bug(
        "option A pads with copies of the input",
        "resnet_exp/models/blocks.py",
        "return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])",
        "return ops.concatenate([x, x[..., :extra]], axis=-1)",
        MODELS,
    ),
    bug(
        "option A subsamples at offset 1",
        "resnet_exp/models/blocks.py",
        "x = x[:, :: self.stride, :: self.stride, :]",
        "x = x[:, 1 :: self.stride, 1 :: self.stride, :]",
        MODELS,
    ),
    bug(
        "a diverged run does not stop",
        "resnet_exp/callbacks.py",
        "            self.diverged_epoch = epoch + 1\n"
        "            self.model.stop_training = True\n",
        "            self.diverged_epoch = epoch + 1\n",
        JOBS,
    ),
    bug(
        "resume skips FAILED and KILLED runs too",
        "resnet_exp/job.py",
        "filter_string=f\"tags.config_hash = '{digest}' and attributes.status = 'FINISHED'\",",
        "filter_string=f\"tags.config_hash = '{digest}'\",",
        JOBS,
    ),
    bug(
        "summary sorted by descending depth",
        "resnet_exp/analysis/summary.py",
        'key=lambda s: s.map(arch_rank) if s.name == "arch" else s',
        'key=lambda s: s.map(arch_rank) if s.name == "arch" else (-s if s.name == "depth" else s)',
        ANALYSIS,
    ),
    bug(
        "standardisation statistics from train + validation",
        "resnet_exp/data.py",
        "mean, std = x_train.mean(), x_train.std() + 1e-7",
        "both = np.concatenate([x_train, x_val])\n"
        "        mean, std = both.mean(), both.std() + 1e-7",
        ["tests/test_data.py"],
    ),
    bug(
        "depth_vs_gradient's first-layer panel draws the last layer",
        "resnet_exp/analysis/figures.py",
        '("grad_first", "first layer"),',
        '("grad_last", "first layer"),',
        ANALYSIS,
    ),
    # Further bugs of the same kind.
    bug(
        "first/last ratio inverted",
        "resnet_exp/gradients.py",
        '"grad_first_last_ratio": _ratio(first, last),',
        '"grad_first_last_ratio": _ratio(last, first),',
        ["tests/test_gradients.py", RUN_TEST],
    ),
    bug(
        "step-0 metrics logged at step 1",
        "resnet_exp/callbacks.py",
        "log_batch(self.client, self.run_id, metrics=metrics, step=0)",
        "log_batch(self.client, self.run_id, metrics=metrics, step=1)",
        [RUN_TEST, *JOBS],
    ),
    bug(
        "child run not tagged with its parent",
        "resnet_exp/job.py",
        '        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id\n',
        "        pass\n",
        JOBS,
    ),
    bug(
        "parent run id not passed to the jobs",
        "resnet_exp/sweep.py",
        'injected = [f"tracking.parent_run_id={self.parent_id}", f"tracking.sweep_id={key}"]',
        'injected = [f"tracking.sweep_id={key}"]',
        JOBS,
    ),
    bug(
        "train and validation error swapped in the summary",
        "resnet_exp/analysis/summary.py",
        'finals["train_error"] = _last_finite(ep, "train_error", 1)\n'
        '    finals["val_error"] = _last_finite(ep, "val_error", 1)',
        'finals["train_error"] = _last_finite(ep, "val_error", 1)\n'
        '    finals["val_error"] = _last_finite(ep, "train_error", 1)',
        ANALYSIS,
    ),
    bug(
        "SIGTERM leaves the run RUNNING",
        "resnet_exp/job.py",
        "except (KeyboardInterrupt, Terminated):",
        "except KeyboardInterrupt:",
        JOBS,
    ),
    bug(
        "the gradient probe updates batch-norm statistics",
        "resnet_exp/gradients.py",
        "            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))\n",
        "            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))\n"
        "        for variable, value in zip(self._non_trainable, _discarded_state):\n"
        "            variable.assign(value)\n",
        ["tests/test_gradients.py"],
    ),
    bug(
        "grad_profile misses the last layer",
        "resnet_exp/gradients.py",
        "zip(self.layer_names, grad_norms, weight_norms, strict=True)",
        "zip(self.layer_names[:-1], grad_norms, weight_norms, strict=False)",
        ["tests/test_gradients.py", RUN_TEST],
    ),
    bug(
        "thread share one too many",
        "resnet_exp/sweep.py",
        "return max(1, (cores or os.cpu_count() or 1) // max(1, parallel_jobs))",
        "return max(1, (cores or os.cpu_count() or 1) // max(1, parallel_jobs) + 1)",
        ["tests/test_sweep_units.py"],
    ),
    bug(
        "summary's residual column inverted",
        "resnet_exp/analysis/summary.py",
        'row["residual"] = row["arch"] == "residual"',
        'row["residual"] = row["arch"] == "plain"',
        ANALYSIS,
    ),
    bug(
        "diverged tag never set to true",
        "resnet_exp/job.py",
        'end_tags = {"diverged": str(result.diverged).lower()}',
        'end_tags = {"diverged": "false"}',
        JOBS,
    ),
    bug(
        "sweep parent does not count diverged runs",
        "resnet_exp/sweep.py",
        'counts["diverged"] += any(r.data.tags.get("diverged") == "true" for r in done)',
        "pass",
        [*JOBS, "tests/test_sweep_units.py"],
    ),
    bug(
        "option A pads in front of the input channels",
        "resnet_exp/models/blocks.py",
        "return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])",
        "return ops.pad(x, [[0, 0], [0, 0], [0, 0], [extra, 0]])",
        MODELS,
    ),
    bug(
        "probe batch drawn from the validation set",
        "resnet_exp/data.py",
        "return data.x_train[index], data.y_train[index]",
        "return data.x_val[index % len(data.x_val)], data.y_val[index % len(data.x_val)]",
        ["tests/test_data.py"],
        (
            "return data.normalise(data.x_train[index]), data.y_train[index]",
            "return data.normalise(data.x_val[index % len(data.x_val)]), "
            "data.y_val[index % len(data.x_val)]",
        ),
    ),
    bug(
        "gradient_dynamics rows swap first and last layer",
        "resnet_exp/analysis/figures.py",
        'layers = [("grad_first_norm", "first layer"), ("grad_last_norm", "last layer")]',
        'layers = [("grad_last_norm", "first layer"), ("grad_first_norm", "last layer")]',
        ANALYSIS,
    ),
    bug(
        "gradient_profile's 'end' row drawn at epoch 1",
        "resnet_exp/analysis/figures.py",
        'data[(data["epoch"] == last) & (last > 0)].assign(when="after the last epoch"),',
        'data[(data["epoch"] == 1) & (last > 0)].assign(when="after the last epoch"),',
        ANALYSIS,
    ),
    bug(
        "validation set standardised with its own statistics",
        "resnet_exp/data.py",
        "x_train, x_val = (x_train - mean) / std, (x_val - mean) / std",
        "x_train, x_val = (x_train - mean) / std, (x_val - x_val.mean()) / (x_val.std() + 1e-7)",
        ["tests/test_data.py"],
    ),
    bug(
        "depth_vs_accuracy's validation panel plots training error",
        "resnet_exp/analysis/figures.py",
        'panels = [("train_error", "training error"), ("val_error", "validation error")]',
        'panels = [("train_error", "training error"), ("train_error", "validation error")]',
        ANALYSIS,
    ),
    bug(
        "training_curves draws training error as the dashed validation line",
        "resnet_exp/analysis/figures.py",
        'for value, style, lw in (("train_pct", "-", 1.8), ("val_pct", "--", 1.0)):',
        'for value, style, lw in (("train_pct", "-", 1.8), ("train_pct", "--", 1.0)):',
        ANALYSIS,
        (
            'kinds = [("train_pct", "training error"), ("val_pct", "validation error")]',
            'kinds = [("train_pct", "training error"), ("train_pct", "validation error")]',
        ),
    ),
    bug(
        "step schedule divides by gamma only once",
        "resnet_exp/optim.py",
        "values = [lr * gamma**i for i in range(len(boundaries) + 1)]",
        "values = [lr * gamma ** min(i, 1) for i in range(len(boundaries) + 1)]",
        ["tests/test_optim.py"],
    ),
    bug(
        "lr logged at the epoch's end, not its start",
        "resnet_exp/callbacks.py",
        '            logs["lr"] = self._lr',
        '            logs["lr"] = current_learning_rate(self.model.optimizer)',
        ["tests/test_optim.py"],
    ),
]


def copy_checkout(dest: Path) -> None:
    """The checkout's files as they are now: tracked, edited, and new ones git does not ignore."""
    files = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, files):
        source = ROOT / name
        if source.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, dest / name)


def run_with(copy: Path, one: Bug) -> tuple[list[str], str]:
    """Apply `one` in `copy`, run its tests, restore the file; return (failing tests, summary)."""
    path = copy / one.path
    text = path.read_text()
    edit = next(((old, new) for old, new in one.edits if text.count(old) == 1), None)
    if edit is None:
        return [], "NOT APPLIED: the text to replace is not in the file exactly once"
    path.write_text(text.replace(*edit))
    env = {**os.environ, "PYTHONPATH": str(copy), "TF_CPP_MIN_LOG_LEVEL": "2"}
    try:
        done = subprocess.run(
            [sys.executable, "-m", "pytest", *one.tests, "-m", "not slow", "-q", "-rf"]
            + ["-p", "no:cacheprovider"],
            cwd=copy,
            capture_output=True,
            text=True,
            env=env,
        )
    finally:
        path.write_text(text)
    lines = done.stdout.strip().splitlines()
    failed = sorted(set(re.findall(r"^FAILED (\S+)", done.stdout, re.M)))
    summary = lines[-1] if lines else done.stderr[-300:]
    if done.returncode not in (0, 1):  # 1: tests failed; anything else: they did not run
        summary = f"TESTS DID NOT RUN (pytest exit {done.returncode}): {summary}"
    return failed, summary


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("numbers", nargs="*", type=int, help="bugs to seed (default: all)")
    parser.add_argument("--list", action="store_true", help="list the bugs and exit")
    args = parser.parse_args(argv)
    chosen = [(i, b) for i, b in enumerate(BUGS, 1) if not args.numbers or i in args.numbers]
    if args.list:
        for i, one in chosen:
            print(f"{i:2d}. {one.name} ({one.path})")
        return 0
    missed = []
    with tempfile.TemporaryDirectory(prefix="seed-bugs-") as tmp:
        copy = Path(tmp)
        copy_checkout(copy)
        for i, one in chosen:
            start = time.perf_counter()
            failed, summary = run_with(copy, one)
            took = time.perf_counter() - start
            print(f"{i:2d}. {one.name}: caught by {len(failed)} test(s) [{summary}, {took:.0f} s]")
            for test in failed:
                print(f"      {test}")
            if not failed:
                missed.append(i)
    print(f"{len(chosen) - len(missed)} of {len(chosen)} seeded bugs caught; missed: {missed}")
    return 1 if missed else 0


if __name__ == "__main__":
    sys.exit(main())
