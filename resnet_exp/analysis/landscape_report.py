"""What a study's curvature and loss landscapes show (issue 18): the report's "Curvature and
loss landscape" section, its sentences computed from the numbers `landscape_data` reads
back from MLflow; the figures are in `landscape_figures`.

The question is whether the skip keeps the surface smooth as depth grows. Two
published answers are checked against the numbers, never assumed:

* Li et al. (2018, Fig. 5): plain nets' surfaces turn chaotic with depth, residual
  nets' stay smooth. Read here as: does the sharpness or the non-convex fraction
  rise from the shallowest to the deepest net, for each kind of net?
* Yao et al. (2020, PyHessian): residual connections make the Hessian smoother (a
  lower top eigenvalue and trace) for deep nets only, and batch norm matters.
  Read here as: plain vs residual at the deepest and the shallowest depth both
  have, and, when the study varies batch norm alone, BN vs no BN.

A change is a trend only when it is larger than `RISE_FACTOR` (sharpness,
eigenvalue, trace: loss-curvature scales span decades, so a ratio) or
`NONCONVEX_POINTS` (a fraction of the grid), and larger than the noise we can see:
`NOISE_SDS` sds between seeds (pooled over the two ends, as `report` does), and for
the trace also `NOISE_SDS` of Hutchinson's standard errors. With one seed the spread
between seeds is unknown, and the sentence says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial

import numpy as np
import pandas as pd

from resnet_exp.analysis.landscape_data import (
    MEASURES,
    LandscapeData,
    converged_flags,
    landscape_table,
)
from resnet_exp.analysis.report import (
    NOISE_SDS,
    fmt,
    legend,
    markdown_table,
    nested,
    pooled,
    question_section,
)
from resnet_exp.analysis.summary import arch_order, condition_label

# A ratio below 1.5 between two nets is not called a difference: one random direction
# (sharpness), one batch (eigenvalue, trace) and one seed move these numbers by tens of
# percent, and a factor is what a log axis shows. Also the report's gradient-ratio factor.
RISE_FACTOR = 1.5
# A non-convex fraction must move by 10 points of the grid: Li et al.'s chaotic
# surfaces are non-convex over much of the plane, smooth ones almost nowhere, while
# float32 noise and the rim of a bounded bowl flip a few isolated points.
NONCONVEX_POINTS = 0.10
# A net whose loss after training is still above half its loss at initialisation has not
# descended into a basin (a plain net too deep to train): its surface and Hessian are
# those of a point on a slope, not of a minimum, and Li et al. and Yao et al. measured
# minima. Such nets are named, so a trend that rests on them is read as what it is.
UNTRAINED_LOSS_FRACTION = 0.5
LANDSCAPE_MEASURES = ("sharpness", "nonconvexity")  # Li et al.'s claim
HESSIAN_MEASURES = ("top_eig_end", "trace_end")  # Yao et al.'s
_BN_WORDS = {
    "lower": "lower with BN",
    "higher": "higher with BN",
    "similar": "similar",
    "noise": "within the noise",
}


# ---------------------------------------------------------------- verdicts


def compare(a: float, b: float, measure: str, noise: float = math.nan) -> str:
    """How `b` stands to `a`: "similar" (a change under `RISE_FACTOR`, or under
    `NONCONVEX_POINTS` for the non-convex fraction), "noise" (larger, but within
    `noise`), else "higher" or "lower".

    The factor is taken on the larger magnitude, (b - a) / max(|a|, |b|) against
    1 - 1/RISE_FACTOR, which is b/a >= RISE_FACTOR for positive numbers and still means
    something when an estimate is 0 or negative (a trace, a sharpness off a minimum).
    """
    delta = b - a
    if measure == "nonconvexity":
        size, bound = delta, NONCONVEX_POINTS
    else:
        scale = max(abs(a), abs(b))
        size, bound = (delta / scale if scale > 0 else 0.0), 1 - 1 / RISE_FACTOR
    if abs(size) < bound:
        return "similar"
    if np.isfinite(noise) and abs(delta) <= noise:
        return "noise"
    return "higher" if size > 0 else "lower"


def _noise(rows: pd.DataFrame, measure: str) -> tuple[float, str]:
    """The change noise could explain between the rows' configurations, and what it is
    (NaN, "" when unmeasured: one seed and no standard error)."""
    found: list[tuple[float, str]] = []
    if (rows["seeds"] > 1).all():
        found.append((NOISE_SDS * pooled(*rows[f"{measure}_sd"]), "the spread between seeds"))
    if measure == "trace_end" and rows["trace_end_se"].notna().all():
        se = float(np.sqrt((rows["trace_end_se"] ** 2).sum()))
        found.append((NOISE_SDS * se, "the trace's standard error"))
    found = [(n, why) for n, why in found if np.isfinite(n)]
    return max(found) if found else (math.nan, "")


@dataclass
class Trend:
    """One measure of one kind of net over depth, shallowest vs deepest."""

    measure: str
    depths: list[int]
    values: list[float]
    noise: float  # NaN: not measured (one seed)
    why_noise: str

    @property
    def verdict(self) -> str:
        """single (one depth); rise / fall / flat; noise (within `noise`)."""
        if len(self.depths) < 2:
            return "single"
        change = compare(self.values[0], self.values[-1], self.measure, self.noise)
        return {"higher": "rise", "lower": "fall", "similar": "flat"}.get(change, change)

    def words(self) -> str:
        """E.g. 'sharpness 0.02 / 0.9 (rises x45 from depth 8 to 56)'."""
        values = " / ".join(_format(self.measure, v) for v in self.values)
        text = f"{MEASURES[self.measure]} {values}"
        verdict, ends = self.verdict, f"from depth {self.depths[0]} to {self.depths[-1]}"
        a, b = self.values[0], self.values[-1]
        if verdict == "single":
            return text
        if verdict == "noise":
            return f"{text} (no change beyond {self.why_noise} {ends})"
        if verdict == "flat":
            bound = (
                f"{100 * NONCONVEX_POINTS:.0f} points"
                if self.measure == "nonconvexity"
                else f"a factor {RISE_FACTOR:g}"
            )
            return f"{text} (flat: within {bound} {ends})"
        if self.measure == "nonconvexity":
            size = f"{100 * (b - a):+.0f} points"
        else:
            size = f"x{b / a:.3g}" if a > 0 and b > 0 else f"{b - a:+.3g}"
        caveat = "; one seed, spread unknown" if not np.isfinite(self.noise) else ""
        return f"{text} ({verdict}s {size} {ends}{caveat})"


def _format(measure: str, value: float) -> str:
    return fmt(100 * value, ".0f") + "%" if measure == "nonconvexity" else fmt(value, ".3g")


def depth_trend(rows: pd.DataFrame, measure: str) -> Trend | None:
    """The trend of `measure` over the depths `rows` (one kind of net, one condition) has."""
    rows = rows[np.isfinite(rows[measure].astype(float))].sort_values("depth")
    if rows.empty:
        return None
    noise, why = _noise(rows.iloc[[0, -1]], measure) if len(rows) > 1 else (math.nan, "")
    depths = [int(d) for d in rows["depth"]]
    return Trend(measure, depths, [float(v) for v in rows[measure]], noise, why)


def _names(trends: list[Trend]) -> str:
    return " and ".join(MEASURES[t.measure] for t in trends)


def li_verdict(trends: dict[str, dict[str, Trend]]) -> str:
    """Do plain nets' surfaces sharpen with depth while residual nets' do not?"""
    plain = [trends.get("plain", {}).get(m) for m in LANDSCAPE_MEASURES]
    res = [trends.get("residual", {}).get(m) for m in LANDSCAPE_MEASURES]
    plain, res = [t for t in plain if t], [t for t in res if t]
    claim = "plain surfaces turn chaotic as depth grows, residual ones stay smooth"
    if not (plain and res):
        return (
            f"Li et al. (2018) ({claim}) is not tested: no landscape of both plain and residual "
            f"nets (`landscape.enabled=true`)."
        )
    if all(t.verdict == "single" for t in plain + res):
        return (
            f"With one depth ({plain[0].depths[0]}) no depth trend can be read, so Li et al. "
            f"(2018) ({claim}) is not tested here."
        )
    plain_up = [t for t in plain if t.verdict == "rise"]
    res_up = [t for t in res if t.verdict == "rise"]
    if plain_up and not res_up:
        return (
            f"As Li et al. (2018) found, with depth the plain nets' {_names(plain_up)} "
            f"{_rise(plain_up)} and the residual nets' do not."
        )
    parts = []
    if not plain_up:
        parts.append(f"with depth the plain nets' {_names(plain)} {_rise(plain, 'not')}")
    if res_up:
        parts.append(f"with depth the residual nets' {_names(res_up)} {_rise(res_up)} too")
    return f"Here the data disagree with Li et al. (2018) ({claim}): " + "; ".join(parts) + "."


def _rise(trends: list[Trend], negation: str = "") -> str:
    """The verb for one measure or several: "rises", "rise", "does not rise"."""
    if negation:
        return "does not rise" if len(trends) == 1 else "do not rise"
    return "rises" if len(trends) == 1 else "rise"


def _gap(table: pd.DataFrame, depth: int, measure: str) -> tuple[str, str] | None:
    """(how residual stands to plain at `depth`, the numbers quoted), if both have them."""
    rows = table[(table["depth"] == depth) & np.isfinite(table[measure].astype(float))]
    rows = rows.set_index("arch")
    if not {"plain", "residual"} <= set(rows.index):
        return None
    pair = rows.loc[["plain", "residual"]]
    noise, _ = _noise(pair, measure)
    plain, res = pair[measure]
    quoted = f"{MEASURES[measure]} {_format(measure, res)} vs {_format(measure, plain)}"
    return compare(plain, res, measure, noise), quoted


def yao_verdict(table: pd.DataFrame) -> str:
    """Is the residual nets' Hessian smoother than the plain nets' for deep nets only?"""
    claim = "skips give deep nets, and only deep nets, a lower top eigenvalue and trace"
    archs = table.dropna(subset=list(HESSIAN_MEASURES), how="all")
    shared = sorted(
        set(archs.loc[archs["arch"] == "plain", "depth"])
        & set(archs.loc[archs["arch"] == "residual", "depth"])
    )
    if not shared:
        return (
            f"Yao et al. (2020) ({claim}) is not tested: no curvature of both plain and "
            f"residual nets at one depth (`curvature.enabled=true`)."
        )

    def at(depth: int) -> tuple[set[str], str]:
        gaps = [g for g in (_gap(table, depth, m) for m in HESSIAN_MEASURES) if g]
        quoted = ", ".join(q for _, q in gaps)
        return {g for g, _ in gaps}, f"at depth {depth}, residual vs plain: {quoted}"

    deep, deep_text = at(shared[-1])
    smoother = "lower" in deep and "higher" not in deep
    if len(shared) == 1:
        said = "smoother" if smoother else "not smoother"
        return (
            f"The residual nets' Hessian is {said} than the plain nets' ({deep_text}). With "
            f"one depth, whether the gap is for deep nets only, as Yao et al. (2020) found, "
            f"cannot be read."
        )
    shallow, shallow_text = at(shared[0])
    if smoother and "lower" not in shallow:
        return (
            f"As Yao et al. (2020) found, the skip gives the deepest nets a smoother Hessian "
            f"and the shallowest ones not ({deep_text}; {shallow_text})."
        )
    if smoother:
        return (
            f"As Yao et al. (2020) found, the residual nets' Hessian is smoother at the "
            f"deepest depth ({deep_text}); unlike their deep-nets-only finding, it is smoother "
            f"at the shallowest depth too ({shallow_text})."
        )
    return (
        f"Here the data disagree with Yao et al. (2020) ({claim}): the residual nets' "
        f"Hessian is not smoother at the deepest depth ({deep_text}; {shallow_text})."
    )


def bn_verdict(data: LandscapeData, table: pd.DataFrame) -> str | None:
    """BN vs no BN at the shallowest and deepest depth, when the study varies batch norm
    alone. Yao et al. (2020) found that BN smooths deep nets and not necessarily shallow
    ones, so only the deepest depth can disagree with them."""
    if data.condition_columns != ["batch_norm"]:
        return None
    bn, no_bn = (condition_label({"batch_norm": v}, ["batch_norm"]) for v in (True, False))
    measure = "top_eig_end"
    parts, lowered, not_lowered = [], [], []
    for arch in arch_order(table["arch"]):
        rows = table[(table["arch"] == arch) & np.isfinite(table[measure].astype(float))]
        both = sorted(
            set(rows.loc[rows["condition"] == bn, "depth"])
            & set(rows.loc[rows["condition"] == no_bn, "depth"])
        )
        for depth in sorted({both[0], both[-1]}) if both else []:
            pair = rows[rows["depth"] == depth].set_index("condition").loc[[no_bn, bn]]
            without, with_ = pair[measure]
            found = compare(without, with_, measure, _noise(pair, measure)[0])
            parts.append(
                f"{arch} nets at depth {depth}: {_format(measure, with_)} with BN vs "
                f"{_format(measure, without)} without ({_BN_WORDS[found]})"
            )
        if both:  # `found` and `depth` are the deepest's, the last of the loop
            (lowered if found == "lower" else not_lowered).append(f"{arch} nets (depth {depth})")
    if not parts:
        return None
    text = f"Batch norm and the {MEASURES[measure]}: " + "; ".join(parts) + "."
    if lowered:
        text += (
            f" At the deepest depth BN lowers it for the {', '.join(lowered)}, as Yao et al. "
            f"(2020) found for deep nets."
        )
    if not_lowered:
        text += (
            f" At the deepest depth BN does not lower it for the {', '.join(not_lowered)}, "
            f"unlike Yao et al. (2020) for deep nets."
        )
    return text


def landscape_findings(data: LandscapeData, table: pd.DataFrame) -> list[str]:
    """Sentences computed from `table`: per kind of net the trends over depth, then what
    they say about Li et al. (2018) and Yao et al. (2020)."""
    if table.empty:
        return ["No run has curvature or landscape numbers, so nothing about smoothness."]
    out: list[str] = []
    for cond in data.conditions:
        group = table[table["condition"] == cond]
        if group.empty:
            continue
        sentences = []
        trends: dict[str, dict[str, Trend]] = {}
        for arch in arch_order(group["arch"]):
            rows = group[group["arch"] == arch]
            found = {m: depth_trend(rows, m) for m in MEASURES}
            trends[arch] = {m: t for m, t in found.items() if t is not None}
            if trends[arch]:
                depths = " / ".join(str(int(d)) for d in sorted(rows["depth"]))
                said = "; ".join(t.words() for t in trends[arch].values())
                sentences.append(f"{arch.capitalize()} nets (depth {depths}): {said}.")
        sentences += [li_verdict(trends), yao_verdict(group)]
        out += nested(cond if len(data.conditions) > 1 else "", sentences)
    bn = bn_verdict(data, table)
    notes = [_initialisation(data), _untrained(data)]
    return out + ([bn] if bn else []) + [n for n in notes if n] + _measurement_notes(data)


def _initialisation(data: LandscapeData) -> str | None:
    """The sign of the dominant curvature at initialisation and how its size grows with
    depth per kind of net: power iteration returns the eigenvalue of largest magnitude,
    which there is often negative (the loss curves down: a saddle, not a minimum)."""
    runs = data.per_run.dropna(subset=["top_eig_init"]) if "top_eig_init" in data.per_run else None
    if runs is None or runs.empty:
        return None
    if "top_eig_converged_init" in runs:  # an unconverged estimate's sign is not measured
        flags = runs["top_eig_converged_init"]
        runs = runs[flags.isna() | converged_flags(flags)]
    left_out = len(data.per_run.dropna(subset=["top_eig_init"])) - len(runs)
    if runs.empty:
        return None
    negative = int((runs["top_eig_init"] < 0).sum())
    text = (
        f"At initialisation the eigenvalue of largest magnitude is negative in {negative} of "
        f"{len(runs)} nets"
        + (" (the loss curves down: a saddle)" if negative else "")
        + (f", {left_out} more not converged" if left_out else "")
    )
    growth = []
    for arch in arch_order(runs["arch"]):
        size = runs[runs["arch"] == arch].groupby("depth")["top_eig_init"].mean().abs()
        if len(size) > 1 and size.iloc[0] > 0:
            growth.append(
                f"x{size.iloc[-1] / size.iloc[0]:.3g} for {arch} nets from depth "
                f"{int(size.index[0])} to {int(size.index[-1])}"
            )
    return text + ("; its magnitude changes " + ", ".join(growth) if growth else "") + "."


def _untrained(data: LandscapeData) -> str | None:
    """The nets that did not train (`UNTRAINED_LOSS_FRACTION`)."""
    runs = data.per_run
    if "batch_loss_init" not in runs:
        return None
    after = runs["centre_loss"].fillna(runs.get("batch_loss_end"))
    stuck = runs[after > UNTRAINED_LOSS_FRACTION * runs["batch_loss_init"]]
    if stuck.empty:
        return None
    names = ", ".join(
        f"{r.run_name} (loss {_g(a)} after training, {_g(r.batch_loss_init)} at init)"
        for r, a in zip(stuck.itertuples(), after[stuck.index], strict=True)
    )
    return (
        f"Not trained: {names}. Its numbers after training are those of a point on a slope, "
        "not of a minimum as in Li et al. and Yao et al.; a depth trend that rests on it "
        "compares unlike points."
    )


def _measurement_notes(data: LandscapeData) -> list[str]:
    """How batch norm ran in the curvature, and estimates that did not converge."""
    out = []
    none = pd.Series(dtype=object)
    modes = {
        when: sorted(data.per_run.get(f"bn_mode_{when}", none).dropna().astype(str).unique())
        for when in ("init", "end")
    }
    if modes["init"] and modes["end"] and modes["init"] != modes["end"]:
        out.append(
            f"The curvature at initialisation was measured with batch norm in "
            f"{' / '.join(modes['init'])} mode, after training in {' / '.join(modes['end'])} "
            f"mode (`curvature.bn_mode`): init and end are the curvatures of two different "
            f"functions, compare them with care."
        )
    converged = data.curvature.get("top_eig_converged", none).dropna()
    failed = int((~converged_flags(converged)).sum())
    if failed:
        out.append(
            f"{failed} of {len(converged)} top-eigenvalue estimates (marked {UNCONVERGED} in "
            "the table) did not converge within `curvature.iterations`: power iteration "
            "oscillates when eigenvalues of opposite signs have similar magnitudes, so even "
            "the sign of such an estimate is not measured; raise `curvature.iterations`."
        )
    return out


# ---------------------------------------------------------------- the section

_g = partial(fmt, spec=".3g")


def _with_spread(mean: pd.Series, spread: pd.Series) -> list[str]:
    return [
        _g(m) + (f" ± {s:.2g}" if np.isfinite(s) else "") for m, s in zip(mean, spread, strict=True)
    ]


UNCONVERGED = "(n.c.)"  # a top eigenvalue whose power iteration did not converge


def _eigenvalues(t: pd.DataFrame, when: str) -> list[str]:
    """The mean top eigenvalue at `when`, with its sd, marked where it did not converge."""
    spread = t.get(f"top_eig_{when}_sd", pd.Series(np.nan, index=t.index))
    values = _with_spread(t[f"top_eig_{when}"], spread)
    done = t.get(f"top_eig_{when}_converged", pd.Series(True, index=t.index))
    return [v if ok else f"{v} {UNCONVERGED}" for v, ok in zip(values, done, strict=True)]


def landscape_markdown_table(table: pd.DataFrame) -> list[str]:
    """The table as markdown lines, without a condition column when there is one condition."""
    if table.empty:
        return []
    t = table
    # the trace's spread: sd between seeds, else Hutchinson's standard error
    trace_spread = t["trace_end_sd"].fillna(t["trace_end_se"])
    frame = pd.DataFrame(
        {
            "condition": t["condition"],
            "depth": t["depth"],
            "net": t["arch"],
            "seeds": t["seeds"],
            "eig, init": _eigenvalues(t, "init"),
            "eig, end": _eigenvalues(t, "end"),
            "trace, end": _with_spread(t["trace_end"], trace_spread),
            "sharpness": _with_spread(t["sharpness"], t["sharpness_sd"]),
            "non-convex": [_format("nonconvexity", v) for v in t["nonconvexity"]],
            "loss": t["centre_loss"].map(_g),
        }
    )
    if (table["condition"] == "").all():
        frame = frame.drop(columns="condition")
    return [*markdown_table(frame, text=("condition", "net")).split("\n"), "", LANDSCAPE_LEGEND]


LANDSCAPE_LEGEND = legend(
    ("eig", f"the Hessian's eigenvalue of largest magnitude, at initialisation and after "
     f"training ({UNCONVERGED}: power iteration did not converge)"),
    ("trace, end", "the Hessian's trace after training"),
    ("sharpness", "the loss rise half a span from the trained weights"),
    ("non-convex", "the share of the surface that curves down"),
    ("loss", "the subset's loss at the trained weights, the surface's centre"),
)  # fmt: skip


FIGURE_TITLES = {
    "landscape_contours": "Loss surfaces around the trained weights (analogue of Li et al. "
    "2018, Fig. 5)",
    "landscape_slices": "The loss along one filter-normalised direction, per depth",
    "curvature_depth": "Hessian top eigenvalue and trace vs depth (cf. Yao et al. 2020)",
}


def landscape_section(data: LandscapeData, figures: dict[str, object]) -> list[str]:
    """The report's "Curvature and loss landscape" section, as markdown lines."""
    table = landscape_table(data)
    return question_section(
        "Curvature and loss landscape: does the skip keep the surface smooth as depth grows?",
        "The Hessian of the data loss on a fixed batch: its top eigenvalue (power iteration) "
        "and trace (Hutchinson), at initialisation and after training. Around the trained "
        "weights, the loss along filter-normalised random directions (Li et al. 2018): "
        "sharpness is the mean loss rise at half the span on both sides of the centre, "
        "(L(-r) + L(r)) / 2 - L(0), in loss units; the non-convex fraction is the share of "
        "the plane's interior grid points where the surface curves down (its 2x2 "
        "finite-difference Hessian has an eigenvalue below -1% of the largest on the "
        "surface). Values are means over seeds (± sd between seeds; for the trace with one "
        "seed, ± Hutchinson's standard error).",
        landscape_findings(data, table),
        landscape_markdown_table(table),
        FIGURE_TITLES,
        figures,
    )
