"""`report.md`: which study, what its numbers are, and what they show.

Every sentence under "What the numbers show" is assembled from the summary
table when the report is built: the trend words (rise, fall, flat, vanish,
explode) are chosen by thresholds on the numbers, and the numbers themselves are
quoted with their spread between seeds, so the text can never disagree with the
table beside it. A change is called a trend only when it is larger than the
noise we can see:

* error, shallowest vs deepest net: flat under `FLAT_POINTS`; with two or more
  seeds, a trend only beyond `NOISE_SDS` sd between seeds (the sds of the two
  ends, pooled); with one seed the spread is unknown, so a change under
  `ONE_SEED_POINTS` is said to be within unmeasured run-to-run noise (a stated
  convention, not a measurement: rerun with seeds to measure it);
* first/last gradient ratio: a trend beyond a factor of `RATIO_FACTOR`, or
  beyond `NOISE_SDS` geometric sds between seeds when that is larger;
* configurations with diverged runs are counted per condition and left out of
  the error and after-training trends (their numbers stop at divergence); the
  ratio at initialisation comes before any training, so every run has it.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd

from resnet_exp.analysis.load import BROKEN, Study
from resnet_exp.analysis.reference import reference_section
from resnet_exp.analysis.summary import arch_order, chance_error, condition_label

FLAT_POINTS = 1.0  # percentage points of error
ONE_SEED_POINTS = 5.0  # one seed: smaller changes are not called trends (see the module doc)
NOISE_SDS = 2.0  # a trend must exceed this many sds between seeds
CHANCE_POINTS = 2.0  # an error this close to 1 - 1/classes is called chance level
RATIO_FACTOR = 1.5
FIGURE_TITLES = {
    "depth_vs_gradient": "First- and last-layer gradient norm vs depth",
    "depth_vs_accuracy": "Final training and validation error vs depth",
    "training_curves": "Training curves (analogue of He et al. 2016, Fig. 6)",
    "gradient_profile": "Gradient norm through the layers",
    "gradient_dynamics": "First- and last-layer gradient norm during training",
}
# The summary table's headers are short: MLflow 3.17's markdown viewer gives every column
# the same width (the viewer's over the number of columns, more only where a cell's
# unbreakable text needs it) and cuts a header that does not fit with "…". The legend
# under the table spells them out.
GRADIENT_HEADERS = {
    "grad_first_init": "first, init",
    "grad_last_init": "last, init",
    "ratio_init": "ratio, init",
    "grad_first_end": "first, end",
    "grad_last_end": "last, end",
    "ratio_end": "ratio, end",
}


# ---------------------------------------------------------------- formatting


def fmt(x: float, spec: str) -> str:
    """`x` in the format `spec`, or a dash when it is missing or infinite."""
    return format(x, spec) if np.isfinite(x) else "–"


def fmt_error(mean: float, sd: float) -> str:
    """An error fraction as percent, with the sd over seeds when there is one."""
    if not np.isfinite(mean):
        return "–"
    return f"{100 * mean:.1f}" + (f" ± {100 * sd:.1f}" if np.isfinite(sd) else "")


fmt_num = partial(fmt, spec=".3g")  # gradient norms span many orders of magnitude


def condition_keys(table: pd.DataFrame) -> list[str]:
    """The table's key columns before depth: model and whatever else the study varies."""
    return list(table.columns[: table.columns.get_loc("depth")])


def markdown_table(frame: pd.DataFrame, text: Collection[str]) -> str:
    """A GitHub-flavoured markdown table (no tabulate dependency); `text` columns align left."""
    head = "| " + " | ".join(frame.columns) + " |"
    rule = "|" + "|".join("---" if c in text else "---:" for c in frame.columns) + "|"
    rows = ["| " + " | ".join(str(v) for v in row) + " |" for row in frame.to_numpy()]
    return "\n".join([head, rule, *rows])


# Every table of a report keeps to these (GRADIENT_HEADERS says why; at about 900 px, 12
# columns leave 9-11 characters each) and spells its short headers out in a legend line.
MAX_COLUMNS, MAX_HEADER = 12, 11


def legend(*entries: tuple[str, str]) -> str:
    """The line under a table that spells out its short headers: `_head_: meaning; ...`."""
    return "; ".join(f"_{head}_: {meaning}" for head, meaning in entries) + "."


def question_section(
    heading: str,
    intro: str,
    findings: list[str],
    table: list[str],
    titles: dict[str, str],
    figures: Collection[str],
) -> list[str]:
    """A study question's section of the report, as markdown lines: the heading, what was
    measured, the findings as bullets (`nested` sub-bullets kept), the table, then each
    figure of `titles` that was drawn (in `figures`), or that it was not."""
    bullets = [s if s.startswith("  - ") else f"- {s}" for s in findings]
    lines = [f"## {heading}", "", intro, "", *bullets, "", *table, ""]
    for name, title in titles.items():
        drawn = f"![{title}]({name}.png)" if name in figures else "_Not drawn: no data._"
        lines += [f"### {title}", "", drawn, ""]
    return lines


def nested(heading: str, sentences: list[str]) -> list[str]:
    """`sentences` as sub-bullets of a bold `heading`; as they are without a heading."""
    if not (heading and sentences):
        return sentences
    return [f"**{heading}**", *(f"  - {s}" for s in sentences)]


def summary_table(table: pd.DataFrame) -> str:
    """The summary as the report shows it: a markdown table, one row per configuration, then
    a legend line. Narrow enough for MLflow's markdown viewer (about 900 px for the default
    study, 6 depths x 2 nets): short headers, one `runs` column for the five counts, and a
    condition every row shares (the model, usually) said once in the legend, not per row."""
    out = pd.DataFrame()
    shared = []
    for key in condition_keys(table):
        if table[key].nunique(dropna=False) == 1:
            shared.append(f"{key} {table[key].iloc[0]}")
        elif key == "batch_norm":
            out["BN"] = table[key].map({True: "yes", False: "no"}).fillna("?")
        else:
            out[key] = table[key].astype(str)
    out["depth"] = table["depth"].astype(str)
    out["net"] = table["arch"]
    errors = ["train", "val", "test"]
    if table["test_error_mean"].isna().all():  # no test set
        errors.remove("test")
    for name in errors:
        means, sds = table[f"{name}_error_mean"], table[f"{name}_error_sd"]
        out[f"{name} %"] = list(map(fmt_error, means, sds))
    for column, header in GRADIENT_HEADERS.items():
        out[header] = table[column].map(fmt_num)
    out["runs"] = [_runs_cell(row) for _, row in table.iterrows()]
    notes = [
        f"{', '.join(f'_{e} %_' for e in errors)}: final error in percent, mean ± sd "
        "over seeds, at the last epoch with a finite value",
        "_first_, _last_: ‖∂L/∂W‖₂ of the first and of the last weight layer, geometric "
        "mean over seeds, at initialisation (_init_) and at the last epoch (_end_); "
        "_ratio_: first/last",
        "_runs_: the runs averaged (FINISHED or diverged: _div._), + those not averaged "
        "(_failed_: FAILED or KILLED; _running_)",
    ]
    if "BN" in out:
        notes.append("_BN_: batch norm")
    if shared:
        notes.append(f"Every row: {', '.join(shared)}")
    table_text = markdown_table(out, text=("model", "net", "BN"))
    return f"{table_text}\n\n{'. '.join(notes)}."


def _runs_cell(row: pd.Series) -> str:
    """'3', '3 (1 div.)', '2 +1 failed': the counts a configuration's means rest on."""
    cell = str(int(row["seeds"]))
    if row["diverged"]:
        cell += f" ({int(row['diverged'])} div.)"
    for word in ("failed", "running"):
        if row[word]:
            cell += f" +{int(row[word])} {word}"
    return cell


# ---------------------------------------------------------------- findings


def _spearman(x: pd.Series, y: pd.Series) -> float:
    if len(x) < 3:
        return math.nan
    rx, ry = x.rank(), y.rank()
    if rx.std() == 0 or ry.std() == 0:
        return math.nan
    return float(np.corrcoef(rx, ry)[0, 1])


def pooled(*sds: float) -> float:
    """The spread between seeds of two configurations: root mean square of their sds."""
    values = [s for s in sds if s is not None and np.isfinite(s)]
    return (
        math.sqrt(sum(s * s for s in values) / len(values)) if len(values) == len(sds) else math.nan
    )


def _depth_list(depths) -> str:
    return ", ".join(str(int(d)) for d in sorted(depths))


@dataclass
class ErrorChange:
    """How one net kind's final training error moves from the shallowest to the deepest net.

    `a`, `b` and the sds are in percent; `seeds` is the fewer of the two ends'.
    """

    arch: str
    depth_a: int
    depth_b: int
    a: float
    b: float
    sd_a: float
    sd_b: float
    seeds: int
    rho: float

    @property
    def delta(self) -> float:
        return self.b - self.a

    @property
    def spread(self) -> float:
        return pooled(self.sd_a, self.sd_b) if self.seeds > 1 else math.nan

    @property
    def verdict(self) -> str:
        """rise / fall; flat (under FLAT_POINTS); noise (within the seeds' spread);
        unknown (one seed, a change under ONE_SEED_POINTS)."""
        size = abs(self.delta)
        if size < FLAT_POINTS:
            return "flat"
        if np.isfinite(self.spread) and size <= NOISE_SDS * self.spread:
            return "noise"
        if self.seeds < 2 and size < ONE_SEED_POINTS:
            return "unknown"
        return "rise" if self.delta > 0 else "fall"

    def at(self, which: str) -> str:
        mean, sd = (self.a, self.sd_a) if which == "a" else (self.b, self.sd_b)
        depth = self.depth_a if which == "a" else self.depth_b
        value = f"{mean:.1f} ± {sd:.1f}%" if self.seeds > 1 and np.isfinite(sd) else f"{mean:.1f}%"
        return f"{value} at depth {depth}"

    def change(self, *, signed: bool = True) -> str:
        """The change with its uncertainty: '+88.9 points (sd between seeds 1.2)'."""
        text = f"{self.delta:+.1f} points" if signed else f"{abs(self.delta):.1f} points"
        return text + (f" (sd between seeds {self.spread:.1f})" if np.isfinite(self.spread) else "")


def error_change(rows: pd.DataFrame, arch: str) -> ErrorChange | None:
    rows = rows.dropna(subset=["train_error_mean"]).sort_values("depth")
    if len(rows) < 2:
        return None
    ends = rows.iloc[[0, -1]]  # the shallowest and the deepest net
    depth_a, depth_b = ends["depth"].astype(int)
    a, b = 100 * ends["train_error_mean"]
    sd_a, sd_b = 100 * ends["train_error_sd"]
    rho = _spearman(rows["depth"], rows["train_error_mean"])
    return ErrorChange(arch, depth_a, depth_b, a, b, sd_a, sd_b, int(ends["seeds"].min()), rho)


def _error_sentence(change: ErrorChange, left_out: list[int], chance: float | None = None) -> str:
    """One net kind's error vs depth, with the words the numbers allow."""
    seeds = f"mean ± sd over {change.seeds} seeds" if change.seeds > 1 else "one seed"
    if np.isfinite(change.rho):
        seeds += f"; rank correlation with depth {change.rho:+.2f}"
    head = (
        f"{change.arch.capitalize()} nets: final training error {change.at('a')}, "
        f"{change.at('b')} ({seeds})"
    )
    words = {
        "flat": f"within {FLAT_POINTS:g} point ({change.change()}): no change with depth",
        "noise": (
            f"a change of {change.change()}, not more than {NOISE_SDS:g} sd between seeds: "
            f"no trend with depth can be claimed"
        ),
        "unknown": (
            f"a change of {change.change()}; one seed: differences of a few points are "
            f"within run-to-run noise we cannot measure here"
        ),
    }.get(change.verdict, f"a {change.verdict} of {change.change(signed=False)}")  # rise, fall
    if change.verdict in ("rise", "fall") and change.seeds > 1:
        words += f", more than {NOISE_SDS:g} sd between seeds"
    depths = "depth" if len(left_out) == 1 else "depths"
    skipped = f" ({depths} {_depth_list(left_out)} left out: runs diverged)" if left_out else ""
    ends = ((change.depth_a, change.a), (change.depth_b, change.b))
    at_chance = [d for d, v in ends if chance is not None and v >= chance - CHANCE_POINTS]
    if at_chance:
        skipped += (
            f"; at depth {_depth_list(at_chance)} that is chance level ({chance:.0f}% error, "
            f"1 - 1/classes): nothing learned"
        )
    return f"{head}: {words}{skipped}."


def _comparison(changes: dict[str, ErrorChange], steady: pd.DataFrame) -> list[str]:
    """Plain vs residual: the error at the deepest steady depth both have, and the two changes."""
    plain, res = changes["plain"], changes["residual"]
    out = []
    common = [d for d, a in steady.groupby("depth")["arch"] if {"plain", "residual"} <= set(a)]
    if common:
        d = common[-1]
        at = steady[steady["depth"] == d].set_index("arch")
        means, sds = at["train_error_mean"], at["train_error_sd"]
        gap = 100 * (means["plain"] - means["residual"])
        spread = 100 * pooled(sds["plain"], sds["residual"])
        cells = [fmt_error(means[a], sds[a]) + "%" for a in ("plain", "residual")]
        judged = f"a gap of {gap:+.1f} points, "
        if np.isfinite(spread):
            more = "more" if abs(gap) > NOISE_SDS * spread else "not more"
            judged += f"{more} than {NOISE_SDS:g} sd between seeds ({spread:.1f})"
        else:
            judged += "one seed each"
        out.append(
            f"At depth {d}, the deepest both have, plain nets reach {cells[0]} training error "
            f"and residual nets {cells[1]}: {judged}."
        )
    if plain.verdict == "rise" and res.verdict != "rise":
        tail = {
            "flat": "do not",
            "noise": "show no rise beyond the spread between their seeds",
            "unknown": f"change by {res.delta:+.1f} points, which one seed cannot tell from noise",
            "fall": "even improve",
        }[res.verdict]
        out.append(
            f"So here deeper plain nets train worse ({plain.delta:+.1f} points from depth "
            f"{plain.depth_a} to {plain.depth_b}: the degradation problem) while deeper residual "
            f"nets {tail}."
        )
    elif plain.verdict == "rise":
        out.append(
            f"Both kinds train worse as they get deeper: plain nets by "
            f"{plain.change(signed=False)}, residual nets by {res.change(signed=False)}; "
            f"the plain rise is {plain.delta - res.delta:.1f} points larger."
        )
    else:
        out.append(
            "The plain nets show no degradation with depth here"
            + (" that one seed can tell." if plain.verdict == "unknown" else ".")
        )
    return out


def _ratio_trend(group: pd.DataFrame, arch: str, column: str, when: str) -> str | None:
    rows = group[group["arch"] == arch].dropna(subset=[column]).sort_values("depth")
    if len(rows) < 2:
        return None
    first, last = rows.iloc[0], rows.iloc[-1]
    r0, r1 = first[column], last[column]
    span = f"from {fmt_num(r0)} at depth {first['depth']} to {fmt_num(r1)} at depth {last['depth']}"
    # The seeds' spread, as a factor: geometric sds pooled in log space.
    seeds = int(min(first["seeds"], last["seeds"]))
    log_spread = pooled(np.log(first[f"{column}_gsd"]), np.log(last[f"{column}_gsd"]))
    factor, noise = RATIO_FACTOR, " (one seed)" if seeds < 2 else ""
    if seeds > 1 and np.isfinite(log_spread):
        factor = max(RATIO_FACTOR, math.exp(NOISE_SDS * log_spread))
        noise = (
            f" (geometric mean over {seeds} seeds, geometric sd between seeds "
            f"x{math.exp(log_spread):.2g})"
        )
    if r1 < 1 and r1 < r0 / factor:
        verdict = ": with depth the first layer's gradient shrinks relative to the last"
        verdict += " (a vanishing trend)"
    elif r1 > 1 and r1 > r0 * factor:
        verdict = ": with depth the first layer's gradient grows relative to the last"
        verdict += " (an exploding trend)"
    else:
        lo, hi = rows[column].min(), rows[column].max()
        verdict = f", less than a factor of {factor:.2g} apart"
        if len(rows) > 2:
            verdict += f"; over all depths it ranges {fmt_num(lo)} to {fmt_num(hi)}"
    # The two norms behind the ratio: a steady ratio can hide both vanishing together.
    stage = column.removeprefix("ratio_")
    a, b = f"grad_first_{stage}", f"grad_last_{stage}"
    return (
        f"{arch.capitalize()} nets {when}: the first/last gradient ratio goes {span}{noise}"
        f"{verdict}; the norms: first layer {fmt_num(first[a])} to {fmt_num(last[a])}, "
        f"last layer {fmt_num(first[b])} to {fmt_num(last[b])}."
    )


def _runs_of(finals: pd.DataFrame, cond: dict) -> pd.DataFrame:
    """The runs of one condition (the table's key values)."""
    mask = np.ones(len(finals), dtype=bool)
    for key, value in cond.items():
        mask &= (finals[key] == value).to_numpy(dtype=bool, na_value=False)
    return finals[mask]


def _divergence(group: pd.DataFrame, archs: list[str]) -> str | None:
    """How many runs of each net kind diverged in this condition, and at which depths."""
    if not group["diverged"].any():
        return None
    parts = []
    for arch in archs:
        rows = group[group["arch"] == arch]
        n, total = int(rows["diverged"].sum()), int(rows["runs"].sum())
        hit = rows[rows["diverged"] > 0].sort_values("depth")
        where = ", ".join(
            f"{int(r.depth)}" + ("" if r.runs == 1 else f": {int(r.diverged)} of {int(r.runs)}")
            for r in hit.itertuples()
        )
        parts.append(f"{n} of {total} {arch} runs" + (f" (depth {where})" if n else ""))
    return (
        "Diverged (loss NaN or infinite): " + ", ".join(parts) + ". Their errors in the table are "
        "the last finite ones; the trends below leave those depths out, except at initialisation, "
        "which every run has."
    )


def findings(study: Study, table: pd.DataFrame, finals: pd.DataFrame) -> list[str]:
    """Sentences computed from the table: error vs depth, gradient ratios, failures.

    One markdown bullet each; with several conditions, a bold condition line
    followed by its sentences indented under it.
    """
    out: list[str] = []
    keys = condition_keys(table)
    depths = sorted(table["depth"].unique())
    archs = arch_order(table["arch"])
    if len(depths) < 2:
        out.append(
            f"The study has a single depth ({depths[0]}), so nothing can be said about "
            f"trends with depth; the numbers are in the table."
        )
    if len(archs) < 2:
        out.append(f"The study has only {archs[0]} nets, so plain and residual cannot be compared.")
    if table["seeds"].max() <= 1:
        out.append(
            f"One seed per configuration: differences of a few points are within run-to-run "
            f"noise we cannot measure here, so changes under {ONE_SEED_POINTS:g} points are not "
            f"called trends (add `seed=0,1,2` to measure the spread)."
        )
    groups = list(table.groupby(keys, sort=False))
    for cond_key, group in groups:
        cond = dict(zip(keys, cond_key, strict=True))
        diverged = _divergence(group, archs)
        sentences = [diverged] if diverged else []
        steady = group[group["diverged"] == 0]
        chance = chance_error(_runs_of(finals, cond))
        changes = {}
        for arch in archs:
            rows = group[group["arch"] == arch]
            left_out = sorted(rows.loc[rows["diverged"] > 0, "depth"])
            change = error_change(steady[steady["arch"] == arch], arch)
            if change:
                sentences.append(_error_sentence(change, left_out, chance))
                changes[arch] = change
            elif left_out:
                sentences.append(
                    f"{arch.capitalize()} nets: runs diverged at depth {_depth_list(left_out)}, "
                    f"too few depths are left for a trend in error."
                )
        if "plain" in changes and "residual" in changes:
            sentences += _comparison(changes, steady)
        for arch in archs:
            init = _ratio_trend(group, arch, "ratio_init", "at initialisation")
            end = _ratio_trend(steady, arch, "ratio_end", "after training")
            sentences += [s for s in (init, end) if s]
        out += nested(condition_label(cond, keys) if len(groups) > 1 else "", sentences)
    out += _failures(finals)
    return out


def _runs_named(runs: pd.DataFrame, what: str, details: list[str]) -> str:
    """'2 runs <what> (plain depth 56, BN, seed 1<detail>; ...)', naming at most six."""
    items = []
    for (_, r), detail in zip(runs.iterrows(), details, strict=True):
        bn = "" if pd.isna(r.get("batch_norm")) else (", BN" if r["batch_norm"] else ", no BN")
        items.append(f"{r['arch']} depth {r['depth']}{bn}, seed {r['seed']}{detail}")
    more = "; ..." if len(items) > 6 else ""
    return f"{len(runs)} run{'' if len(runs) == 1 else 's'} {what} ({'; '.join(items[:6])}{more})"


def _failures(finals: pd.DataFrame) -> list[str]:
    out = []
    diverged = finals[finals["diverged"]]
    if len(diverged):
        epochs = [f" at epoch {e}" if pd.notna(e) else "" for e in diverged["diverged_epoch"]]
        out.append(
            _runs_named(diverged, "diverged", epochs) + ". They enter the table's means and the "
            "depth plots with their last finite numbers (marked x); the curves over epochs "
            "draw them on their own, dotted, and average the other runs."
        )
    broken = finals[finals["status"].isin(BROKEN) & ~finals["diverged"]]
    if len(broken):
        statuses = [f" ({s})" for s in broken["status"]]
        out.append(
            _runs_named(broken, "did not finish", statuses) + "; they are counted but not averaged."
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
    parent = "none given: every training run in the experiment"
    if study.parent_run_id:
        name = study.parent_run_name
        parent = f"`{study.parent_run_id}`" + (f" ({name})" if name else "")
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
    sections: Sequence[str] = (),
) -> Path:
    """Write `report.md` and `summary.csv` (full precision) into `out_dir`.

    `sections`: further markdown lines (e.g. the lesion section), after the findings.
    """
    out_dir.mkdir(parents=True, exist_ok=True)
    table.to_csv(out_dir / "summary.csv", index=False)
    lines = [f"# Depth study: {study.experiment}", "", *_study_lines(study), ""]
    lines += ["## What the numbers show", ""]
    lines += [s if s.startswith("  - ") else f"- {s}" for s in findings(study, table, finals)]
    lines += ["", *reference_section(study.experiment, table), *sections]
    if notes:
        lines += ["## Notes", "", *[f"- {n}" for n in notes], ""]
    lines += [
        "## Summary",
        "",
        "One row per configuration, its columns explained under it; full precision in "
        "[summary.csv](summary.csv).",
        "",
        summary_table(table),
        "",
        "## Figures",
        "",
    ]
    for name, title in FIGURE_TITLES.items():
        missing = "_Not drawn: see the notes above._"
        lines += [f"### {title}", "", f"![{title}]({name}.png)" if name in figures else missing, ""]
    path = out_dir / "report.md"
    path.write_text("\n".join(lines))
    return path
