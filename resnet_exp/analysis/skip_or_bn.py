"""The report's "Skip or batch norm?" section: which of the two makes depth trainable.

Drawn when a study varies batch norm and has plain and residual nets (`bn_ablation`).
Every net kind of each batch-norm setting gets a verdict from the summary table:

* **diverged**: every run of its deepest depth diverged;
* **chance**: its deepest net ends within `CHANCE_POINTS` of guessing;
* **degrades**: its training error rises with depth (`report.ErrorChange`'s rise, with
  the same noise rules as the findings);
* **holds**: none of these; depth costs it nothing we can tell from noise.

The answer is read off the verdicts: BN without skips (plain + BN), skips without BN
(residual, no BN, per initialisation), both, neither. The literature check compares
Fixup's and SkipInit's validation error at the deepest depth with the residual net
with BN: Zhang et al. (2019, Table 2) report Fixup within about a point of it on
CIFAR-10 (ResNet-110: 7.24% vs 6.61% test error), De and Smith (2020) SkipInit close
to it at moderate batch sizes. A gap beyond `LITERATURE_POINTS` (or the seeds'
noise, when larger) is said to disagree.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from resnet_exp.analysis.report import (
    CHANCE_POINTS,
    NOISE_SDS,
    error_change,
    fmt_error,
    fmt_num,
    legend,
    markdown_table,
    pooled,
)
from resnet_exp.analysis.summary import arch_order, arch_parts

LITERATURE_POINTS = 2.0  # Fixup/SkipInit vs BN: "within about a point", with a point of slack
INIT_NAMES = {"standard": "", "skipinit": "SkipInit", "fixup": "Fixup"}
SECTION = "## Skip or batch norm?"
VERBS = {  # a verdict as the verb of "plain nets with BN ..."
    "diverged": "diverge",
    "chance": "end at chance",
    "degrades": "train worse with depth",
    "holds": "hold up with depth",
    "unknown": "cannot be judged (too few depths left)",
}


def applies(table: pd.DataFrame) -> bool:
    """Batch norm varies, and there are plain nets and nets with skips."""
    if "batch_norm" not in table or table["batch_norm"].nunique() < 2:
        return False
    kinds = {arch_parts(a)[0] for a in table["arch"]}
    return "plain" in kinds and len(kinds) > 1


def net_name(arch: str, batch_norm: bool) -> str:
    """'residual, no BN, Fixup'."""
    base, init = arch_parts(arch)
    parts = [base, "BN" if batch_norm else "no BN", INIT_NAMES.get(init, init)]
    return ", ".join(p for p in parts if p)


def _verdict(rows: pd.DataFrame, chance: float | None) -> tuple[str, str]:
    """(diverged | chance | degrades | holds | unknown, the numbers behind it) for one net."""
    rows = rows.sort_values("depth")
    deepest = rows.iloc[-1]
    if deepest["diverged"] and deepest["diverged"] == deepest["runs"]:
        hit = rows[rows["diverged"] > 0]
        where = [
            f"{int(r.depth)}" + ("" if r.diverged == r.runs else f" ({r.diverged} of {r.runs})")
            for r in hit.itertuples()
        ]
        return "diverged", f"runs diverged at depth {', '.join(where)}"
    error = 100 * deepest["train_error_mean"]
    at = f"{fmt_error(deepest['train_error_mean'], deepest['train_error_sd'])}% training error"
    at += f" at depth {int(deepest['depth'])}"
    if chance is not None and np.isfinite(error) and error >= chance - CHANCE_POINTS:
        return "chance", f"{at}, chance level"
    change = error_change(rows[rows["diverged"] == 0], "")
    if change is None:
        return "unknown", at
    words = f"{change.at('a')} to {change.at('b')}"
    if change.verdict == "rise":
        return "degrades", f"{words}: {change.change()}"
    qualifier = {
        "noise": ", no more than the spread between seeds",
        "unknown": ", under the few points one seed cannot tell from noise",
    }.get(change.verdict, "")
    return "holds", f"{words}: {change.change()}{qualifier}"


def _error_grid(table: pd.DataFrame, nets: list[tuple[bool, str]]) -> list[str]:
    """Training error (%) per net and depth, 'diverged' where every run did."""
    depths = sorted(table["depth"].unique())
    rows = []
    for bn, arch in nets:
        cells = []
        for depth in depths:
            hit = table[(table["batch_norm"] == bn) & (table["arch"] == arch)]
            hit = hit[hit["depth"] == depth]
            if hit.empty:
                cells.append("")
                continue
            r = hit.iloc[0]
            cell = fmt_error(r["train_error_mean"], r["train_error_sd"])
            if r["diverged"] == r["runs"]:
                cell = "diverged"
            elif r["diverged"]:
                cell += f" ({r['diverged']} diverged)"
            cells.append(cell)
        ratio = table[(table["batch_norm"] == bn) & (table["arch"] == arch)].sort_values("depth")
        init = f"{fmt_num(ratio['ratio_init'].iloc[0])} to {fmt_num(ratio['ratio_init'].iloc[-1])}"
        rows.append([net_name(arch, bn), *cells, init])
    columns = ["net", *[f"depth {int(d)}" for d in depths], "ratio, init"]
    table = markdown_table(pd.DataFrame(rows, columns=columns), text=("net",)).splitlines()
    meaning = "training error, %, mean ± sd over seeds"
    ratio = "first/last gradient ratio at initialisation, shallowest to deepest net"
    return [*table, "", legend(("depth N", meaning), ("ratio, init", ratio))]


def _answer(verdicts: dict[tuple[bool, str], tuple[str, str]]) -> list[str]:
    """Which of skip and BN is needed, from the verdicts."""

    def said(net: tuple[bool, str]) -> str:
        verdict, numbers = verdicts[net]
        return f"{VERBS[verdict]} ({numbers})"

    holds = {net for net, (v, _) in verdicts.items() if v == "holds"}
    failed = {net for net, (v, _) in verdicts.items() if v in ("diverged", "chance", "degrades")}
    bn_only, both, neither = (True, "plain"), (True, "residual"), (False, "plain")
    standard = (False, "residual")
    skip_holds = [net for net in verdicts if not net[0] and net[1] != "plain" and net in holds]
    out = []
    if bn_only in failed:
        out.append(f"Batch norm without skips is not enough: plain nets with BN {said(bn_only)}.")
    elif bn_only in holds:
        out.append(
            f"Batch norm alone keeps depth trainable here: plain nets with BN {said(bn_only)}."
        )
    if skip_holds:
        nets = "; ".join(f"{net_name(a, bn)}: {verdicts[(bn, a)][1]}" for bn, a in skip_holds)
        out.append(f"Skips without batch norm hold up with depth in {nets}.")
    if standard in verdicts and standard not in holds:
        out.append(
            f"Residual nets without BN from the standard initialisation {said(standard)}: each "
            f"block adds its branch to its input, so the signal grows with depth unless the "
            f"branches start small, which is what SkipInit and Fixup (and batch norm) arrange."
        )
    if both in verdicts:
        out.append(f"With both, residual nets with BN {said(both)}.")
    if neither in verdicts:
        out.append(f"With neither, plain nets {said(neither)}.")
    if skip_holds and bn_only in failed:
        out.append(
            "So on these data it is the skip that makes depth trainable, not batch norm; what "
            "the skip needs besides is branches that start small, which batch norm gives "
            "residual nets and SkipInit and Fixup give them without it."
        )
    elif not skip_holds and bn_only in failed and both in holds:
        out.append("So on these data depth needs both, the skip and batch norm together.")
    elif bn_only in holds and skip_holds:
        out.append("So on these data either one keeps depth trainable: skip or batch norm.")
    return out


def _literature(table: pd.DataFrame) -> list[str]:
    """Fixup and SkipInit against the residual net with BN, as the papers compare them."""
    deepest = table["depth"].max()
    at = table[table["depth"] == deepest]
    ref = at[(at["batch_norm"]) & (at["arch"] == "residual")]
    if ref.empty:
        return []
    ref = ref.iloc[0]
    out = []
    for init, claim in (
        ("fixup", "Zhang et al. (2019) report Fixup within about a point of BN"),
        ("skipinit", "De and Smith (2020) report SkipInit close to BN"),
    ):
        rows = at[(~at["batch_norm"].astype(bool)) & (at["arch"] == f"residual-{init}")]
        if rows.empty:
            continue
        r = rows.iloc[0]
        gap = 100 * (r["val_error_mean"] - ref["val_error_mean"])
        if not np.isfinite(gap):
            continue
        spread = 100 * pooled(r["val_error_sd"], ref["val_error_sd"])
        allowed = max(LITERATURE_POINTS, NOISE_SDS * spread if np.isfinite(spread) else 0.0)
        noise = f", sd between seeds {spread:.1f}" if np.isfinite(spread) else ", one seed"
        if allowed > LITERATURE_POINTS:
            verdict = (
                f"These seeds cannot test the claim: {NOISE_SDS:g} sd between them is "
                f"{allowed:.1f} points, more than the paper's margin of about a point"
            )
        elif gap > allowed:
            verdict = (
                f"The data disagree: {INIT_NAMES[init]} is worse by more than {allowed:.1f} points"
            )
        elif gap < -allowed:
            verdict = (
                f"The data agree and go further: {INIT_NAMES[init]} is better by more than "
                f"{allowed:.1f} points"
            )
        else:
            verdict = f"The data agree: the two are within {allowed:.1f} points"
        out.append(
            f"{claim}; here, at depth {int(deepest)}, {INIT_NAMES[init]} reaches "
            f"{fmt_error(r['val_error_mean'], r['val_error_sd'])}% validation error against "
            f"{fmt_error(ref['val_error_mean'], ref['val_error_sd'])}% with BN: a gap of "
            f"{gap:+.1f} points{noise}. {verdict}."
        )
    return out


def skip_or_bn_section(table: pd.DataFrame, chance: float | None) -> list[str]:
    """The section's markdown lines; none unless the study varies BN and has both kinds."""
    if not applies(table):
        return []
    nets = [
        (bn, arch)
        for bn in (True, False)
        for arch in arch_order(table.loc[table["batch_norm"] == bn, "arch"])
    ]
    verdicts = {
        (bn, arch): _verdict(table[(table["batch_norm"] == bn) & (table["arch"] == arch)], chance)
        for bn, arch in nets
    }
    lines = [
        SECTION,
        "",
        "Final training error (%, mean ± sd over seeds) of each net at each depth, and its "
        "first/last gradient ratio at initialisation from the shallowest to the deepest net. "
        "A net *holds* when depth costs it no training error beyond the noise rules of the "
        "findings above, *degrades* when it does, and fails when its deepest runs diverge or "
        "end at chance.",
        "",
        *_error_grid(table, nets),
        "",
    ]
    notes = _answer(verdicts) + _literature(table)
    if any(arch_parts(a)[1] == "fixup" for _, a in nets):
        notes.append(
            "Fixup's first/last ratio at initialisation is 0 (a dash above): its classifier "
            "starts at zero, so the first step's gradient reaches the classifier only."
        )
    lines += [f"- {s}" for s in notes]
    return [*lines, ""]
