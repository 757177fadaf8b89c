"""The report's "Skips on chosen blocks" section: what one placed skip does (`seed_vgg13`).

Drawn when a study has a net with skips on some blocks only (`model.skip_at`, net kind
`skip@<blocks>`). For each such net it answers two questions from the numbers:

* **Does the skip restore what depth cost?** Depth's cost is the plain nets' rise in
  training error from the shallowest plain net to the placed net's depth; the skip's
  gain is the plain net's error at that depth less the placed net's. Their ratio is the
  share of the cost won back (above 100%: the placed net beats the shallower plain net).
* **Does the skipped block fall back to its shortcut?** From the lesions and branch
  magnitudes of the same runs: the block *falls back* when deleting it costs less than
  `lesion_report.TOLERATE_POINTS` of validation accuracy and its branch ends smaller
  than its input (‖F(x)‖/‖x‖ < 1); it *transforms* when deleting it costs more than
  `BREAK_POINTS`, or costs more than a little while its branch is no smaller than its
  input; in between it *mixes* both. The same block of the plain and the all-residual
  net is quoted beside it.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resnet_exp.analysis.lesion_report import BREAK_POINTS, TOLERATE_POINTS, LesionData
from resnet_exp.analysis.report import (
    FLAT_POINTS,
    NOISE_SDS,
    condition_keys,
    fmt_error,
    nested,
    pooled,
)
from resnet_exp.analysis.summary import arch_order, arch_parts, with_condition

SECTION = "## Skips on chosen blocks: does one skip restore what depth cost?"


def placed_blocks(arch: str) -> list[str]:
    """The blocks of a `skip@a+b` net kind that have a skip; [] for other kinds."""
    base = arch_parts(arch)[0]
    return base.removeprefix("skip@").split("+") if base.startswith("skip@") else []


def _row(group: pd.DataFrame, depth: int, arch: str) -> pd.Series | None:
    hit = group[(group["depth"] == depth) & (group["arch"] == arch)]
    return hit.iloc[0] if len(hit) else None


def _error(row: pd.Series) -> str:
    return fmt_error(row["train_error_mean"], row["train_error_sd"]) + "%"


def _restored(group: pd.DataFrame, arch: str, depth: int) -> list[str]:
    """Depth's cost to the plain nets and the share of it the placed skip wins back."""
    placed, plain = _row(group, depth, arch), _row(group, depth, "plain")
    if placed is None or plain is None:
        return []
    blocks = ", ".join(placed_blocks(arch))
    out = [f"With a skip on {blocks} only, depth {depth} reaches {_error(placed)} training error"]
    full = _row(group, depth, "residual" + arch.removeprefix(arch_parts(arch)[0]))
    if full is not None:
        out[0] += f"; with a skip on every block, {_error(full)}"
    out[0] += f"; without skips, {_error(plain)}."
    shallower = group[(group["arch"] == "plain") & (group["depth"] < depth)]
    if shallower.empty:
        return out
    base = shallower.sort_values("depth").iloc[0]
    cost = 100 * (plain["train_error_mean"] - base["train_error_mean"])
    gain = 100 * (plain["train_error_mean"] - placed["train_error_mean"])
    seeds = int(min(placed["seeds"], plain["seeds"], base["seeds"]))
    # the spread between seeds of each difference (pooled sds); NaN with one seed
    cost_sd = 100 * pooled(plain["train_error_sd"], base["train_error_sd"])
    gain_sd = 100 * pooled(plain["train_error_sd"], placed["train_error_sd"])
    head = (
        f"Depth cost the plain nets {cost:+.1f} points of training error (depth "
        f"{int(base['depth'])}: {_error(base)}, depth {depth}: {_error(plain)})"
    )
    cost_is_noise = seeds > 1 and cost <= NOISE_SDS * cost_sd
    if not np.isfinite(cost) or cost < FLAT_POINTS:
        head += ": nothing for the skip to restore"
    elif cost_is_noise:
        head += (
            f", not more than {NOISE_SDS:g} sd between seeds ({cost_sd:.1f}): not a cost "
            f"we can claim"
        )
    elif gain >= cost:
        head += (
            f"; the one skip wins back all of it ({100 * gain / cost:.0f}%): the deeper net "
            f"with one skip trains at least as well as the shallower plain net"
        )
    else:
        head += f"; the one skip wins back {100 * gain / cost:.0f}% of it"
    judged = _judged(gain, gain_sd, seeds)
    out.append(f"{head}. At depth {depth} the skip changes it by {-gain:+.1f} points {judged}.")
    return out


def _judged(change: float, sd: float, seeds: int) -> str:
    """'(more than 2 sd between seeds, 1.2)', or why the spread is unknown."""
    if seeds < 2 or not np.isfinite(sd):
        return "(one seed each: add `seed=0,1,2` to the sweep to measure the spread)"
    more = "more" if abs(change) > NOISE_SDS * sd else "not more"
    return f"({more} than {NOISE_SDS:g} sd between seeds, {sd:.1f})"


def _block_numbers(data: LesionData, cond: str, depth: int, arch: str, block: str) -> dict:
    """Mean lesion drop (points) and branch ratio at init and end of one block of one net."""

    def of(frame: pd.DataFrame) -> pd.DataFrame:
        if frame.empty:
            return frame
        mask = (frame["condition"] == cond) & (frame["depth"] == depth) & (frame["arch"] == arch)
        return frame[mask]

    single, branches = of(data.single), of(data.branches)
    out = {"drop": np.nan, "others": np.nan, "init": np.nan, "end": np.nan}
    if not single.empty:
        out["drop"] = 100 * single.loc[single["block"] == block, "drop"].mean()
        out["others"] = 100 * single.loc[single["block"] != block, "drop"].mean()
    if not branches.empty:
        b = branches[branches["block"] == block]
        last = b.groupby("run_id")["epoch"].transform("max")
        out["init"] = b.loc[b["epoch"] == 0, "ratio"].mean()
        out["end"] = b.loc[b["epoch"] == last, "ratio"].mean()
    return out


def _fall_back(data: LesionData, cond: str, arch: str, depth: int) -> list[str]:
    """Per placed block: its lesion cost and branch ratio, the verdict, and its twins'."""
    out = []
    for block in placed_blocks(arch):
        n = _block_numbers(data, cond, depth, arch, block)
        if not (np.isfinite(n["drop"]) or np.isfinite(n["end"])):
            continue
        small_cost = np.isfinite(n["drop"]) and n["drop"] < TOLERATE_POINTS
        small_branch = np.isfinite(n["end"]) and n["end"] < 1
        if small_cost and small_branch:
            verdict = "it falls back to its shortcut"
        elif (np.isfinite(n["drop"]) and n["drop"] > BREAK_POINTS) or (
            not small_cost and np.isfinite(n["end"]) and n["end"] >= 1
        ):
            verdict = "it still transforms: the net needs what the block computes"
        else:
            verdict = "it mixes both: the net uses the block, but leans on the shortcut"
        sentence = (
            f"The skipped block {block} (depth {depth}): deleting it costs "
            f"{n['drop']:.1f} points of validation accuracy (each of the net's other blocks: "
            f"{n['others']:.1f} on average); ‖F(x)‖/‖x‖ of its branch is {n['init']:.2f} at "
            f"initialisation and {n['end']:.2f} after training: {verdict}."
        )
        twins = []
        for other, what in (("plain", "plain net"), ("residual", "net with skips everywhere")):
            t = _block_numbers(data, cond, depth, other, block)
            if np.isfinite(t["drop"]):
                ratio = "output/input" if other == "plain" else "‖F(x)‖/‖x‖"
                twins.append(
                    f"in the {what}, deleting {block} costs {t['drop']:.1f} points "
                    f"({ratio} {t['end']:.2f} after training)"
                )
        if twins:
            sentence += " For comparison, " + "; ".join(twins) + "."
        out.append(sentence.replace("nan", "–"))
    return out


def placement_section(table: pd.DataFrame, lesions: LesionData | None) -> list[str]:
    """The section's markdown lines; none unless some net has skips on chosen blocks."""
    placed = [a for a in arch_order(table["arch"]) if placed_blocks(a)]
    if not placed:
        return []
    varying = [k for k in condition_keys(table) if table[k].nunique(dropna=False) > 1]
    table = with_condition(table, varying)
    conds = list(dict.fromkeys(table["condition"]))
    lines = [SECTION, ""]
    for cond in conds:
        group = table[table["condition"] == cond]
        sentences = []
        for arch in placed:
            for depth in sorted(group.loc[group["arch"] == arch, "depth"].unique()):
                sentences += _restored(group, arch, int(depth))
                if lesions is not None:
                    sentences += _fall_back(lesions, cond, arch, int(depth))
        if lesions is None:
            sentences.append(
                "No lesions or branch magnitudes were logged (`lesion.enabled=true "
                "branches.enabled=true`), so whether the skipped block falls back is not measured."
            )
        lines += nested(cond if len(conds) > 1 else "", sentences)
    lines = [s if s.startswith(("  - ", "#", "**")) or not s else f"- {s}" for s in lines]
    return [*lines, ""]
