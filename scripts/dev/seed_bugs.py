"""Seed realistic bugs one at a time into a copy of the project; report which tests catch each.

    python scripts/dev/seed_bugs.py                 # every bug, its relevant fast tests
    python scripts/dev/seed_bugs.py 1 5 9           # only these bugs
    python scripts/dev/seed_bugs.py --list          # what each bug is

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

ROOT = Path(__file__).resolve().parents[2]
RUN_TEST = "tests/test_run_end_to_end.py::test_run_logs_every_param_metric_and_artifact"
MODELS = ["tests/test_model_values.py", "tests/test_models.py"]
ANALYSIS = ["tests/test_summary_figures.py", "tests/test_analysis.py"]
JOBS = ["tests/test_job_lifecycle.py"]
# Issue 22's classes of bugs: the tests that should catch each class (fast tier only).
MEASURED_INPUTS = "tests/test_measured_inputs.py"
MEASURED_NUMBERS = "tests/test_measured_numbers.py"
AUGMENT = ["tests/test_data.py", "tests/test_datasets.py", MEASURED_INPUTS]
SPLITS = ["tests/test_datasets.py", "tests/test_real_data_runs.py", RUN_TEST, MEASURED_INPUTS]
LESION_INPUTS = ["tests/test_lesion.py", "tests/test_real_data_runs.py", MEASURED_INPUTS]
STEPS = ["tests/test_optim.py", "tests/test_real_data_runs.py", RUN_TEST, MEASURED_INPUTS]
RECORDER = ["tests/test_step_gradients.py", "tests/test_gradients.py", MEASURED_NUMBERS]
OPTIM = ["tests/test_optim.py", MEASURED_NUMBERS]
EDGES = ["tests/test_config_errors.py", "tests/test_lesion.py", MEASURED_NUMBERS]
BOOKKEEPING = "tests/test_bookkeeping.py"
REPORT_NUMBERS = "tests/test_report_numbers.py"
LESION_BOOKS = ["tests/test_lesion.py", "tests/test_lesion_report.py", BOOKKEEPING, REPORT_NUMBERS]
STORE = ["tests/test_store_preflight.py", BOOKKEEPING]
SUMMARY = [*JOBS, "tests/test_sweep_units.py", BOOKKEEPING]
# Issue 16: placed skips, SkipInit and Fixup, net kinds, the study questions' sections.
INITS = ["tests/test_residual_init.py"]
KINDS = ["tests/test_naming.py", "tests/test_skip_at.py", "tests/test_study_questions.py"]
QUESTIONS = ["tests/test_study_questions.py"]
REPORT = [
    "tests/test_analysis.py",
    "tests/test_reference_report.py",
    "tests/test_lesion_report.py",
    REPORT_NUMBERS,
]
# Issues 18 and 20: curvature, loss landscapes, their report, the profile pictures.
GEOMETRY_RUNS = "tests/test_geometry_runs.py"
CURVATURE = ["tests/test_curvature.py", GEOMETRY_RUNS]
LANDSCAPE = ["tests/test_landscape.py"]
GEOMETRY_REPORT = ["tests/test_landscape_report.py"]
PROFILE = ["tests/test_profile_images.py"]


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
        "resnet_exp/config/depths.py",
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
        "resnet_exp/training/callbacks.py",
        "            self.diverged_epoch = epoch + 1\n"
        "            self.model.stop_training = True\n",
        "            self.diverged_epoch = epoch + 1\n",
        JOBS,
    ),
    bug(
        "resume skips FAILED and KILLED runs too",
        "resnet_exp/run/job.py",
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
        "resnet_exp/data/splits.py",
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
        "resnet_exp/recording/gradients.py",
        '"grad_first_last_ratio": _ratio(first, last),',
        '"grad_first_last_ratio": _ratio(last, first),',
        ["tests/test_gradients.py", RUN_TEST],
        (
            '"grad_first_last_ratio": _ratio(g_first, g_last),',
            '"grad_first_last_ratio": _ratio(g_last, g_first),',
        ),
        (
            "contract.GRAD_RATIO: _ratio(g_first, g_last),",
            "contract.GRAD_RATIO: _ratio(g_last, g_first),",
        ),
    ),
    bug(
        "step-0 metrics logged at step 1",
        "resnet_exp/tracking/run_log.py",
        "log_batch(self.client, self.run_id, metrics=metrics, step=0)",
        "log_batch(self.client, self.run_id, metrics=metrics, step=1)",
        [RUN_TEST, *JOBS],
        (
            "log_batch(self.client, self.run_id, metrics=new, step=0)",
            "log_batch(self.client, self.run_id, metrics=new, step=1)",
        ),
        ("            self.log.metrics(new, step=0)", "            self.log.metrics(new, step=1)"),
    ),
    bug(
        "child run not tagged with its parent",
        "resnet_exp/run/job.py",
        '        tags["mlflow.parentRunId"] = cfg.tracking.parent_run_id\n',
        "        pass\n",
        JOBS,
        ("        tags[PARENT] = cfg.tracking.parent_run_id\n", "        pass\n"),
    ),
    bug(
        "parent run id not passed to the jobs",
        "resnet_exp/run/sweep.py",
        'injected = [f"tracking.parent_run_id={self.parent_id}", f"tracking.sweep_id={key}"]',
        'injected = [f"tracking.sweep_id={key}"]',
        JOBS,
        (
            'self.injected = [f"tracking.parent_run_id={self.run_id}", '
            'f"tracking.sweep_id={self.key}"]',
            'self.injected = [f"tracking.sweep_id={self.key}"]',
        ),
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
        "resnet_exp/run/job.py",
        "except (KeyboardInterrupt, Terminated) as err:",
        "except KeyboardInterrupt as err:",
        JOBS,
    ),
    bug(
        "the gradient probe updates batch-norm statistics",
        "resnet_exp/recording/gradients.py",
        "            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))\n",
        "            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))\n"
        "        for variable, value in zip(self._non_trainable, _discarded_state):\n"
        "            variable.assign(value)\n",
        ["tests/test_gradients.py"],
    ),
    bug(
        "grad_profile misses the last layer",
        "resnet_exp/recording/gradients.py",
        "zip(self.layer_names, grad_norms, weight_norms, strict=True)",
        "zip(self.layer_names[:-1], grad_norms, weight_norms, strict=False)",
        ["tests/test_gradients.py", RUN_TEST],
    ),
    bug(
        "thread share one too many",
        "resnet_exp/run/sweep.py",
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
        ('row["residual"] = row["arch"] != "plain"', 'row["residual"] = row["arch"] == "plain"'),
    ),
    bug(
        "diverged tag never set to true",
        "resnet_exp/run/job.py",
        'end_tags = {"diverged": str(result.diverged).lower()}',
        'end_tags = {"diverged": "false"}',
        JOBS,
        ("end_tags = {DIVERGED: str(result.diverged).lower()}", 'end_tags = {DIVERGED: "false"}'),
    ),
    bug(
        "sweep parent does not count diverged runs",
        "resnet_exp/run/sweep.py",
        'counts["diverged"] += any(r.data.tags.get("diverged") == "true" for r in done)',
        "pass",
        [*JOBS, "tests/test_sweep_units.py"],
        (
            'counts["diverged"] += latest.data.tags.get("diverged") == "true"',
            "pass",
        ),
        ('counts["diverged"] += latest.data.tags.get(contract.DIVERGED) == "true"', "pass"),
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
        "resnet_exp/data/splits.py",
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
        'layers = [(contract.GRAD_FIRST, "first layer"), (contract.GRAD_LAST, "last layer")]',
        'layers = [(contract.GRAD_LAST, "first layer"), (contract.GRAD_FIRST, "last layer")]',
        ANALYSIS,
    ),
    bug(
        "gradient_profile's 'end' row drawn at epoch 1",
        "resnet_exp/analysis/figures.py",
        'data[(data["epoch"] == last) & (last > 0)].assign(when="after the last epoch"),',
        'data[(data["epoch"] == 1) & (last > 0)].assign(when="after the last epoch"),',
        ANALYSIS,
        (
            '            frame[(frame["epoch"] == last) & (last > 0)].assign(when=end),',
            '            frame[(frame["epoch"] == 1) & (last > 0)].assign(when=end),',
        ),
    ),
    bug(
        "validation set standardised with its own statistics",
        "resnet_exp/data/splits.py",
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
        "resnet_exp/training/optim.py",
        "values = [lr * gamma**i for i in range(len(boundaries) + 1)]",
        "values = [lr * gamma ** min(i, 1) for i in range(len(boundaries) + 1)]",
        ["tests/test_optim.py"],
    ),
    bug(
        "lr logged at the epoch's end, not its start",
        "resnet_exp/training/callbacks.py",
        '            logs["lr"] = self._lr',
        '            logs["lr"] = current_learning_rate(self.model.optimizer)',
        ["tests/test_optim.py"],
        (
            "            logs[contract.LEARNING_RATE] = self._lr",
            "            logs[contract.LEARNING_RATE]"
            " = current_learning_rate(self.model.optimizer)",
        ),
    ),
    # Issue 22: new bugs in each class the held-out set found, written before their tests.
    # 1. which augmentation is applied
    bug(
        "augmentation flips upside down",
        "resnet_exp/data/pipelines.py",
        "return tf.image.stateless_random_flip_left_right(x, seed=flip_seed), y",
        "return tf.image.stateless_random_flip_up_down(x, seed=flip_seed), y",
        AUGMENT,
    ),
    bug(
        "augmentation pads 2 pixels, not 4",
        "resnet_exp/data/pipelines.py",
        "padded = tf.pad(x, [[4, 4], [4, 4], [0, 0]])",
        "padded = tf.pad(x, [[2, 2], [2, 2], [0, 0]])",
        AUGMENT,
    ),
    bug(
        "augmentation pads only the rows",
        "resnet_exp/data/pipelines.py",
        "padded = tf.pad(x, [[4, 4], [4, 4], [0, 0]])",
        "padded = tf.pad(x, [[4, 4], [0, 0], [0, 0]])",
        AUGMENT,
    ),
    bug(
        "augmentation also jitters brightness",
        "resnet_exp/data/pipelines.py",
        "    x = tf.image.stateless_random_crop(padded, tf.shape(x), seed=crop_seed)\n",
        "    x = tf.image.stateless_random_crop(padded, tf.shape(x), seed=crop_seed)\n"
        "    x = tf.image.stateless_random_brightness(x, 8, seed=crop_seed)\n",
        AUGMENT,
    ),
    # 2. the split behind every logged number
    bug(
        "test metrics measured on the validation split",
        "resnet_exp/training/fit.py",
        "test_ds = eval_pipeline(data, data.x_test, data.y_test, batch_size=batch_size)",
        "test_ds = eval_pipeline(data, data.x_val, data.y_val, batch_size=batch_size)",
        SPLITS,
    ),
    bug(
        "the test dataset input logs the validation arrays",
        "resnet_exp/tracking/run_log.py",
        'splits.append(("test", data.x_test, data.y_test))',
        'splits.append(("test", data.x_val, data.y_val))',
        SPLITS,
        ("(contract.TEST, data.x_test, data.y_test),", "(contract.TEST, data.x_val, data.y_val),"),
    ),
    bug(
        "the validation dataset input logs the training arrays",
        "resnet_exp/tracking/run_log.py",
        '("validation", data.x_val, data.y_val)]',
        '("validation", data.x_train, data.y_train)]',
        SPLITS,
        (
            "(contract.VALIDATION, data.x_val, data.y_val),",
            "(contract.VALIDATION, data.x_train, data.y_train),",
        ),
    ),
    # 3. what the lesion study evaluates on
    bug(
        "lesions evaluate raw uint8 inputs",
        "resnet_exp/training/fit.py",
        "    x = data.normalise(x)  # image datasets",
        '    x = x.astype("float32")  # image datasets',
        LESION_INPUTS,
    ),
    bug(
        "lesions scale inputs to [0, 1] instead of normalising",
        "resnet_exp/training/fit.py",
        "    x = data.normalise(x)  # image datasets",
        "    x = x / 255.0  # image datasets",
        LESION_INPUTS,
    ),
    bug(
        "lesions normalise with the evaluated split's own statistics",
        "resnet_exp/training/fit.py",
        "    x = data.normalise(x)  # image datasets",
        "    x = (x - x.mean()) / (x.std() + 1e-7)  # image datasets",
        LESION_INPUTS,
    ),
    # 4. how long a run trains
    bug(
        "the step limit lets one step too many through",
        "resnet_exp/training/callbacks.py",
        "if self.done >= self.steps:",
        "if self.done > self.steps:",
        STEPS,
    ),
    bug(
        "steps per epoch rounded down",
        "resnet_exp/training/fit.py",
        "steps_per_epoch = -(-len(data.x_train) // int(cfg.trainer.batch_size))",
        "steps_per_epoch = len(data.x_train) // int(cfg.trainer.batch_size)",
        STEPS,
        (
            "steps_per_epoch = -(-len(data.x_train) // batch_size)",
            "steps_per_epoch = len(data.x_train) // batch_size",
        ),
    ),
    bug(
        "one epoch too many when steps fill whole epochs",
        "resnet_exp/training/fit.py",
        "epochs = -(-total_steps // steps_per_epoch)",
        "epochs = total_steps // steps_per_epoch + 1",
        STEPS,
    ),
    # 5. the in-step recorder's numbers
    bug(
        "the epoch's step count is not reset between epochs",
        "resnet_exp/recording/gradients.py",
        "        self.sums.assign(tf.zeros_like(self.sums))\n"
        "        self.steps.assign(0.0)\n"
        "        return first",
        "        self.sums.assign(tf.zeros_like(self.sums))\n        return first",
        RECORDER,
    ),
    bug(
        "an epoch's value is its last step's norm over the step count",
        "resnet_exp/recording/gradients.py",
        "self.sums.assign_add(norms)",
        "self.sums.assign(norms)",
        RECORDER,
    ),
    bug(
        "step-0 weight norms read after the first epoch",
        "resnet_exp/recording/gradients.py",
        "first = (self.first.numpy().astype(np.float64), self.initial_weights)",
        "first = (self.first.numpy().astype(np.float64), self.weight_norms())",
        RECORDER,
    ),
    bug(
        "step 0 keeps the last step, not the first",
        "resnet_exp/recording/gradients.py",
        "take = tf.logical_and(self.pending_first, counted > 0)",
        "take = counted > 0",
        RECORDER,
    ),
    # 6. optimiser options in every mode
    bug(
        "L2 mode drops Nesterov",
        "resnet_exp/training/optim.py",
        "return L2SGD(l2=weight_decay, learning_rate=rate, momentum=momentum, nesterov=nesterov)",
        "return L2SGD(l2=weight_decay, learning_rate=rate, momentum=momentum)",
        OPTIM,
    ),
    bug(
        "L2 mode uses the default momentum",
        "resnet_exp/training/optim.py",
        "return L2SGD(l2=weight_decay, learning_rate=rate, momentum=momentum, nesterov=nesterov)",
        "return L2SGD(l2=weight_decay, learning_rate=rate, momentum=0.9, nesterov=nesterov)",
        OPTIM,
    ),
    bug(
        "Adam ignores the schedule",
        "resnet_exp/training/optim.py",
        "return keras.optimizers.AdamW(learning_rate=rate, weight_decay=weight_decay)",
        "return keras.optimizers.AdamW(learning_rate=lr, weight_decay=weight_decay)",
        OPTIM,
    ),
    # 7. validation at the edges
    bug(
        "val_fraction 1 accepted",
        "resnet_exp/config/schema.py",
        "if not 0.0 <= data.val_fraction < 1.0:",
        "if not 0.0 <= data.val_fraction <= 1.0:",
        EDGES,
    ),
    bug(
        "momentum 0 refused",
        "resnet_exp/config/schema.py",
        "if not 0.0 <= optim.momentum < 1.0:",
        "if not 0.0 < optim.momentum < 1.0:",
        EDGES,
    ),
    bug(
        "lesion.max_examples=0 (all) refused",
        "resnet_exp/config/schema.py",
        "if lesion.max_examples < 0:",
        "if lesion.max_examples <= 0:",
        EDGES,
    ),
    bug(
        "the largest seed refused",
        "resnet_exp/config/schema.py",
        "if not 0 <= cfg.seed <= MAX_SEED:",
        "if not 0 <= cfg.seed < MAX_SEED:",
        EDGES,
    ),
    # 8. lesion and block bookkeeping
    bug(
        "single-block drops signed the wrong way",
        "resnet_exp/recording/lesions.py",
        "return [spec.index, spec.name, spec.stage, spec.downsampling, acc, intact - acc]",
        "return [spec.index, spec.name, spec.stage, spec.downsampling, acc, acc - intact]",
        LESION_BOOKS,
    ),
    bug(
        "k-block drops signed the wrong way",
        "resnet_exp/recording/lesions.py",
        'rows.append([k, draw, ";".join(chosen), acc, intact - acc])',
        'rows.append([k, draw, ";".join(chosen), acc, acc - intact])',
        LESION_BOOKS,
    ),
    bug(
        "the report rebuilds intact accuracy with the drop's sign flipped",
        "resnet_exp/analysis/lesion_report.py",
        'single["intact_accuracy"] = single["accuracy"] + single["drop"]',
        'single["intact_accuracy"] = single["accuracy"] - single["drop"]',
        LESION_BOOKS,
    ),
    bug(
        "the worst block is the least harmful one",
        "resnet_exp/analysis/lesion_report.py",
        'worst = same.sort_values("pts").groupby(keys)["block"].last()',
        'worst = same.sort_values("pts").groupby(keys)["block"].first()',
        LESION_BOOKS,
    ),
    bug(
        "block indices count from 0",
        "resnet_exp/models/anatomy.py",
        "index=len(specs) + 1,",
        "index=len(specs),",
        LESION_BOOKS,
    ),
    bug(
        "lesion_max_drop is the smallest drop",
        "resnet_exp/recording/lesions.py",
        'out["lesion_max_drop"] = float(same["drop"].max())',
        'out["lesion_max_drop"] = float(same["drop"].min())',
        LESION_BOOKS,
        (
            'out[contract.LESION_MAX_DROP] = float(same["drop"].max())',
            'out[contract.LESION_MAX_DROP] = float(same["drop"].min())',
        ),
    ),
    # 9. the store check on server errors
    bug(
        "a 5xx server passes the store check",
        "resnet_exp/tracking/preflight.py",
        "if err.code in (401, 403):",
        "if err.code in (401, 403) or err.code >= 500:",
        STORE,
    ),
    bug(
        "every HTTP error but 404 passes the store check",
        "resnet_exp/tracking/preflight.py",
        "if err.code in (401, 403):",
        "if err.code != 404:",
        STORE,
    ),
    # 10. the sweep summary
    bug(
        "summary reports a config's first attempt",
        "resnet_exp/run/sweep.py",
        "latest = max(config_runs, key=lambda r: r.info.start_time or 0)",
        "latest = min(config_runs, key=lambda r: r.info.start_time or 0)",
        SUMMARY,
    ),
    bug(
        "summary reports the last run the search returned",
        "resnet_exp/run/sweep.py",
        "latest = max(config_runs, key=lambda r: r.info.start_time or 0)",
        "latest = config_runs[-1]",
        SUMMARY,
    ),
    # 11. the report's computed sentences and tables
    bug(
        "error trend judged on validation error",
        "resnet_exp/analysis/report.py",
        '        100 * first["train_error_mean"],\n        100 * last["train_error_mean"],',
        '        100 * first["val_error_mean"],\n        100 * last["val_error_mean"],',
        REPORT,
        (
            '    a, b = 100 * ends["train_error_mean"]',
            '    a, b = 100 * ends["val_error_mean"]',
        ),
    ),
    bug(
        "the sd between seeds is the population sd",
        "resnet_exp/analysis/summary.py",
        'row[f"{column}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan',
        'row[f"{column}_sd"] = float(values.std(ddof=0)) if len(values) > 1 else np.nan',
        REPORT,
    ),
    bug(
        "pooled spread is the mean of the sds",
        "resnet_exp/analysis/report.py",
        "math.sqrt(sum(s * s for s in values) / len(values))"
        " if len(values) == len(sds) else math.nan",
        "sum(values) / len(values) if len(values) == len(sds) else math.nan",
        REPORT,
    ),
    bug(
        "paper's values at the wrong depths",
        "resnet_exp/analysis/reference.py",
        "{20: 8.75, 32: 7.51, 44: 7.17, 56: 6.97, 110: 6.43}",
        "{20: 8.75, 32: 7.17, 44: 7.51, 56: 6.97, 110: 6.43}",
        REPORT,
    ),
    bug(
        "plain-vs-residual gap computed on validation error",
        "resnet_exp/analysis/report.py",
        'gap = 100 * (at.loc["plain", "train_error_mean"]'
        ' - at.loc["residual", "train_error_mean"])',
        'gap = 100 * (at.loc["plain", "val_error_mean"] - at.loc["residual", "val_error_mean"])',
        REPORT,
        (
            '        gap = 100 * (means["plain"] - means["residual"])',
            '        gap = 100 * (at.loc["plain", "val_error_mean"] '
            '- at.loc["residual", "val_error_mean"])',
        ),
    ),
    bug(
        "SkipInit's scalar starts at 1, not 0",
        "resnet_exp/models/blocks.py",
        'return _scalar(y, "multiply", 0.0, on=skipinit, name=f"{name}_skipinit")',
        'return _scalar(y, "multiply", 1.0, on=skipinit, name=f"{name}_skipinit")',
        INITS,
    ),
    bug(
        "Fixup scales the first layer by 1/L, not L^-1/2",
        "resnet_exp/models/blocks.py",
        "return max(self.residual_blocks, 1) ** -0.5",
        "return max(self.residual_blocks, 1) ** -1.0",
        INITS,
    ),
    bug(
        "the loader ignores the arch tag (placed skips and inits read as residual)",
        "resnet_exp/analysis/load.py",
        'frame["arch"] = frame.pop("arch_tag").fillna(pd.Series(by_param, index=frame.index))',
        'frame["arch"] = by_param\n    frame.pop("arch_tag")',
        KINDS,
    ),
    bug(
        "a skipped block falls back whatever its branch",
        "resnet_exp/analysis/placement.py",
        'small_cost = np.isfinite(n["drop"]) and n["drop"] < TOLERATE_POINTS',
        'small_cost = np.isfinite(n["drop"]) and n["drop"] < BREAK_POINTS',
        QUESTIONS,
    ),
    bug(
        "plain nets with BN judged from the residual nets' verdict",
        "resnet_exp/analysis/skip_or_bn.py",
        'bn_only, both, neither = (True, "plain"), (True, "residual"), (False, "plain")',
        'bn_only, both, neither = (True, "residual"), (True, "residual"), (False, "plain")',
        QUESTIONS,
    ),
    bug(
        "sweep exclusions compared case-sensitively (True never matches true)",
        "resnet_exp/run/command_line.py",
        'values[key.lstrip("+~")] = value.strip().lower()',
        'values[key.lstrip("+~")] = value.strip()',
        ["tests/test_sweep_units.py"],
    ),
    # Issues 18 and 20: the Hessian's estimates and when a run measures them
    bug(
        "power iteration's eigenvalue is |Hv| (its sign lost)",
        "resnet_exp/recording/curvature.py",
        "            new = float(v @ w)\n",
        "            new = float(np.linalg.norm(w))\n",
        CURVATURE,
    ),
    bug(
        "Hutchinson draws Gaussian vectors, not Rademacher ones",
        "resnet_exp/recording/curvature.py",
        "        v = _rademacher(rng, op.size)\n        values[i] = v @ op.matvec(v)",
        "        v = rng.standard_normal(op.size)\n        values[i] = v @ op.matvec(v)",
        CURVATURE,
    ),
    bug(
        "the trace's standard error divides by n, not sqrt(n)",
        "resnet_exp/recording/curvature.py",
        "stderr=float(values.std(ddof=1) / np.sqrt(samples)),",
        "stderr=float(values.std(ddof=1) / samples),",
        CURVATURE,
    ),
    bug(
        "a reused probe reports the batch loss of its first measurement",
        "resnet_exp/recording/curvature.py",
        "        self.loss = float(loss)\n",
        "        if self.loss is None:\n            self.loss = float(loss)\n",
        CURVATURE,
    ),
    bug(
        "an epoch's curvature is recorded at the epoch's index, not its number",
        "resnet_exp/recording/curvature_recorder.py",
        "            metrics = self.measure(epoch + 1)",
        "            metrics = self.measure(epoch)",
        CURVATURE,
    ),
    bug(
        "bn_mode=auto inverted: training mode after step 0, inference mode at it",
        "resnet_exp/recording/curvature_recorder.py",
        'return mode == "training" or (mode == "auto" and step == 0)',
        'return mode == "training" or (mode == "auto" and step > 0)',
        CURVATURE,
    ),
    bug(
        "the measurement after training repeats an epoch already measured",
        "resnet_exp/recording/curvature_recorder.py",
        "        if step in self.history or not _finite(model):",
        "        if not _finite(model):",
        CURVATURE,
    ),
    # the loss landscape's directions, grid and summaries
    bug(
        "filter norms taken over the kernel's first axis",
        "resnet_exp/recording/landscape.py",
        "filters_w, filters_d = w.reshape(-1, w.shape[-1]), d.reshape(-1, w.shape[-1])",
        "filters_w, filters_d = w.reshape(w.shape[0], -1), d.reshape(w.shape[0], -1)",
        LANDSCAPE,
    ),
    bug(
        "biases and BN parameters get a nonzero direction (only scalars are left out)",
        "resnet_exp/recording/landscape.py",
        "    return len(shape) <= 1\n",
        "    return len(shape) == 0\n",
        LANDSCAPE,
    ),
    bug(
        "the grid's half-width is grid / 2: the centre is off the grid",
        "resnet_exp/recording/landscape.py",
        "    half = grid // 2\n",
        "    half = grid / 2\n",
        LANDSCAPE,
    ),
    bug(
        "sharpness with the sign flipped",
        "resnet_exp/recording/landscape.py",
        "return float((left + right) / 2 - centre)",
        "return float(centre - (left + right) / 2)",
        LANDSCAPE,
    ),
    bug(
        "the non-convexity threshold's sign flipped (small positive curvature counts)",
        "resnet_exp/recording/landscape.py",
        "return float(np.mean(low[interior] < -rtol * scale))",
        "return float(np.mean(low[interior] < rtol * scale))",
        LANDSCAPE,
    ),
    bug(
        "the run ignores landscape.surface (always draws the surface)",
        "resnet_exp/training/fit.py",
        "        surface=bool(settings.surface),\n",
        "",
        [GEOMETRY_RUNS],
    ),
    # the report's section and figures, the profile pictures
    bug(
        "the table's unconverged flag read from curvature.csv's name (never set)",
        "resnet_exp/analysis/landscape_data.py",
        'flags = runs.get(f"top_eig_converged_{when}", pd.Series(np.nan, index=runs.index))',
        'flags = runs.get("top_eig_converged", pd.Series(np.nan, index=runs.index))',
        [*GEOMETRY_REPORT, GEOMETRY_RUNS],
    ),
    bug(
        "contour levels evenly spaced, not log-spaced",
        "resnet_exp/recording/landscape_image.py",
        "return np.geomspace(low, high, n + 2)[1:-1]",
        "return np.linspace(low, high, n + 2)[1:-1]",
        GEOMETRY_REPORT,
    ),
    bug(
        "epoch copies padded to the step's digits, not the run's epochs",
        "resnet_exp/recording/profile_images.py",
        'name = epoch_file(step, (self.params or {}).get("epochs") or step)',
        "name = epoch_file(step, step)",
        PROFILE,
    ),
    bug(
        "the all-epochs picture leaves out the initialisation",
        "resnet_exp/recording/profile_images.py",
        "    if 0 in profiles:\n",
        "    if 0 in epochs:\n",
        PROFILE,
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


def applicable_edit(one: Bug, root: Path) -> tuple[str, str] | None:
    """The first of the bug's (old, new) whose old text occurs exactly once in its file."""
    text = (root / one.path).read_text()
    return next(((old, new) for old, new in one.edits if text.count(old) == 1), None)


def run_with(copy: Path, one: Bug) -> tuple[list[str], str]:
    """Apply `one` in `copy`, run its tests, restore the file; return (failing tests, summary)."""
    path = copy / one.path
    text = path.read_text()
    edit = applicable_edit(one, copy)
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
    parser.add_argument(
        "--check", action="store_true", help="only check that each bug's text applies"
    )
    args = parser.parse_args(argv)
    chosen = [(i, b) for i, b in enumerate(BUGS, 1) if not args.numbers or i in args.numbers]
    if args.list:
        for i, one in chosen:
            print(f"{i:2d}. {one.name} ({one.path})")
        return 0
    if args.check:
        stale = [i for i, one in chosen if applicable_edit(one, ROOT) is None]
        print(f"{len(chosen) - len(stale)} of {len(chosen)} bugs apply; stale: {stale}")
        return 1 if stale else 0
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
