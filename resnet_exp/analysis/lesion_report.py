"""Block lesions and branch magnitudes, read back from MLflow, and what they show.

The training side (`resnet_exp.recording.lesions`, `resnet_exp.recording.branches`) logs per run
`lesion.csv` (accuracy after deleting each block), `lesion_k.csv` (after
deleting k random same-shape blocks) and `branch_magnitude.csv`
(‖F(x)‖ / ‖x‖ per block and epoch). This module stacks them over a study's
runs and turns them into the report's "Block lesions" section; the figures are
in `lesion_figures`.

Verdicts use fixed thresholds on the mean accuracy drop over the same-shape
(non-downsampling) blocks, in percentage points: below `TOLERATE_POINTS` a net
tolerates deletions; above `BREAK_POINTS` it does not; in between is said as
it is. Veit et al. (2016, Fig. 3) saw a ResNet-110 lose well under a point per
deleted block on CIFAR-10, and a plain VGG net fall to chance.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.analysis.load import Study, load_run_artifacts
from resnet_exp.analysis.summary import ARCHS, condition_columns, with_condition

# The section is drawn when a run logged one of these.
SECTION_METRICS = (
    contract.LESION_INTACT_ACCURACY,
    contract.LESION_MEAN_DROP,
    contract.BRANCH_RATIO_MEAN,
)
TOLERATE_POINTS = 5.0
BREAK_POINTS = 25.0
_RUN_COLUMNS = ["run_id", "run_name", "model", "depth", "arch", "seed", "condition"]


@dataclass
class LesionData:
    """Stacked per-run artifacts, each row with the run's depth, arch, seed and condition."""

    single: pd.DataFrame  # one row per (run, deleted block), plus intact_accuracy
    multi: pd.DataFrame  # one row per (run, k, draw)
    branches: pd.DataFrame  # one row per (run, epoch, block)
    conditions: list[str]
    num_classes: int | None

    @property
    def chance(self) -> float | None:
        return 1.0 / self.num_classes if self.num_classes else None


def has_lesion_data(study: Study) -> bool:
    """True when some run logged lesion or branch metrics (the section is drawn only then)."""
    return any(m in study.epochs.columns for m in SECTION_METRICS)


def _num_classes(study: Study) -> int | None:
    if "data.num_classes" not in study.params:
        return None
    values = pd.to_numeric(study.params["data.num_classes"], errors="coerce").dropna().unique()
    return int(values[0]) if len(values) == 1 else None


def load_lesions(study: Study) -> LesionData:
    """Read the three artifacts of every usable run that has them."""
    runs = with_condition(study.usable, condition_columns(study.usable))[_RUN_COLUMNS]

    def load(name: str, columns: list[str], what: str) -> pd.DataFrame:
        frame = load_run_artifacts(study, name, set(columns), what=what)
        return runs.merge(frame, on="run_id", how="inner") if not frame.empty else pd.DataFrame()

    logged = study.epochs.groupby("run_id").max(numeric_only=True)

    def runs_with(metric: str) -> pd.Index:
        """The runs that logged `metric` (none when no run did: the column is absent)."""
        return logged.index[logged[metric].notna()] if metric in logged else logged.index[:0]

    lesioned = runs_with(contract.LESION_INTACT_ACCURACY)
    branched = runs_with(contract.BRANCH_RATIO_MEAN)
    single = multi = branches = pd.DataFrame()
    if len(lesioned):
        single = load(contract.LESION_ARTIFACT, contract.LESION_COLUMNS, "lesion figures")
        multi = load(contract.LESION_K_ARTIFACT, contract.LESION_K_COLUMNS, "k-lesion figure")
        if not single.empty:
            single["intact_accuracy"] = single["accuracy"] + single["drop"]
            single["downsampling"] = single["downsampling"].astype(bool)
    if len(branched):
        what = "branch-magnitude figure"
        branches = load(contract.BRANCH_ARTIFACT, contract.BRANCH_COLUMNS, what)
    order = list(dict.fromkeys(runs.sort_values(["condition"])["condition"]))
    return LesionData(single, multi, branches, order, _num_classes(study))


# ---------------------------------------------------------------- per-configuration numbers


def lesion_table(data: LesionData) -> pd.DataFrame:
    """One row per (condition, depth, arch): intact accuracy, drops (points), k, branches.

    Means over seeds (and over the blocks or draws a column names).
    """
    if data.single.empty:
        return pd.DataFrame()
    keys = ["condition", "depth", "arch"]
    s = data.single.assign(pts=100 * data.single["drop"])
    same, down = s[~s["downsampling"]], s[s["downsampling"]]
    per_run = s.groupby([*keys, "run_id"])["intact_accuracy"].first().reset_index()
    table = per_run.groupby(keys).agg(
        seeds=("run_id", "nunique"), intact_accuracy=("intact_accuracy", "mean")
    )
    table["mean_drop"] = same.groupby(keys)["pts"].mean()
    table["max_drop"] = same.groupby([*keys, "run_id"])["pts"].max().groupby(level=keys).mean()
    table["lesioned_accuracy"] = same.groupby(keys)["accuracy"].mean()
    table["downsampling_drop"] = down.groupby(keys)["pts"].mean()
    worst = same.sort_values("pts").groupby(keys)["block"].last()
    table["worst_block"] = worst
    if not data.multi.empty:
        kmax = data.multi.groupby(keys)["k"].max().rename("k_max")
        at = data.multi.merge(kmax.reset_index(), on=keys)
        at = at[at["k"] == at["k_max"]]
        table["k_max"] = kmax
        table["k_max_accuracy"] = at.groupby(keys)["accuracy"].mean()
    if not data.branches.empty:
        b = data.branches
        last = b.groupby("run_id")["epoch"].transform("max")
        table["branch_init"] = b[b["epoch"] == 0].groupby(keys)["ratio"].mean()
        table["branch_end"] = b[b["epoch"] == last].groupby(keys)["ratio"].mean()
    return table.reset_index()


def _pts(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{x:.1f}"


def _pct(x: float) -> str:
    return "–" if x is None or not np.isfinite(x) else f"{100 * x:.1f}%"


def _verdict(mean_drop: float) -> str:
    if mean_drop < TOLERATE_POINTS:
        return "tolerate"
    if mean_drop > BREAK_POINTS:
        return "break"
    return "partial"


def _joined(rows: pd.DataFrame, column: str, fmt) -> str:
    return " / ".join(fmt(v) for v in rows[column])


def lesion_findings(data: LesionData, table: pd.DataFrame) -> list[str]:
    """Sentences computed from `table`: does each kind of net tolerate deletions?"""
    out: list[str] = []
    if table.empty:
        return ["No run has lesion data (`lesion.enabled=true`), so nothing about deletions."]
    chance = data.chance
    for cond in data.conditions:
        group = table[table["condition"] == cond]
        if group.empty:
            continue
        sentences = []
        verdicts: dict[str, set[str]] = {}
        for arch in [a for a in ARCHS if a in set(group["arch"])]:
            rows = group[group["arch"] == arch].sort_values("depth")
            depths = " / ".join(str(d) for d in rows["depth"])
            verdicts[arch] = {_verdict(v) for v in rows["mean_drop"] if np.isfinite(v)}
            sentence = (
                f"{arch.capitalize()} nets (depth {depths}): deleting one same-shape block "
                f"costs {_joined(rows, 'mean_drop', _pts)} points of validation accuracy on "
                f"average (worst block {_joined(rows, 'max_drop', _pts)} points), from an "
                f"intact {_joined(rows, 'intact_accuracy', _pct)}; the lesioned nets average "
                f"{_joined(rows, 'lesioned_accuracy', _pct)}"
            )
            if chance:
                sentence += f" (chance: {100 * chance:.0f}%)"
            if rows["downsampling_drop"].notna().any():
                sentence += (
                    f". Deleting a downsampling block costs "
                    f"{_joined(rows, 'downsampling_drop', _pts)} points"
                )
            if "k_max" in rows and rows["k_max"].notna().any():
                ks = " / ".join(str(int(k)) for k in rows["k_max"])
                sentence += (
                    f". With the most blocks deleted at once (k = {ks}) accuracy is "
                    f"{_joined(rows, 'k_max_accuracy', _pct)}"
                )
            sentences.append(sentence + ".")
        sentences.append(_conclusion(verdicts))
        if "branch_end" in group:
            sentences += _branch_sentences(group)
        if cond and len(data.conditions) > 1:
            out.append(f"**{cond}**")
            out += [f"  - {s}" for s in sentences]
        else:
            out += sentences
    return out


def _conclusion(verdicts: dict[str, set[str]]) -> str:
    words = {
        "tolerate": f"lose less than {TOLERATE_POINTS:g} points on average",
        "break": f"lose more than {BREAK_POINTS:g} points on average",
        "partial": f"lose between {TOLERATE_POINTS:g} and {BREAK_POINTS:g} points",
    }
    res, plain = verdicts.get("residual", set()), verdicts.get("plain", set())
    if res == {"tolerate"} and plain == {"break"}:
        return (
            "So, as Veit et al. (2016) found on CIFAR-10, the residual nets here tolerate "
            "the deletion of a single block and the plain nets do not."
        )
    parts = []
    for arch, found in (("residual", res), ("plain", plain)):
        if found:
            kinds = " or ".join(words[v] for v in sorted(found))
            parts.append(f"the {arch} nets {kinds} per deleted block")
    if not parts:
        return "No deletion result to judge."
    return (
        "Here the data do not show the clean split Veit et al. (2016) report (residual nets "
        "tolerate deletions, plain nets do not): " + "; ".join(parts) + "."
    )


def _branch_sentences(group: pd.DataFrame) -> list[str]:
    out = []
    for arch in [a for a in ARCHS if a in set(group["arch"])]:
        rows = group[group["arch"] == arch].sort_values("depth")
        if rows["branch_end"].isna().all():
            continue
        what = "‖F(x)‖/‖x‖ of the residual branch" if arch == "residual" else "block output/input"
        out.append(
            f"{arch.capitalize()} nets, mean {what} over blocks: "
            f"{_joined(rows, 'branch_init', lambda v: f'{v:.2f}')} at initialisation, "
            f"{_joined(rows, 'branch_end', lambda v: f'{v:.2f}')} after training "
            f"(depth {' / '.join(str(d) for d in rows['depth'])})."
        )
    return out


def lesion_markdown_table(table: pd.DataFrame) -> list[str]:
    if table.empty:
        return []
    if (table["condition"] == "").all():  # one condition: no column for it
        lines = lesion_markdown_table(table.assign(condition="model"))
        return [_drop_first_cell(line) for line in lines]
    head = (
        "| condition | depth | net | seeds | intact acc. | mean drop (pts) | worst drop (pts) "
        "| worst block | downsampling drop (pts) | acc. at largest k | ‖F‖/‖x‖ init | ‖F‖/‖x‖ end |"
    )
    lines = [head, "|---|---:|---|---:|---:|---:|---:|---|---:|---:|---:|---:|"]
    for r in table.itertuples():
        k = (
            f"{_pct(r.k_max_accuracy)} (k={int(r.k_max)})"
            if "k_max" in table and np.isfinite(r.k_max)
            else "–"
        )
        init = getattr(r, "branch_init", np.nan)
        end = getattr(r, "branch_end", np.nan)
        lines.append(
            f"| {r.condition} | {r.depth} | {r.arch} | {r.seeds} | {_pct(r.intact_accuracy)} "
            f"| {_pts(r.mean_drop)} | {_pts(r.max_drop)} | {r.worst_block} "
            f"| {_pts(r.downsampling_drop)} | {k} "
            f"| {'–' if not np.isfinite(init) else f'{init:.2f}'} "
            f"| {'–' if not np.isfinite(end) else f'{end:.2f}'} |"
        )
    return lines


def _drop_first_cell(line: str) -> str:
    return "|" + line.split("|", 2)[2]


FIGURE_TITLES = {
    "lesion_single": "Accuracy after deleting one block (analogue of Veit et al. 2016, Fig. 3)",
    "lesion_k": "Error vs number of deleted blocks (analogue of Veit et al. 2016, Fig. 4)",
    "branch_magnitude": "Branch magnitude ‖F(x)‖/‖x‖ per block and depth",
}


def lesion_section(data: LesionData, figures: dict[str, object]) -> list[str]:
    """The report's "Block lesions" section, as markdown lines."""
    table = lesion_table(data)
    lines = [
        "## Block lesions: does a residual net fall back to a shallower one?",
        "",
        "After training, each block is deleted in turn (replaced by its shortcut path: the "
        "identity, or the option A/B shortcut where the shape changes; a plain block by the same "
        "path), and the net is evaluated on the validation set with its trained weights and "
        "batch-norm statistics; then k random same-shape blocks are deleted at once. Drops are "
        "in percentage points of validation accuracy, averaged over the same-shape blocks; "
        "downsampling blocks are reported apart.",
        "",
        *[f"- {s}" if not s.startswith("  - ") else s for s in lesion_findings(data, table)],
        "",
        *lesion_markdown_table(table),
        "",
    ]
    for name, title in FIGURE_TITLES.items():
        lines += [f"### {title}", ""]
        lines += [f"![{title}]({name}.png)" if name in figures else "_Not drawn: no data._", ""]
    return lines
