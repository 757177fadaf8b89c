"""The study's figures: seaborn draws each mean over seeds and its band, matplotlib the rest.

Every figure shares one look: seaborn's whitegrid theme, the Okabe-Ito colours
for plain (vermillion, filled circles) vs residual (blue, open squares, dodged
sideways so that neither hides the other), viridis for depth (luminance rises
with depth) plus a marker shape per depth, log axes for anything gradient, and
the mean over seeds with a band of ± 1 sd. `seed_lines` has seaborn's
`lineplot` draw those lines and bands from the runs' own values; on a log axis
it averages the logs, so gradient norms get the geometric mean and a band of
×/÷ the geometric sd, as in `summary`. Titles say what is drawn for the data at
hand: with one seed there is no band, and the title says so. Diverged runs are
marked with an x where their numbers stop; learning-rate drops (from the logged
`lr` metric) are grey vertical lines on every per-epoch axis. When the study
varies more than depth and plain/residual (batch norm, model, ...), each such
condition gets its own row of panels. The grid of panels, reference lines,
single runs and legends are matplotlib's, on its object API.

No pyplot: each figure function (here and in `lesion_figures`) returns a
`matplotlib.figure.Figure` (or None when the data allow none), so tests can read
what is plotted from its Axes, and `draw_each` saves them. The lines a reader
compares carry a `gid` naming what they show ("plain", "residual depth 20",
"chance", "lr_drop", "diverged").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import NamedTuple

import matplotlib
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.ticker import (
    FixedLocator,
    FuncFormatter,
    LogLocator,
    MaxNLocator,
    NullLocator,
    ScalarFormatter,
)

from resnet_exp import contract
from resnet_exp.analysis.summary import (
    arch_order,
    chance_error,
    condition_columns,
    condition_order,
    with_condition,
)


class ArchStyle(NamedTuple):
    color: str
    marker: str
    open: bool  # an open marker never hides a filled one


# Okabe-Ito colours: plain vermillion, residual blue (its inits: sky blue, reddish purple);
# skips on some blocks take the spares, in the order `arch_order` gives them.
ARCH_STYLES = {
    "plain": ArchStyle("#D55E00", "o", False),
    "residual": ArchStyle("#0072B2", "s", True),
    "residual-skipinit": ArchStyle("#56B4E9", "^", True),
    "residual-fixup": ArchStyle("#CC79A7", "D", True),
}
SPARE_STYLES = (
    ArchStyle("#009E73", "v", False),
    ArchStyle("#E69F00", "P", False),
    ArchStyle("#000000", "X", False),
    ArchStyle("#999999", "h", True),
    ArchStyle("#F0E442", "<", False),
)
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
GRAD_LABEL = "gradient norm ‖∂L/∂W‖₂"  # unicode, not mathtext: parsing that is slow
DEPTH_LABEL = "depth (weight layers)"
LR_DROP = {"color": "0.5", "linewidth": 1.0, "linestyle": (0, (1, 1.5)), "zorder": 0.8}
CHANCE = {"color": "0.35", "linewidth": 1.0, "linestyle": (0, (5, 3)), "zorder": 0.8}
LR_DROP_FACTOR = 0.5  # a drop is the rate halving or more from one epoch to the next
DODGE = 0.08  # sideways shift between plain and residual: log2 units, or x range fractions / 2
BY_CONFIG = ["condition", "arch", "depth"]  # what one plotted point or curve averages over
FORMATS = ("png", "svg")
FIGURES = (
    "depth_vs_gradient",
    "depth_vs_accuracy",
    "training_curves",
    "gradient_profile",
    "gradient_dynamics",
)


@contextmanager
def theme():
    """The one style of every figure."""
    rc = {"svg.fonttype": "none"}  # SVG written under the theme keeps text as text
    with (
        sns.axes_style("whitegrid"),
        sns.plotting_context("paper", font_scale=1.15),
        matplotlib.rc_context(rc),
    ):
        yield


def depth_colors(depths: Sequence[int]) -> dict[int, tuple]:
    """Viridis from dark to light-green (its pale yellow end is hard to see on white).

    Its luminance rises steadily with depth, so the order reads in grey too;
    `depth_markers` tells neighbours apart where the hues are close.
    """
    depths = sorted(set(int(d) for d in depths))
    colors = sns.color_palette("viridis", as_cmap=True)(np.linspace(0.0, 0.85, len(depths)))
    return {d: tuple(c) for d, c in zip(depths, colors, strict=True)}


def depth_markers(depths: Sequence[int]) -> dict[int, str]:
    """A marker shape per depth, in depth order."""
    depths = sorted(set(int(d) for d in depths))
    return {d: DEPTH_MARKERS[i % len(DEPTH_MARKERS)] for i, d in enumerate(depths)}


def archs_in(frame: pd.DataFrame) -> list[str]:
    """The net kinds in `frame`, plain first (`summary.arch_order`)."""
    return arch_order(frame["arch"])


def arch_styles(archs: Sequence[str]) -> dict[str, ArchStyle]:
    """A style per net kind: fixed ones for plain and residual nets, spares for the rest in
    order, so no two kinds in one figure look alike."""
    spares = iter(SPARE_STYLES * (1 + len(archs) // len(SPARE_STYLES)))
    return {a: ARCH_STYLES[a] if a in ARCH_STYLES else next(spares) for a in arch_order(archs)}


def _with_conditions(
    data: pd.DataFrame, finals: pd.DataFrame
) -> tuple[pd.DataFrame, list[str], list[str]]:
    """`data` with its condition column (what varies across `finals`), its conditions in
    config order, and its net kinds."""
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    return data, conds, archs_in(data)


def at_init_and_end(
    frame: pd.DataFrame, conds: Sequence[str], end: str
) -> tuple[pd.DataFrame, list[tuple[str, str]]]:
    """Each run's rows at initialisation and at its last epoch (if it trained), labelled in
    `when`; and the (condition, when) rows of panels that have data, in order."""
    last = frame.groupby("run_id")["epoch"].transform("max")
    frame = pd.concat(
        [
            frame[frame["epoch"] == 0].assign(when="at initialisation"),
            frame[(frame["epoch"] == last) & (last > 0)].assign(when=end),
        ]
    )
    rows = [
        (cond, when)
        for cond in conds
        for when in ("at initialisation", end)
        if ((frame["condition"] == cond) & (frame["when"] == when)).any()
    ]
    return frame, rows


def _figure(nrows: int, ncols: int, panel=(3.6, 2.8), **kw) -> tuple[Figure, np.ndarray]:
    width = max(panel[0] * ncols + 1.6, 9.0)  # never narrower than the suptitle
    fig = Figure(figsize=(width, panel[1] * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


def label_grid(
    axes: np.ndarray, titles: Sequence[str], ylabels: Sequence[str], xlabel: str
) -> None:
    """Column titles on the top row, a y label per row on the first column, x labels below."""
    for ax, title in zip(axes[0], titles, strict=True):
        ax.set_title(title)
    for ax, ylabel in zip(axes[:, 0], ylabels, strict=True):
        ax.set_ylabel(ylabel)
    for ax in axes[-1]:
        ax.set_xlabel(xlabel)


def save(fig: Figure, out_dir: Path, name: str) -> Path:
    """Write `name`.png (150 dpi) and the vector copy; return the PNG path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    for ax in fig.axes:
        if ax.get_yscale() == "log":
            _log_ticks(ax)
    for i, fmt in enumerate(FORMATS):
        fig.savefig(out_dir / f"{name}.{fmt}", dpi=150 if fmt == "png" else None)
        if i == 0:  # the layout is solved; keep it rather than solve it again (slow)
            fig.set_layout_engine("none")
    return out_dir / f"{name}.png"


_SUPERSCRIPT = str.maketrans("-0123456789", "⁻⁰¹²³⁴⁵⁶⁷⁸⁹")


def _power_of_ten(value: float, _pos=None) -> str:
    """10⁻³ in unicode: mathtext tick labels cost more to draw than everything else."""
    if value <= 0:
        return ""
    exponent = np.log10(value)
    if abs(exponent - round(exponent)) > 1e-9:
        return f"{value:g}"
    exponent = int(round(exponent))
    if exponent in (0, 1):
        return f"{10**exponent:g}"
    return "10" + str(exponent).translate(_SUPERSCRIPT)


def _log_ticks(ax) -> None:
    """Readable log ticks: decades when the data spans several, else 1-2-5 steps in decimals.

    Minor ticks are dropped: seaborn's grid does not show them, and matplotlib
    spends most of its drawing time on them.
    """
    lo, hi = ax.get_ylim()
    decades = np.log10(hi / lo) if lo > 0 and hi > lo else 0.0
    if decades < 2.5:
        ax.yaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    else:
        ax.yaxis.set_major_locator(LogLocator(base=10, numticks=8))
        ax.yaxis.set_major_formatter(FuncFormatter(_power_of_ten))
    ax.yaxis.set_minor_locator(NullLocator())


def _log_depths(depths: Sequence[int]) -> bool:
    """A log2 depth axis when the depths span a factor of 4 or more."""
    depths = sorted(set(int(d) for d in depths))
    return len(depths) > 1 and depths[-1] / max(depths[0], 1) >= 4


def _depth_axis(ax, depths: Sequence[int]) -> None:
    """Depths as ticks; a log2 axis when they span a factor of 4 or more."""
    depths = sorted(set(int(d) for d in depths))
    if _log_depths(depths):
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(depths))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    if len(depths) == 1:
        ax.set_xlim(depths[0] * 0.8, depths[0] * 1.2)


def dodge(x, k, n: int, all_depths: Sequence[int]) -> np.ndarray:
    """`x` (depths) shifted sideways for the k-th of n series (k: one or per value), so no
    marker hides another."""
    x, shift = np.asarray(x, dtype=float), np.asarray(k) - (n - 1) / 2
    if _log_depths(all_depths):
        return x * 2 ** (DODGE * shift)
    depths = sorted(set(int(d) for d in all_depths))
    width = depths[-1] - depths[0] if len(depths) > 1 else 0.4 * depths[0]
    return x + DODGE / 2 * width * shift


BAND = {"alpha": 0.18, "linewidth": 0}


def _sd_band(clip: tuple[float, float] | None):
    """seaborn's `errorbar`: mean ± 1 sd over seeds, clipped to `clip` when given."""
    if clip is None:
        return ("sd", 1)

    def band(values: pd.Series) -> tuple[float, float]:
        centre, sd = values.mean(), values.std()
        return float(np.clip(centre - sd, *clip)), float(np.clip(centre + sd, *clip))

    return band


def seed_lines(
    ax,
    frame: pd.DataFrame,
    x: str,
    y: str,
    hue: str,
    colors: dict,
    *,
    clip: tuple[float, float] | None = None,
    lw: float = 1.8,
) -> dict:
    """The mean over seeds of `y` against `x`, a line per `hue` level in `colors`, and a
    band of ± 1 sd: drawn by seaborn's `lineplot`. Returns {level: its Line2D}.

    On a log y axis (set it first) seaborn averages the logs, so the line is the
    geometric mean and the band ×/÷ the geometric sd, as `summary` reports
    gradient norms. Non-finite values (and, on a log axis, non-positive ones) are
    left out; where one value remains there is no band. `clip` bounds the band
    (errors stay within 0-100%).
    """
    values = frame[y].to_numpy(dtype=float)
    keep = np.isfinite(values) & ((values > 0) if ax.get_yscale() == "log" else True)
    data = frame.loc[keep, [x, y, hue]]
    levels = [level for level in colors if level in set(data[hue])]
    if not levels:
        return {}
    before, labels = len(ax.lines), (ax.get_xlabel(), ax.get_ylabel())
    sns.lineplot(
        data=data,
        x=x,
        y=y,
        hue=hue,
        hue_order=levels,
        palette={level: colors[level] for level in levels},
        errorbar=_sd_band(clip),
        err_kws=BAND,
        linewidth=lw,
        legend=False,
        ax=ax,
    )
    ax.set(xlabel=labels[0], ylabel=labels[1])  # seaborn names them after the columns
    return dict(zip(levels, ax.lines[before:], strict=True))


def _style(line, *, marker=None, open_marker: bool = False, markevery=None, gid=None) -> None:
    """A seaborn line's marker (filled, or open so that it never hides another) and gid."""
    color = line.get_color()
    line.set_marker(marker or "")
    line.set_markersize(5.5 if open_marker else 5)
    line.set_markerfacecolor("none" if open_marker else color)
    line.set_markeredgecolor(color)
    line.set_markeredgewidth(1.4 if open_marker else 0)
    line.set_markevery(markevery)
    line.set_gid(gid)


def _diverged_curves(ax, runs: pd.DataFrame, x: str, y: str, color) -> None:
    """Each diverged run on its own (thin, dotted), with an x at its last finite point.

    Curves over epochs average the runs that did not diverge: a diverged run
    would drag the mean to its blow-up and then vanish from it.
    """
    for _, run in runs.groupby("run_id"):
        run = run[np.isfinite(run[y].astype(float))].sort_values(x)
        if len(run):
            ax.plot(run[x], run[y], color=color, linestyle=":", linewidth=1.1, gid="diverged")
            _diverged_marks(ax, run.iloc[-1:], x, y, color)


def _diverged_marks(ax, points: pd.DataFrame, x: str, y: str, color) -> None:
    points = points[np.isfinite(points[y].astype(float))]
    if len(points):
        ax.scatter(points[x], points[y], marker="x", s=40, color=color, linewidths=1.6, zorder=5)


def _legend(fig: Figure, handles: list, title: str | None = None, *, right: bool = False) -> None:
    """One legend for the whole figure: below it, or (long lists) to its right."""
    where = {"loc": "outside lower center", "ncol": min(len(handles), 6)}
    if right:
        where = {"loc": "outside right center"}
    fig.legend(handles=handles, title=title, frameon=False, **where)


DIVERGED_HANDLE = Line2D(
    [],
    [],
    color="0.3",
    marker="x",
    linestyle=":",
    linewidth=1.1,
    label="diverged run\n(not in the mean)",
)
LR_DROP_HANDLE = Line2D(
    [], [], **{**LR_DROP, "zorder": 1}, label="learning-rate drop\n(epochs after it\nstart lower)"
)
CHANCE_HANDLE = Line2D([], [], **{**CHANCE, "zorder": 1}, label="chance (1 - 1/classes)")


def _arch_handles(archs: Sequence[str], diverged: bool, extra: Sequence[Line2D] = ()) -> list:
    handles = [
        Line2D(
            [],
            [],
            color=style.color,
            marker=style.marker,
            markerfacecolor="none" if style.open else style.color,
            markeredgewidth=1.4 if style.open else 0,
            label=a,
            linewidth=1.8,
        )
        for a, style in arch_styles(archs).items()
    ]
    if diverged:
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="", label="diverged run"))
    return handles + list(extra)


def _depth_handles(
    colors: dict[int, tuple],
    extra: Sequence[Line2D] = (),
    markers: dict[int, str] | None = None,
) -> list:
    markers = markers or {}
    handles = [
        Line2D([], [], color=c, marker=markers.get(d), markersize=5, linewidth=2, label=str(d))
        for d, c in colors.items()
    ]
    if extra:
        handles.append(Line2D([], [], linestyle="", label=""))  # a gap before the styles
    return handles + list(extra)


def _row_title(cond: str, what: str, unit: str = "") -> str:
    head = f"{cond} · {what}" if cond and what else cond or what
    return f"{head}\n{unit}" if unit else head


def seed_counts(frame: pd.DataFrame, by: Sequence[str]) -> tuple[int, int]:
    """The fewest and the most runs (seeds) behind one plotted point or curve."""
    counts = frame.groupby(list(by))["run_id"].nunique()
    return (int(counts.min()), int(counts.max())) if len(counts) else (0, 0)


def what_is_drawn(
    frame: pd.DataFrame, by: Sequence[str], band: str, *, item: str = "line", runs: str = ""
) -> str:
    """The caption's honest part: a mean and band only where there are seeds to show them."""
    lo, hi = seed_counts(frame, by)
    if hi <= 1:
        return f"one seed: each {item} is one run, no spread to show"
    seeds = f"{hi} seeds" if lo == hi else f"{lo} to {hi} seeds"
    text = f"mean over {seeds}, band: {band}" + (f", {runs}" if runs else "")
    return text + ("; no band where there is one seed" if lo == 1 else "")


def lr_drops(frame: pd.DataFrame) -> list[int]:
    """Epochs that start at half the learning rate of the epoch before, or less.

    From the logged `lr` metric (the rate at each epoch's start), so a step
    schedule's drops are found whatever its milestones; a smooth (cosine) decay
    is marked only where it halves the rate within one epoch.
    """
    if "epoch_lr" not in frame:
        return []
    lr = frame[["run_id", "epoch", "epoch_lr"]].dropna().sort_values(["run_id", "epoch"])
    before = lr.groupby("run_id").shift()
    drop = (lr["epoch_lr"] <= LR_DROP_FACTOR * before["epoch_lr"]) & (
        lr["epoch"] == before["epoch"] + 1
    )
    return sorted(int(e) for e in lr.loc[drop, "epoch"].unique())


def _mark_lr_drops(ax, runs: pd.DataFrame) -> bool:
    """A vertical line where each drop's epoch starts (x = epoch - 1); True if any."""
    drops = lr_drops(runs)
    for epoch in drops:
        ax.axvline(epoch - 1, **LR_DROP, gid="lr_drop")
    return bool(drops)


def _chance_lines(
    axes: np.ndarray, chances: Sequence[float | None], above: float, below: float, *, text: bool
) -> None:
    """Each row's chance level (error %; None: unknown) on its panels, labelled if `text`.

    The shared y axis then reaches `above` points over the highest chance and
    `below` (a fraction of its top) under 0, so that points at 0% are drawn whole.
    """
    for row, chance in zip(axes, chances, strict=True):
        if chance is None:
            continue
        for ax in row:
            ax.axhline(chance, **CHANCE, gid="chance")
            if text:
                ax.text(
                    0.01,
                    chance,
                    f"chance {chance:.0f}%",
                    transform=ax.get_yaxis_transform(),
                    ha="left",
                    va="bottom",
                    fontsize=8,
                    color=CHANCE["color"],
                )
    top = max([axes[0, 0].get_ylim()[1], *(c + above for c in chances if c is not None)])
    axes[0, 0].set_ylim(-below * top, top)


def _arch_series(
    ax, frame: pd.DataFrame, archs: list[str], column: str, depths, *, geometric: bool, dots: bool
) -> None:
    """Per net kind: the mean over seeds against `depths` (dodged sideways), runs, diverged
    ones; and the depth axis.

    `geometric`: a log axis, so the mean and band are geometric (see `seed_lines`).
    """
    if geometric:
        ax.set_yscale("log")
    frame = frame.assign(
        x=dodge(frame["depth"], frame["arch"].map(archs.index), len(archs), depths)
    )
    styles = arch_styles(archs)
    colors = {arch: style.color for arch, style in styles.items()}
    clip = None if geometric else (0, 100)
    for arch, line in seed_lines(ax, frame, "x", column, "arch", colors, clip=clip).items():
        _style(line, marker=styles[arch].marker, open_marker=styles[arch].open, gid=arch)
    for arch in archs:
        a = frame[frame["arch"] == arch]
        if dots:
            ax.scatter(a["x"], a[column], s=10, color=colors[arch], alpha=0.45, linewidths=0)
        _diverged_marks(ax, a[a["diverged"]], "x", column, colors[arch])
    _depth_axis(ax, depths)


# ---------------------------------------------------------------- 1. depth vs gradient


def depth_vs_gradient(finals: pd.DataFrame) -> Figure | None:
    """Gradient norms of the first and last layer, and their ratio, against depth."""
    data = finals[finals["usable"] & finals["has_gradients"]]
    if data.empty or data[["grad_first_init", "grad_last_init"]].isna().all().all():
        return None
    data, conds, archs = _with_conditions(data, finals)
    times = [("init", "at initialisation"), ("end", "after the last epoch")]
    panels = [
        ("grad_first", "first layer"),
        ("grad_last", "last layer"),
        ("ratio", "ratio first / last (dotted: 1)"),
    ]
    rows = [(cond, when, label) for cond in conds for when, label in times]
    with theme():
        fig, axes = _figure(len(rows), 3, sharex=True)
        for r, (cond, when, _) in enumerate(rows):
            sub = data[data["condition"] == cond]
            for c, (prefix, _) in enumerate(panels):
                ax = axes[r, c]
                column = f"{prefix}_{when}"
                _arch_series(ax, sub, archs, column, data["depth"], geometric=True, dots=False)
                if prefix == "ratio":
                    ax.axhline(1.0, color="0.4", linewidth=0.9, linestyle=":")
        ylabels = [_row_title(cond, label, GRAD_LABEL) for cond, _, label in rows]
        label_grid(axes, [title for _, title in panels], ylabels, DEPTH_LABEL)
        for ax in axes[:, 2]:
            ax.set_ylabel("first / last")
        # The two norm columns share one y range per row, so first vs last reads directly.
        for norms in axes[:, :2]:
            lows, highs = zip(*(ax.get_ylim() for ax in norms), strict=True)
            for ax in norms:
                ax.set_ylim(min(lows), max(highs))
        drawn = what_is_drawn(data, BY_CONFIG, "geometric sd", item="point")
        fig.suptitle(f"Gradient norm of the first and last weight layer vs depth\n({drawn})")
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any())))
        return fig


# ---------------------------------------------------------------- 2. depth vs accuracy


def depth_vs_accuracy(finals: pd.DataFrame) -> Figure | None:
    """Final training and validation error against depth, with the chance level."""
    data = finals[finals["usable"]]
    if data[["train_error", "val_error"]].isna().all().all():
        return None
    data, conds, archs = _with_conditions(data, finals)
    panels = [("train_error", "training error"), ("val_error", "validation error")]
    if "test_error" in data and data["test_error"].notna().any():  # Table 6 is test error
        panels[1] = ("test_error", "test error")
    several = seed_counts(data, BY_CONFIG)[1] > 1
    chances = [chance_error(data[data["condition"] == cond]) for cond in conds]
    with theme():
        fig, axes = _figure(len(conds), 2, sharex=True, sharey=True)
        for r, cond in enumerate(conds):
            sub = data[data["condition"] == cond]
            for c, (column, _) in enumerate(panels):
                pct = sub.assign(pct=100 * sub[column])
                _arch_series(
                    axes[r, c], pct, archs, "pct", data["depth"], geometric=False, dots=several
                )
        _chance_lines(axes, chances, 8, 0.04, text=True)
        ylabels = [_row_title(cond, "", "error (%)") for cond in conds]
        label_grid(axes, [f"final {title}" for _, title in panels], ylabels, DEPTH_LABEL)
        drawn = what_is_drawn(data, BY_CONFIG, "sd", item="point", runs="dots: runs")
        fig.suptitle(f"Final error vs depth\n({drawn})")
        extra = [CHANCE_HANDLE] if any(c is not None for c in chances) else []
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any()), extra))
        return fig


# ---------------------------------------------------------------- 3. and 5.: curves per epoch


def _curve_grid(
    data: pd.DataFrame,
    rows: list[tuple[str, str, str]],
    title: str,
    xlabel: str,
    *,
    geometric: bool = False,
    chances: Sequence[float | None] | None = None,
) -> Figure:
    """Rows of (condition, column, y label) x a column per net kind; a curve per depth.

    Each depth's curve is the mean of the runs that did not diverge, in the
    depth's colour and marker; diverged runs are drawn on their own. Errors
    (`geometric` False) share one y axis, with each row's chance level; gradient
    norms (a log axis) get a y range per row.
    """
    archs = archs_in(data)
    colors, markers = depth_colors(data["depth"]), depth_markers(data["depth"])
    every = max(1, int(np.ceil(data["epoch"].nunique() / 5)))  # about 5 markers a curve
    any_drop = False
    with theme():
        fig, axes = _figure(len(rows), len(archs), sharex=True, sharey="row" if geometric else True)
        for r, (cond, column, _) in enumerate(rows):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                if geometric:
                    ax.set_yscale("log")
                sub = data[(data["condition"] == cond) & (data["arch"] == arch)]
                order = {depth: i for i, depth in enumerate(sorted(sub["depth"].unique()))}
                steady = sub[~sub["diverged"]]
                clip = None if geometric else (0, 100)
                lines = seed_lines(ax, steady, "epoch", column, "depth", colors, clip=clip, lw=1.5)
                for depth, line in lines.items():
                    stagger = (order[depth] % every, every)  # neighbours' markers never coincide
                    gid = f"{arch} depth {depth}"
                    _style(line, marker=markers[depth], markevery=stagger, gid=gid)
                for depth, d in sub[sub["diverged"]].groupby("depth"):
                    _diverged_curves(ax, d, "epoch", column, colors[int(depth)])
                any_drop |= _mark_lr_drops(ax, sub)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        label_grid(axes, archs, [label for *_, label in rows], xlabel)
        extra = []
        if chances is not None:
            _chance_lines(axes, chances, 3, 0.03, text=False)
            if any(c is not None for c in chances):
                extra.append(CHANCE_HANDLE)
        if data["diverged"].any():
            extra.append(DIVERGED_HANDLE)
        if any_drop:
            extra.append(LR_DROP_HANDLE)
        _legend(fig, _depth_handles(colors, extra, markers), "depth", right=True)
        steady = data[~data["diverged"]]
        drawn = what_is_drawn(steady, BY_CONFIG, "geometric sd" if geometric else "sd")
        fig.suptitle(f"{title}\n({drawn})")
        return fig


def training_curves(epochs: pd.DataFrame, finals: pd.DataFrame) -> Figure | None:
    """Training error per epoch, a line per depth; validation error in its own row."""
    data = epochs[epochs["usable"] & (epochs["epoch"] >= 1)]
    if "train_error" not in data or data["train_error"].notna().sum() == 0:
        return None
    data, conds, _ = _with_conditions(data, finals)
    data = data.assign(
        train_pct=lambda f: 100 * f["train_error"],
        val_pct=lambda f: 100 * f.get("val_error", np.nan),
    )
    kinds = [("train_pct", "training error"), ("val_pct", "validation error")]
    rows = [
        (cond, column, _row_title(cond, "", f"{label} (%)"))
        for cond in conds
        for column, label in kinds
        if data.loc[data["condition"] == cond, column].notna().any()
    ]
    chances = [chance_error(data[data["condition"] == cond]) for cond, *_ in rows]
    title = "Error during training, a column per kind of net"
    return _curve_grid(data, rows, title, "epoch", chances=chances)


# ---------------------------------------------------------------- 4. gradient profile


def gradient_profile(profiles: pd.DataFrame, finals: pd.DataFrame) -> Figure | None:
    """Gradient norm of every weight layer at initialisation and at the end, per depth."""
    if profiles is None or profiles.empty:
        return None
    data = profiles[np.isfinite(profiles["grad_norm"]) & (profiles["grad_norm"] > 0)]
    if data.empty:
        return None
    data, conds, archs = _with_conditions(data, finals)
    data, rows = at_init_and_end(data, conds, "after the last epoch")
    colors, markers = depth_colors(data["depth"]), depth_markers(data["depth"])
    with theme():
        # A y range per row: norms at init and after training differ by orders of
        # magnitude, and a shared range left half of each row empty.
        fig, axes = _figure(len(rows), len(archs), sharex=True, sharey="row")
        for r, (cond, when) in enumerate(rows):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                sub = data[
                    (data["condition"] == cond) & (data["when"] == when) & (data["arch"] == arch)
                ]
                ax.set_yscale("log")  # before drawing: seaborn then averages the logs
                lines = seed_lines(ax, sub, "layer_index", "grad_norm", "depth", colors, lw=1.4)
                for i, (depth, line) in enumerate(lines.items()):
                    every = max(1, depth // 5)
                    mark = {"marker": markers[depth], "markevery": (i % every, every)}
                    _style(line, **mark, gid=f"{arch} depth {depth}")
        ylabels = [_row_title(cond, when, GRAD_LABEL) for cond, when in rows]
        label_grid(axes, archs, ylabels, "layer index (0 = first weight layer)")
        drawn = what_is_drawn(data, ["condition", "when", "arch", "depth"], "geometric sd")
        fig.suptitle(f"Gradient norm through the network, per depth\n({drawn})")
        _legend(fig, _depth_handles(colors, markers=markers), "depth", right=True)
        return fig


# ---------------------------------------------------------------- 5. gradient dynamics


def gradient_dynamics(epochs: pd.DataFrame, finals: pd.DataFrame) -> Figure | None:
    """First- and last-layer gradient norms at every epoch (0 = initialisation)."""
    if contract.GRAD_FIRST not in epochs:
        return None
    data = epochs[epochs["usable"] & epochs["has_gradients"]]
    if data.empty:
        return None
    data, conds, _ = _with_conditions(data, finals)
    layers = [(contract.GRAD_FIRST, "first layer"), (contract.GRAD_LAST, "last layer")]
    rows = [
        (c, col, _row_title(c, label, GRAD_LABEL))
        for c in conds
        for col, label in layers
        if col in data
    ]
    title = "First- and last-layer gradient norm during training"
    return _curve_grid(data, rows, title, "epoch (0 = initialisation)", geometric=True)


def draw_all(
    epochs: pd.DataFrame,
    finals: pd.DataFrame,
    profiles: pd.DataFrame | None,
    out_dir: Path,
) -> tuple[dict[str, Path], list[str]]:
    """Draw and save every figure the data allow; return {name: png path} and why others not."""
    no_gradients, no_epoch = "no run has gradient metrics", "no run has finished an epoch"
    no_profile = f"no run has a {contract.PROFILE_ARTIFACT} artifact"
    makers = {
        "depth_vs_gradient": (lambda: depth_vs_gradient(finals), no_gradients),
        "depth_vs_accuracy": (lambda: depth_vs_accuracy(finals), no_epoch),
        "training_curves": (lambda: training_curves(epochs, finals), no_epoch),
        "gradient_profile": (lambda: gradient_profile(profiles, finals), no_profile),
        "gradient_dynamics": (lambda: gradient_dynamics(epochs, finals), no_gradients),
    }
    return draw_each({name: makers[name] for name in FIGURES}, out_dir)


def draw_each(
    makers: dict[str, tuple[Callable[[], Figure | None], str]],
    out_dir: Path,
) -> tuple[dict[str, Path], list[str]]:
    """Draw and save each figure; return {name: png path} and, for the others, why not.

    `makers` maps a figure's name to (what draws it, why it would draw none);
    the files are written under `theme`, so SVG text stays text.
    """
    drawn, skipped = {}, []
    for name, (make, reason) in makers.items():
        try:
            fig = make()
            if fig is None:
                skipped.append(f"{name}.png not drawn: {reason}")
                continue
            with theme():
                drawn[name] = save(fig, Path(out_dir), name)
        except Exception as err:  # one figure's failure must not cost the others
            first = str(err).partition("\n")[0][:160]
            skipped.append(f"{name}.png not drawn: {type(err).__name__}: {first}")
    return drawn, skipped
