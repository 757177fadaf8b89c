"""`report.md`: which study, what its numbers are, and what they show.

Every sentence under "What the numbers show" is assembled from the summary
table when the report is built: the trend words (rises, falls, flat, vanish,
explode) are chosen by thresholds on the numbers, and the numbers themselves are
quoted, so the text can never disagree with the table beside it. Thresholds:
an error change of less than 1 percentage point between the shallowest and the
deepest net counts as flat; a first/last gradient ratio that moves by less than
a factor of 1.5 counts as no trend.
"""

from __future__ import annotations

import math
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_exp.analysis.load import BROKEN, Study
from resnet_exp.analysis.reference import reference_section
from resnet_exp.analysis.summary import ARCHS, condition_label

FLAT_POINTS = 1.0  # percentage points of error
RATIO_FACTOR = 1.5
FIGURE_TITLES = {
    "depth_vs_gradient": "First- and last-layer gradient norm vs depth",
    "depth_vs_accuracy": "Final training and validation error vs depth",
    "training_curves": "Training curves (analogue of He et al. 2016, Fig. 6)",
    "gradient_profile": "Gradient norm through the layers",
    "gradient_dynamics": "First- and last-layer gradient norm during training",
}
TABLE_HEADERS = {
    "train_error": "train error (%)",
    "val_error": "val error (%)",
    "grad_first_init": "‖∇‖ first, init",
    "grad_last_init": "‖∇‖ last, init",
    "ratio_init": "first/last, init",
    "grad_first_end": "‖∇‖ first, end",
    "grad_last_end": "‖∇‖ last, end",
    "ratio_end": "first/last, end",
}
COUNT_COLUMNS = ("seeds", "runs", "diverged", "failed", "running")


# ---------------------------------------------------------------- formatting


def fmt_error(mean: float, sd: float) -> str:
    """An error fraction as percent, with the sd over seeds when there is one."""
    if mean is None or not np.isfinite(mean):
        return "–"
    if sd is None or not np.isfinite(sd):
        return f"{100 * mean:.1f}"
    return f"{100 * mean:.1f} ± {100 * sd:.1f}"


def fmt_num(x: float) -> str:
    """Three significant digits: gradient norms span many orders of magnitude."""
    return "–" if x is None or not np.isfinite(x) else f"{x:.3g}"


def condition_keys(table: pd.DataFrame) -> list[str]:
    """The table's key columns before depth: model and whatever else the study varies."""
    return list(table.columns[: table.columns.get_loc("depth")])


def table_frame(table: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The summary as the strings the report shows, one row per configuration."""
    out = pd.DataFrame()
    for key in keys:
        if key == "batch_norm":
            out["batch norm"] = table[key].map({True: "yes", False: "no"}).fillna("?")
        elif key == "arch":
            out["net"] = table[key]
        else:
            out[key] = table[key].astype(str)
    for column in ("train_error", "val_error"):
        out[TABLE_HEADERS[column]] = [
            fmt_error(m, s)
            for m, s in zip(table[f"{column}_mean"], table[f"{column}_sd"], strict=True)
        ]
    if "test_error_mean" in table and table["test_error_mean"].notna().any():
        out["test error (%)"] = [
            fmt_error(m, s)
            for m, s in zip(table["test_error_mean"], table["test_error_sd"], strict=True)
        ]
    for column in list(TABLE_HEADERS)[2:]:
        out[TABLE_HEADERS[column]] = table[column].map(fmt_num)
    for column in COUNT_COLUMNS:
        out[column] = table[column].astype(int).astype(str)
    return out


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency)."""
    numeric = {c for c in frame.columns if c not in ("model", "net", "batch norm")}
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---:" if c in numeric else "---" for c in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join([head, rule, *rows])


# ---------------------------------------------------------------- findings


def _spearman(x: pd.Series, y: pd.Series) -> float:
    if len(x) < 3:
        return math.nan
    rx, ry = x.rank(), y.rank()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def _error_trend(rows: pd.DataFrame, arch: str) -> tuple[str, float] | None:
    """A sentence on how `arch`'s final training error moves with depth, and the change."""
    rows = rows.dropna(subset=["train_error_mean"]).sort_values("depth")
    if len(rows) < 2:
        return None
    first, last = rows.iloc[0], rows.iloc[-1]
    a, b = 100 * first["train_error_mean"], 100 * last["train_error_mean"]
    span = f"{a:.1f}% at depth {first['depth']} to {b:.1f}% at depth {last['depth']}"
    delta = b - a
    rho = _spearman(rows["depth"], rows["train_error_mean"])
    rank = f" (rank correlation with depth {rho:+.2f})" if np.isfinite(rho) else ""
    if abs(delta) < FLAT_POINTS:
        words = f"stays within {FLAT_POINTS:g} point: {span}"
    elif delta > 0:
        words = f"rises from {span}{rank}"
    else:
        words = f"falls from {span}{rank}"
    return f"{arch.capitalize()} nets: final training error {words}.", delta


def _ratio_trend(rows: pd.DataFrame, arch: str, column: str, when: str) -> str | None:
    rows = rows.dropna(subset=[column]).sort_values("depth")
    if len(rows) < 2:
        return None
    first, last = rows.iloc[0], rows.iloc[-1]
    r0, r1 = first[column], last[column]
    span = f"from {fmt_num(r0)} at depth {first['depth']} to {fmt_num(r1)} at depth {last['depth']}"
    if r1 < 1 and r1 < r0 / RATIO_FACTOR:
        verdict = (
            "with depth the first layer's gradient shrinks relative to the last (a vanishing trend)"
        )
    elif r1 > 1 and r1 > r0 * RATIO_FACTOR:
        verdict = (
            "with depth the first layer's gradient grows relative to the last (an exploding trend)"
        )
    else:
        lo, hi = rows[column].min(), rows[column].max()
        spread = (
            f"; over all depths it ranges {fmt_num(lo)} to {fmt_num(hi)}" if len(rows) > 2 else ""
        )
        return (
            f"{arch.capitalize()} nets {when}: the first/last gradient ratio goes {span}, "
            f"less than a factor of {RATIO_FACTOR:g} apart{spread}."
        )
    return f"{arch.capitalize()} nets {when}: the first/last gradient ratio goes {span}: {verdict}."


def findings(study: Study, table: pd.DataFrame, finals: pd.DataFrame) -> list[str]:
    """Sentences computed from the table: error vs depth, gradient ratios, failures.

    One markdown bullet each; with several conditions, a bold condition line
    followed by its sentences indented under it.
    """
    out: list[str] = []
    keys = condition_keys(table)
    depths = sorted(table["depth"].unique())
    archs = [a for a in ARCHS if a in set(table["arch"])]
    if len(depths) < 2:
        out.append(
            f"The study has a single depth ({depths[0]}), so nothing can be said about "
            f"trends with depth; the numbers are in the table."
        )
    if len(archs) < 2:
        out.append(f"The study has only {archs[0]} nets, so plain and residual cannot be compared.")
    multi = table.groupby(keys).ngroups > 1 if keys else False
    for cond_key, group in table.groupby(keys, sort=False) if keys else [((), table)]:
        cond = dict(
            zip(keys, cond_key if isinstance(cond_key, tuple) else (cond_key,), strict=True)
        )
        sentences = []
        deltas = {}
        for arch in archs:
            trend = _error_trend(group[group["arch"] == arch], arch)
            if trend:
                sentences.append(trend[0])
                deltas[arch] = trend[1]
        if "plain" in deltas and "residual" in deltas:
            common = sorted(
                set(group.loc[group["arch"] == "plain", "depth"])
                & set(group.loc[group["arch"] == "residual", "depth"])
            )
            if common:
                d = common[-1]
                at = group[group["depth"] == d].set_index("arch")["train_error_mean"]
                sentences.append(
                    f"At depth {d}, the deepest both have, plain nets reach "
                    f"{100 * at['plain']:.1f}% training error and residual nets "
                    f"{100 * at['residual']:.1f}%."
                )
            plain_up = deltas["plain"] >= FLAT_POINTS
            res_up = deltas["residual"] >= FLAT_POINTS
            if plain_up and not res_up:
                sentences.append(
                    "So here deeper plain nets train worse (the degradation problem) "
                    "while deeper residual nets do not."
                )
            elif plain_up and res_up:
                sentences.append(
                    f"Both kinds train worse as they get deeper: plain nets by "
                    f"{deltas['plain']:.1f} points, residual nets by {deltas['residual']:.1f}."
                )
            elif not plain_up:
                sentences.append("The plain nets show no degradation with depth here.")
        for arch in archs:
            rows = group[group["arch"] == arch]
            for column, when in (
                ("ratio_init", "at initialisation"),
                ("ratio_end", "after training"),
            ):
                sentence = _ratio_trend(rows, arch, column, when)
                if sentence:
                    sentences.append(sentence)
        if sentences and multi:
            out.append(f"**{condition_label(cond, keys)}**")
            out += [f"  - {s}" for s in sentences]
        else:
            out += sentences
    out += _failures(finals)
    return out


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def _describe(row: pd.Series) -> str:
    bn = "" if pd.isna(row.get("batch_norm")) else (", BN" if row["batch_norm"] else ", no BN")
    return f"{row['arch']} depth {row['depth']}{bn}, seed {row['seed']}"


def _failures(finals: pd.DataFrame) -> list[str]:
    out = []
    diverged = finals[finals["diverged"]]
    if len(diverged):
        items = [
            _describe(r)
            + (f" at epoch {r['diverged_epoch']}" if pd.notna(r["diverged_epoch"]) else "")
            for _, r in diverged.iterrows()
        ]
        out.append(
            f"{_n(len(diverged), 'run')} diverged ({'; '.join(items[:6])}"
            f"{'; ...' if len(items) > 6 else ''}). They enter the table's means and the "
            f"depth plots with their last finite numbers (marked x); the curves over epochs "
            f"draw them on their own, dotted, and average the other runs."
        )
    broken = finals[finals["status"].isin(BROKEN) & ~finals["diverged"]]
    if len(broken):
        items = [f"{_describe(r)} ({r['status']})" for _, r in broken.iterrows()]
        out.append(
            f"{_n(len(broken), 'run')} did not finish ({'; '.join(items[:6])}"
            f"{'; ...' if len(items) > 6 else ''}); they are counted but not averaged."
        )
    return out


# ---------------------------------------------------------------- the file


def _study_lines(study: Study) -> list[str]:
    runs = study.runs
    commits = sorted(c for c in runs["git_commit"].dropna().unique())
    if not commits:
        commit = "not recorded"
    elif len(commits) == 1:
        commit = f"`{commits[0]}`"
    else:
        commit = f"{len(commits)} commits: " + ", ".join(f"`{c[:12]}`" for c in commits[:5])
    start, end = runs["start_time"].min(), runs["start_time"].max()
    if study.parent_run_id:
        name = study.parent_run_name
        parent = f"`{study.parent_run_id}`" + (f" ({name})" if name else "")
    else:
        parent = "none given: every training run in the experiment"
    statuses = ", ".join(f"{n} {s}" for s, n in runs["status"].value_counts().items())
    return [
        "| | |",
        "|---|---|",
        f"| experiment | {study.experiment} (id {study.experiment_id}) |",
        f"| parent run | {parent} |",
        f"| git commit | {commit} |",
        f"| runs | {len(runs)} training runs ({statuses}) |",
        f"| run dates | {start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC |",
        f"| tracking URI | `{study.tracking_uri}` |",
        f"| report made | {datetime.now(UTC):%Y-%m-%d %H:%M} UTC; runs loaded in "
        f"{study.seconds:.1f} s ({study.method} path) |",
    ]


def write_report(
    study: Study,
    table: pd.DataFrame,
    finals: pd.DataFrame,
    figures: dict[str, Path],
    out_dir: Path,
    *,
    notes: list[str],
) -> Path:
    """Write `report.md` and `summary.csv` (full precision) into `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    keys = [*condition_keys(table), "depth", "arch"]
    table.to_csv(out_dir / "summary.csv", index=False)
    lines = [f"# Depth study: {study.experiment}", "", *_study_lines(study), ""]
    lines += ["## What the numbers show", ""]
    lines += [s if s.startswith("  - ") else f"- {s}" for s in findings(study, table, finals)]
    lines += ["", *reference_section(study.experiment, table)]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "## Summary",
        "",
        "One row per configuration. Errors: mean ± sd over seeds, in percent, at the last "
        "epoch with a finite value. Gradient norms (‖∂L/∂W‖₂ of the first and last weight "
        "layer) and their ratio: geometric mean over seeds, at initialisation (epoch 0) and "
        "at the last epoch. `seeds` runs enter the means (FINISHED or diverged); `runs` "
        "counts all of them; `failed` are FAILED or KILLED. Full precision in "
        "[summary.csv](summary.csv).",
        "",
        markdown_table(table_frame(table, keys)),
        "",
        "## Figures",
        "",
    ]
    for name, title in FIGURE_TITLES.items():
        if name in figures:
            lines += [f"### {title}", "", f"![{title}]({name}.png)", ""]
        else:
            lines += [f"### {title}", "", "_Not drawn: see the notes above._", ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
