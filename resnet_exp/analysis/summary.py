"""Per-run final numbers and per-configuration aggregates, shared by figures and report.

Errors are averaged arithmetically (mean and standard deviation over seeds).
Gradient norms and their ratio span orders of magnitude, so they are averaged
geometrically (the mean of the logs), which is what a log axis shows as the
middle, and their spread is the geometric standard deviation (a factor).

A run's final value of a metric is its last finite value: for a diverged run,
the value at the last epoch before the numbers turned NaN/inf. "Init" is
epoch 0; "end" is the last epoch with a finite gradient norm.
"""

from __future__ import annotations

from functools import partial

import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.analysis.load import BROKEN, UNFINISHED, Study

# Config columns that, when they differ between runs, split the study into
# conditions (facets of every figure, extra keys of the table). Depth and
# plain/residual are the axes themselves; seed is what we average over.
CONDITION_CANDIDATES = (
    "model",
    "dataset",
    "batch_norm",
    "activation",
    "shortcut",
    "base_filters",
    "width",
    "optimizer",
    "lr",
    "weight_decay",
    "schedule",
    "epochs",
    "batch_size",
)
INITS = ("standard", "skipinit", "fixup")  # model.residual_init, in this order


def arch_parts(arch: str) -> tuple[str, str]:
    """("plain" | "residual" | "skip@<blocks>", residual_init) of a net-kind label."""
    base, _, init = arch.rpartition("-")
    return (base, init) if base and init in INITS else (arch, "standard")


def arch_order(archs) -> list[str]:
    """The net kinds present, in the order every table and legend shows them: plain, skips
    on some blocks, residual; each with its standard initialisation first."""

    def rank(arch: str) -> tuple:
        base, init = arch_parts(arch)
        kind = 0 if base == "plain" else 2 if base == "residual" else 1
        return (kind, INITS.index(init), base)

    return sorted({str(a) for a in archs}, key=rank)


FINAL_COLUMNS = (
    "train_error",
    "val_error",
    "grad_first_init",
    "grad_last_init",
    "ratio_init",
    "grad_first_end",
    "grad_last_end",
    "ratio_end",
)


def condition_columns(runs: pd.DataFrame) -> list[str]:
    """The candidate config columns that take more than one value in `runs`."""
    return [c for c in CONDITION_CANDIDATES if c in runs and runs[c].nunique(dropna=False) > 1]


def _label_one(column: str, value) -> str:
    if column == "batch_norm":
        return "BN" if bool(value) else "no BN"
    if column in ("model", "dataset", "activation", "optimizer", "schedule"):
        return str(value)
    return f"{column}={value}"


def condition_label(row: pd.Series | dict, columns: list[str]) -> str:
    """A short facet title for one condition, e.g. "resnet_cifar, no BN"."""
    return ", ".join(_label_one(c, row[c]) for c in columns)


def with_condition(frame: pd.DataFrame, columns: list[str]) -> pd.DataFrame:
    """`frame` with a `condition` column (the empty string when nothing varies)."""
    labels = [condition_label(r, columns) for _, r in frame[columns].iterrows()] if columns else ""
    return frame.assign(condition=labels)


def condition_order(frame: pd.DataFrame, columns: list[str]) -> list[str]:
    """Conditions in config order (sorted by the varying columns), for stable facets."""
    if not columns:
        return [""]
    firsts = frame.sort_values(columns).drop_duplicates(columns)
    return [condition_label(r, columns) for _, r in firsts.iterrows()]


def chance_error(frame: pd.DataFrame) -> float | None:
    """Error (%) of guessing uniformly, 1 - 1/classes, when the runs log one class count."""
    if "num_classes" not in frame:
        return None
    classes = pd.unique(frame["num_classes"].dropna())
    if len(classes) != 1 or classes[0] < 2:
        return None
    return 100 * (1 - 1 / float(classes[0]))


def _finite(series: pd.Series) -> pd.Series:
    return pd.Series(np.isfinite(series.to_numpy(dtype=float)), index=series.index)


def _last_finite(
    epochs: pd.DataFrame, column: str, min_epoch: int, value: str | None = None
) -> pd.Series:
    """Per run, `value` (default `column`) in its last row from `min_epoch` with `column` finite."""
    sub = epochs[(epochs["epoch"] >= min_epoch) & _finite(epochs[column])].sort_values("epoch")
    return sub.drop_duplicates("run_id", keep="last").set_index("run_id")[value or column]


def run_finals(study: Study) -> pd.DataFrame:
    """One row per run (every status) with its final errors and init/end gradient numbers."""
    # A metric no run logged (no test set, gradients off) is a column of NaN here.
    logged = ["train_error", "val_error", "test_error"]
    logged += [contract.GRAD_FIRST, contract.GRAD_LAST, contract.GRAD_RATIO]
    ep = study.epochs.reindex(columns=study.epochs.columns.union(logged, sort=False))
    finals = study.runs.set_index("run_id").copy()
    finals["train_error"] = _last_finite(ep, "train_error", 1)
    finals["val_error"] = _last_finite(ep, "val_error", 1)
    finals["test_error"] = _last_finite(ep, "test_error", 1)  # NaN where no test set
    finals["final_epoch"] = _last_finite(ep, "train_error", 1, "epoch").astype("Int64")
    init = ep[ep["epoch"] == 0]
    finals["grad_first_init"] = _last_finite(init, contract.GRAD_FIRST, 0)
    finals["grad_last_init"] = _last_finite(init, contract.GRAD_LAST, 0)
    at_end = partial(_last_finite, ep, contract.GRAD_FIRST, 1)  # "end" as the module doc says
    finals["grad_end_epoch"] = at_end("epoch").astype("Int64")
    finals["grad_first_end"] = at_end(contract.GRAD_FIRST)
    finals["grad_last_end"] = at_end(contract.GRAD_LAST)
    # The logged ratio is what MLflow holds; runs that lack it get first / last.
    ratios = {"init": _last_finite(init, contract.GRAD_RATIO, 0)}
    ratios["end"] = at_end(contract.GRAD_RATIO)
    for when, ratio in ratios.items():
        fallback = finals[f"grad_first_{when}"] / finals[f"grad_last_{when}"]
        finals[f"ratio_{when}"] = ratio.reindex(finals.index).fillna(fallback)
    for column in (*FINAL_COLUMNS, "test_error"):
        finals[column] = finals[column].astype(float).where(_finite(finals[column].astype(float)))
    return finals.reset_index()


def summarise(study: Study) -> pd.DataFrame:
    """One row per configuration (model, varying config, depth, plain/residual).

    Means use usable runs only (FINISHED, or diverged); every run is counted:
    `runs` all of them, `seeds` the usable ones averaged over, and `diverged`,
    `failed` (FAILED/KILLED, not diverged) and `running`.
    """
    finals = run_finals(study)
    # The keys: model, the other varying config columns, depth, plain/residual.
    keys = ["model", *[c for c in condition_columns(finals) if c != "model"], "depth", "arch"]
    rows = []
    for key, group in finals.groupby(keys, sort=True, dropna=False):
        used = group[group["usable"]]
        row = dict(zip(keys, key, strict=True))
        row["residual"] = row["arch"] != "plain"  # skips somewhere: the config's own word
        row["runs"] = len(group)
        row["seeds"] = len(used)
        row["diverged"] = int(group["diverged"].sum())
        row["failed"] = int((group["status"].isin(BROKEN) & ~group["diverged"]).sum())
        row["running"] = int(group["status"].isin(UNFINISHED).sum())
        for column in ("train_error", "val_error", "test_error"):
            values = used[column].dropna()
            row[f"{column}_mean"] = float(values.mean()) if len(values) else np.nan
            row[f"{column}_sd"] = float(values.std(ddof=1)) if len(values) > 1 else np.nan
        for column in FINAL_COLUMNS[2:]:  # geometric mean and sd (a factor >= 1) of positives
            values = used[column].dropna().to_numpy(dtype=float)
            logs = np.log(values[values > 0])
            row[column] = float(np.exp(logs.mean())) if len(logs) else np.nan
            row[f"{column}_gsd"] = float(np.exp(logs.std(ddof=1))) if len(logs) > 1 else np.nan
        rows.append(row)
    table = pd.DataFrame(rows)
    arch_rank = {a: i for i, a in enumerate(arch_order(table["arch"]))}
    return table.sort_values(
        [*keys[:-2], "arch", "depth"], key=lambda s: s.map(arch_rank) if s.name == "arch" else s
    ).reset_index(drop=True)
