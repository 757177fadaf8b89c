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

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.analysis.load import Study, runs_artifact
from resnet_exp.analysis.report import fmt, legend, markdown_table, nested, question_section
from resnet_exp.analysis.summary import (
    arch_order,
    arch_parts,
    condition_columns,
    with_condition,
)

# The section is drawn when a run logged one of these.
SECTION_METRICS = (
    contract.LESION_INTACT_ACCURACY,
    contract.LESION_MEAN_DROP,
    contract.BRANCH_RATIO_MEAN,
)
TOLERATE_POINTS = 5.0
BREAK_POINTS = 25.0
_RUN_COLUMNS = ["run_id", "run_name", "model", "depth", "arch", "seed", "condition"]
_BRANCH_RATIO = {"residual": "‖F(x)‖/‖x‖ of the residual branch", "plain": "block output/input"}
_BRANCH_RATIO_MIXED = "‖F(x)‖/‖x‖ (residual branch where a block has a skip, else output/input)"
_OPTIONAL = ["k_max_accuracy", "k_max", "branch_init", "branch_end"]  # need k draws, branches


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


def load_lesions(study: Study) -> LesionData:
    """Read the three artifacts of every usable run that has them."""
    runs = with_condition(study.usable, condition_columns(study.usable))[_RUN_COLUMNS]

    load = partial(runs_artifact, study, runs)
    lesioned = contract.LESION_INTACT_ACCURACY
    single = load(
        lesioned, contract.LESION_ARTIFACT, contract.LESION_COLUMNS, what="lesion figures"
    )
    multi = load(
        lesioned, contract.LESION_K_ARTIFACT, contract.LESION_K_COLUMNS, what="k-lesion figure"
    )
    branches = load(
        contract.BRANCH_RATIO_MEAN,
        contract.BRANCH_ARTIFACT,
        contract.BRANCH_COLUMNS,
        what="branch-magnitude figure",
    )
    if not single.empty:
        single["intact_accuracy"] = single["accuracy"] + single["drop"]
        single["downsampling"] = single["downsampling"].astype(bool)
    classes = study.runs["num_classes"].dropna().unique()
    num_classes = int(classes[0]) if len(classes) == 1 else None
    return LesionData(single, multi, branches, sorted(set(runs["condition"])), num_classes)


# ---------------------------------------------------------------- per-configuration numbers


_pts = partial(fmt, spec=".1f")  # percentage points
_pct = partial(fmt, spec=".1%")  # a fraction as percent


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


def _verdict(mean_drop: float) -> str:
    if mean_drop < TOLERATE_POINTS:
        return "tolerate"
    if mean_drop > BREAK_POINTS:
        return "break"
    return "partial"


def _joined(rows: pd.DataFrame, column: str, format_: Callable[[float], str] = _pts) -> str:
    return " / ".join(format_(v) for v in rows[column])


def lesion_findings(data: LesionData, table: pd.DataFrame) -> list[str]:
    """Sentences computed from `table`: does each kind of net tolerate deletions?"""
    if table.empty:
        return ["No run has lesion data (`lesion.enabled=true`), so nothing about deletions."]
    out: list[str] = []
    for cond in data.conditions:
        group = table[table["condition"] == cond]
        if group.empty:
            continue
        sentences, branches = [], []
        verdicts: dict[str, set[str]] = {}
        for arch in arch_order(group["arch"]):
            rows = group[group["arch"] == arch].sort_values("depth")
            depths = _joined(rows, "depth", str)
            verdicts[arch] = {_verdict(v) for v in rows["mean_drop"] if np.isfinite(v)}
            sentence = (
                f"{arch.capitalize()} nets (depth {depths}): deleting one same-shape block "
                f"costs {_joined(rows, 'mean_drop')} points of validation accuracy on "
                f"average (worst block {_joined(rows, 'max_drop')} points), from an "
                f"intact {_joined(rows, 'intact_accuracy', _pct)}; the lesioned nets average "
                f"{_joined(rows, 'lesioned_accuracy', _pct)}"
            )
            if data.chance:
                sentence += f" (chance: {100 * data.chance:.0f}%)"
            if rows["downsampling_drop"].notna().any():
                drops = _joined(rows, "downsampling_drop")
                sentence += f". Deleting a downsampling block costs {drops} points"
            if "k_max" in rows and rows["k_max"].notna().any():
                ks = _joined(rows, "k_max", lambda k: str(int(k)))
                sentence += (
                    f". With the most blocks deleted at once (k = {ks}) accuracy is "
                    f"{_joined(rows, 'k_max_accuracy', _pct)}"
                )
            sentences.append(sentence + ".")
            if "branch_end" in rows and rows["branch_end"].notna().any():
                branches.append(
                    f"{arch.capitalize()} nets, mean {_branch_ratio(arch)} over blocks: "
                    f"{_joined(rows, 'branch_init', '{:.2f}'.format)} at initialisation, "
                    f"{_joined(rows, 'branch_end', '{:.2f}'.format)} after training "
                    f"(depth {depths})."
                )
        sentences = [*sentences, _conclusion(verdicts), *branches]
        out += nested(cond if len(data.conditions) > 1 else "", sentences)
    return out


def _branch_ratio(arch: str) -> str:
    """What `branch_magnitude.csv`'s ratio is for this kind of net."""
    return _BRANCH_RATIO.get(arch_parts(arch)[0], _BRANCH_RATIO_MIXED)


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


def lesion_markdown_table(table: pd.DataFrame) -> list[str]:
    """The table as markdown lines, without a condition column when there is one condition."""
    if table.empty:
        return []
    t = table.reindex(columns=table.columns.union(_OPTIONAL, sort=False))
    ks = zip(t["k_max_accuracy"], t["k_max"], strict=True)
    k = [f"{_pct(a)} (k={int(k)})" if np.isfinite(k) else "–" for a, k in ks]
    frame = pd.DataFrame(
        {
            "condition": t["condition"],
            "depth": t["depth"],
            "net": t["arch"],
            "seeds": t["seeds"],
            "intact": t["intact_accuracy"].map(_pct),
            "mean drop": t["mean_drop"].map(_pts),
            "worst drop": t["max_drop"].map(_pts),
            "worst block": t["worst_block"],
            "down. drop": t["downsampling_drop"].map(_pts),
            "max k": k,
            "F/x, init": t["branch_init"].map(lambda v: fmt(v, ".2f")),
            "F/x, end": t["branch_end"].map(lambda v: fmt(v, ".2f")),
        }
    )
    if (table["condition"] == "").all():
        frame = frame.drop(columns="condition")
    lines = markdown_table(frame, text=("condition", "net", "worst block")).split("\n")
    return [*lines, "", LESION_LEGEND]


LESION_LEGEND = legend(
    ("intact", "validation accuracy with every block"),
    ("mean drop", "accuracy lost (points) deleting one same-shape block, mean over them"),
    ("worst drop", "the largest such loss, at _worst block_"),
    ("down. drop", "the mean loss deleting one downsampling block"),
    ("max k", "accuracy with the largest k random same-shape blocks deleted at once"),
    ("F/x", "‖F(x)‖/‖x‖, a block's branch over its input, mean over blocks, at initialisation "
     "and at the end"),
)  # fmt: skip


FIGURE_TITLES = {
    "lesion_single": "Accuracy after deleting one block (analogue of Veit et al. 2016, Fig. 3)",
    "lesion_k": "Error vs number of deleted blocks (analogue of Veit et al. 2016, Fig. 4)",
    "branch_magnitude": "Branch magnitude ‖F(x)‖/‖x‖ per block and depth",
}


def lesion_section(data: LesionData, figures: dict[str, object]) -> list[str]:
    """The report's "Block lesions" section, as markdown lines."""
    table = lesion_table(data)
    return question_section(
        "Block lesions: does a residual net fall back to a shallower one?",
        "After training, each block is deleted in turn (replaced by its shortcut path: the "
        "identity, or the option A/B shortcut where the shape changes; a plain block by the same "
        "path), and the net is evaluated on the validation set with its trained weights and "
        "batch-norm statistics; then k random same-shape blocks are deleted at once. Drops are "
        "in percentage points of validation accuracy, averaged over the same-shape blocks; "
        "downsampling blocks are reported apart.",
        lesion_findings(data, table),
        lesion_markdown_table(table),
        FIGURE_TITLES,
        figures,
    )
