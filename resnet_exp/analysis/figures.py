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

No pyplot: each figure function returns a `matplotlib.figure.Figure` (or None
when the data allow none), so tests can read what is plotted from its Axes,
and `draw_all` saves them. The lines a reader compares carry a `gid` naming
what they show ("plain", "residual depth 20", "chance", "lr_drop", "diverged").
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from pathlib import Path

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
    ARCHS,
    chance_error,
    condition_columns,
    condition_order,
    with_condition,
)

ARCH_COLORS = {"plain": "#D55E00", "residual": "#0072B2"}  # Okabe-Ito vermillion / blue
ARCH_MARKERS = {"plain": "o", "residual": "s"}
ARCH_OPEN = {"plain": False, "residual": True}  # an open square never hides a filled circle
DEPTH_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "<", ">", "h")
GRAD_LABEL = "gradient norm ‖∂L/∂W‖₂"  # unicode, not mathtext: parsing that is slow
DEPTH_LABEL = "depth (weight layers)"
LR_DROP = {"color": "0.5", "linewidth": 1.0, "linestyle": (0, (1, 1.5)), "zorder": 0.8}
CHANCE = {"color": "0.35", "linewidth": 1.0, "linestyle": (0, (5, 3)), "zorder": 0.8}
LR_DROP_FACTOR = 0.5  # a drop is the rate halving or more from one epoch to the next
DODGE = 0.08  # sideways shift between plain and residual: log2 units, or x range fractions / 2
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
    rc = {"svg.fonttype": "none"}  # SVG text stays text: smaller, faster, searchable
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


def _figure(nrows: int, ncols: int, panel=(3.6, 2.8), **kw) -> tuple[Figure, np.ndarray]:
    width = max(panel[0] * ncols + 1.6, 9.0)  # never narrower than the suptitle
    fig = Figure(figsize=(width, panel[1] * nrows + 0.9), layout="constrained")
    axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
    return fig, axes


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


def dodge(x, k: int, n: int, all_depths: Sequence[int]) -> np.ndarray:
    """`x` (depths) shifted sideways for the k-th of n series, so no marker hides another."""
    x = np.asarray(x, dtype=float)
    if n < 2:
        return x
    shift = k - (n - 1) / 2
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
    ax.set_xlabel(labels[0])  # seaborn names the axes after the columns; the caller names them
    ax.set_ylabel(labels[1])
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
        if run.empty:
            continue
        ax.plot(run[x], run[y], color=color, linestyle=":", linewidth=1.1, gid="diverged")
        ax.scatter(
            run[x].iloc[-1:],
            run[y].iloc[-1:],
            marker="x",
            s=40,
            color=color,
            linewidths=1.6,
            zorder=5,
        )


def _diverged_marks(ax, points: pd.DataFrame, x: str, y: str, color) -> None:
    points = points[np.isfinite(points[y].astype(float))]
    if len(points):
        ax.scatter(points[x], points[y], marker="x", s=40, color=color, linewidths=1.6, zorder=5)


def _legend(fig: Figure, handles: list, title: str | None = None, *, right: bool = False) -> None:
    """One legend for the whole figure: below it, or (long lists) to its right."""
    if right:
        fig.legend(handles=handles, title=title, loc="outside right center", frameon=False)
    else:
        fig.legend(
            handles=handles,
            title=title,
            loc="outside lower center",
            ncol=min(len(handles), 6),
            frameon=False,
        )


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
            color=ARCH_COLORS[a],
            marker=ARCH_MARKERS[a],
            markerfacecolor="none" if ARCH_OPEN[a] else ARCH_COLORS[a],
            markeredgewidth=1.4 if ARCH_OPEN[a] else 0,
            label=a,
            linewidth=1.8,
        )
        for a in archs
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


def _arch_series(
    ax, frame: pd.DataFrame, archs: list[str], column: str, depths, *, geometric: bool, dots: bool
) -> None:
    """Per net kind: the mean over seeds against depth (dodged sideways), runs, diverged ones.

    `geometric`: a log axis, so the mean and band are geometric (see `seed_lines`).
    """
    if geometric:
        ax.set_yscale("log")
    frame = pd.concat(
        [
            a.assign(x=dodge(a["depth"], k, len(archs), depths))
            for k, a in ((k, frame[frame["arch"] == arch]) for k, arch in enumerate(archs))
        ]
    )
    colors = {arch: ARCH_COLORS[arch] for arch in archs}
    clip = None if geometric else (0, 100)
    for arch, line in seed_lines(ax, frame, "x", column, "arch", colors, clip=clip).items():
        _style(line, marker=ARCH_MARKERS[arch], open_marker=ARCH_OPEN[arch], gid=arch)
    for arch in archs:
        a = frame[frame["arch"] == arch]
        if dots:
            ax.scatter(a["x"], a[column], s=10, color=ARCH_COLORS[arch], alpha=0.45, linewidths=0)
        _diverged_marks(ax, a[a["diverged"]], "x", column, ARCH_COLORS[arch])


# ---------------------------------------------------------------- 1. depth vs gradient


def depth_vs_gradient(finals: pd.DataFrame) -> Figure | None:
    """Gradient norms of the first and last layer, and their ratio, against depth."""
    data = finals[finals["usable"] & finals["has_gradients"]]
    if data.empty or data[["grad_first_init", "grad_last_init"]].isna().all().all():
        return None
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    times = [("init", "at initialisation"), ("end", "after the last epoch")]
    panels = [
        ("grad_first", "first layer"),
        ("grad_last", "last layer"),
        ("ratio", "ratio first / last (dotted: 1)"),
    ]
    with theme():
        fig, axes = _figure(len(conds) * 2, 3, sharex=True)
        for r, (cond, (when, when_label)) in enumerate((c, t) for c in conds for t in times):
            sub = data[data["condition"] == cond]
            for c, (prefix, title) in enumerate(panels):
                ax = axes[r, c]
                column = f"{prefix}_{when}"
                _arch_series(ax, sub, archs, column, data["depth"], geometric=True, dots=False)
                ax.set_yscale("log")
                if prefix == "ratio":
                    ax.axhline(1.0, color="0.4", linewidth=0.9, linestyle=":")
                _depth_axis(ax, data["depth"])
                if r == 0:
                    ax.set_title(title)
                if c == 0:
                    ax.set_ylabel(_row_title(cond, when_label, GRAD_LABEL))
                else:
                    ax.set_ylabel("first / last" if prefix == "ratio" else "")
                if r == len(axes) - 1:
                    ax.set_xlabel(DEPTH_LABEL)
                else:
                    ax.set_xlabel("")
        # The two norm columns share one y range per row, so first vs last reads directly.
        for r in range(len(axes)):
            lows, highs = zip(*(axes[r, c].get_ylim() for c in (0, 1)), strict=True)
            for c in (0, 1):
                axes[r, c].set_ylim(min(lows), max(highs))
        drawn = what_is_drawn(data, ["condition", "arch", "depth"], "geometric sd", item="point")
        fig.suptitle(f"Gradient norm of the first and last weight layer vs depth\n({drawn})")
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any())))
        return fig


# ---------------------------------------------------------------- 2. depth vs accuracy


def depth_vs_accuracy(finals: pd.DataFrame) -> Figure | None:
    """Final training and validation error against depth, with the chance level."""
    data = finals[finals["usable"]]
    if data[["train_error", "val_error"]].isna().all().all():
        return None
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    panels = [("train_error", "training error"), ("val_error", "validation error")]
    if "test_error" in data and data["test_error"].notna().any():  # Table 6 is test error
        panels[1] = ("test_error", "test error")
    several = seed_counts(data, ["condition", "arch", "depth"])[1] > 1
    chances = []
    with theme():
        fig, axes = _figure(len(conds), 2, sharex=True, sharey=True)
        for r, cond in enumerate(conds):
            sub = data[data["condition"] == cond]
            chance = chance_error(sub)
            for c, (column, title) in enumerate(panels):
                ax = axes[r, c]
                pct = sub.assign(pct=100 * sub[column])
                _arch_series(ax, pct, archs, "pct", data["depth"], geometric=False, dots=several)
                if chance is not None:
                    chances.append(chance)
                    ax.axhline(chance, **CHANCE, gid="chance")
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
                _depth_axis(ax, data["depth"])
                if r == 0:
                    ax.set_title(f"final {title}")
                ax.set_ylabel(_row_title(cond, "", "error (%)") if c == 0 else "")
                ax.set_xlabel(DEPTH_LABEL if r == len(conds) - 1 else "")
        # One y range (the axis is shared), with room below 0 so that points at
        # 0% are drawn whole, and above the chance line for its label.
        top = max([axes[0, 0].get_ylim()[1], *(c + 8 for c in chances)])
        axes[0, 0].set_ylim(-0.04 * top, top)
        drawn = what_is_drawn(
            data, ["condition", "arch", "depth"], "sd", item="point", runs="dots: runs"
        )
        fig.suptitle(f"Final error vs depth\n({drawn})")
        extra = [CHANCE_HANDLE] if chances else []
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any()), extra))
        return fig


# ---------------------------------------------------------------- 3. and 5.: curves per epoch


def _curve_grid(
    data: pd.DataFrame,
    rows: list[tuple[str, str, str]],
    archs: list[str],
    *,
    geometric: bool,
    sharey: bool | str,
    clip: tuple[float, float] | None = None,
) -> tuple[Figure, np.ndarray, bool]:
    """Rows of (condition, column, label) x a column per net kind; a curve per depth.

    Each depth's curve is the mean of the runs that did not diverge, in the
    depth's colour and marker; diverged runs are drawn on their own. Returns
    the figure, its axes, and whether any learning-rate drop was marked.
    """
    colors, markers = depth_colors(data["depth"]), depth_markers(data["depth"])
    every = max(1, int(np.ceil(data["epoch"].nunique() / 5)))  # about 5 markers a curve
    any_drop = False
    fig, axes = _figure(len(rows), len(archs), sharex=True, sharey=sharey)
    for r, (cond, column, _label) in enumerate(rows):
        for c, arch in enumerate(archs):
            ax = axes[r, c]
            if geometric:
                ax.set_yscale("log")
            sub = data[(data["condition"] == cond) & (data["arch"] == arch)]
            order = {depth: i for i, depth in enumerate(sorted(sub["depth"].unique()))}
            steady = sub[~sub["diverged"]]
            lines = seed_lines(ax, steady, "epoch", column, "depth", colors, clip=clip, lw=1.5)
            for depth, line in lines.items():
                stagger = (order[depth] % every, every)  # neighbours' markers never coincide
                _style(line, marker=markers[depth], markevery=stagger, gid=f"{arch} depth {depth}")
            for depth, d in sub[sub["diverged"]].groupby("depth"):
                _diverged_curves(ax, d, "epoch", column, colors[int(depth)])
            any_drop |= _mark_lr_drops(ax, sub)
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if r == 0:
                ax.set_title(arch)
    return fig, axes, any_drop


def _curve_legend(fig: Figure, data: pd.DataFrame, styles: list, any_drop: bool) -> None:
    extra = list(styles)
    if data["diverged"].any():
        extra.append(DIVERGED_HANDLE)
    if any_drop:
        extra.append(LR_DROP_HANDLE)
    handles = _depth_handles(depth_colors(data["depth"]), extra, depth_markers(data["depth"]))
    _legend(fig, handles, "depth", right=True)


def training_curves(epochs: pd.DataFrame, finals: pd.DataFrame) -> Figure | None:
    """Training error per epoch, a line per depth; validation error in its own row."""
    data = epochs[epochs["usable"] & (epochs["epoch"] >= 1)]
    if "train_error" not in data or data["train_error"].notna().sum() == 0:
        return None
    cols = condition_columns(finals)
    data = with_condition(data, cols).assign(
        train_pct=lambda f: 100 * f["train_error"],
        val_pct=lambda f: 100 * f.get("val_error", np.nan),
    )
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    kinds = [("train_pct", "training error"), ("val_pct", "validation error")]
    rows = [
        (cond, column, label)
        for cond in conds
        for column, label in kinds
        if data.loc[data["condition"] == cond, column].notna().any()
    ]
    with theme():
        fig, axes, any_drop = _curve_grid(
            data, rows, archs, geometric=False, sharey=True, clip=(0, 100)
        )
        chances = []
        for r, (cond, _, label) in enumerate(rows):
            axes[r, 0].set_ylabel(_row_title(cond, "", f"{label} (%)"))
            chance = chance_error(data[data["condition"] == cond])
            for ax in axes[r]:
                ax.set_xlabel("epoch" if r == len(rows) - 1 else "")
                if chance is not None:
                    chances.append(chance)
                    ax.axhline(chance, **CHANCE, gid="chance")
        top = max([axes[0, 0].get_ylim()[1], *(c + 3 for c in chances)])
        axes[0, 0].set_ylim(-0.03 * top, top)
        steady = data[~data["diverged"]]
        drawn = what_is_drawn(steady, ["condition", "arch", "depth"], "sd")
        styles = [CHANCE_HANDLE] if chances else []
        _curve_legend(fig, data, styles, any_drop)
        fig.suptitle(f"Error during training, plain vs residual\n({drawn})")
        return fig


# ---------------------------------------------------------------- 4. gradient profile


def gradient_profile(profiles: pd.DataFrame, finals: pd.DataFrame) -> Figure | None:
    """Gradient norm of every weight layer at initialisation and at the end, per depth."""
    if profiles is None or profiles.empty:
        return None
    data = profiles[np.isfinite(profiles["grad_norm"]) & (profiles["grad_norm"] > 0)]
    if data.empty:
        return None
    last = data.groupby("run_id")["epoch"].transform("max")
    data = pd.concat(
        [
            data[data["epoch"] == 0].assign(when="at initialisation"),
            data[(data["epoch"] == last) & (last > 0)].assign(when="after the last epoch"),
        ]
    )
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    colors, markers = depth_colors(data["depth"]), depth_markers(data["depth"])
    rows = [
        (c, w)
        for c in conds
        for w in ("at initialisation", "after the last epoch")
        if ((data["condition"] == c) & (data["when"] == w)).any()
    ]
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
                if r == 0:
                    ax.set_title(arch)
                ax.set_ylabel(_row_title(cond, when, GRAD_LABEL) if c == 0 else "")
                ax.set_xlabel("layer index (0 = first weight layer)" if r == len(rows) - 1 else "")
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
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    layers = [(contract.GRAD_FIRST, "first layer"), (contract.GRAD_LAST, "last layer")]
    rows = [(c, col, label) for c in conds for col, label in layers if col in data]
    with theme():
        fig, axes, any_drop = _curve_grid(data, rows, archs, geometric=True, sharey="row")
        for r, (cond, _, label) in enumerate(rows):
            axes[r, 0].set_ylabel(_row_title(cond, label, GRAD_LABEL))
            for ax in axes[r]:
                ax.set_yscale("log")
                ax.set_xlabel("epoch (0 = initialisation)" if r == len(rows) - 1 else "")
        steady = data[~data["diverged"]]
        drawn = what_is_drawn(steady, ["condition", "arch", "depth"], "geometric sd")
        _curve_legend(fig, data, [], any_drop)
        fig.suptitle(f"First- and last-layer gradient norm during training\n({drawn})")
        return fig


def draw_all(
    epochs: pd.DataFrame,
    finals: pd.DataFrame,
    profiles: pd.DataFrame | None,
    out_dir: Path,
) -> tuple[dict[str, Path], list[str]]:
    """Draw and save every figure the data allow; return {name: png path} and why others not."""
    out_dir = Path(out_dir)
    reasons = {
        "depth_vs_gradient": "no run has gradient metrics",
        "depth_vs_accuracy": "no run has finished an epoch",
        "training_curves": "no run has finished an epoch",
        "gradient_profile": f"no run has a {contract.PROFILE_ARTIFACT} artifact",
        "gradient_dynamics": "no run has gradient metrics",
    }
    makers: dict[str, Callable[[], Figure | None]] = {
        "depth_vs_gradient": lambda: depth_vs_gradient(finals),
        "depth_vs_accuracy": lambda: depth_vs_accuracy(finals),
        "training_curves": lambda: training_curves(epochs, finals),
        "gradient_profile": lambda: gradient_profile(profiles, finals),
        "gradient_dynamics": lambda: gradient_dynamics(epochs, finals),
    }

    def saved(name: str) -> Callable[[], Path | None]:
        def make() -> Path | None:
            fig = makers[name]()
            return None if fig is None else save(fig, out_dir, name)

        return make

    return draw_each({name: saved(name) for name in FIGURES}, reasons)


def draw_each(
    makers: dict[str, Callable[[], Path | None]], reasons: dict[str, str]
) -> tuple[dict[str, Path], list[str]]:
    """Call each maker; return {name: png path} and, for the others, why they were not drawn."""
    drawn, skipped = {}, []
    for name, make in makers.items():
        try:
            path = make()
        except Exception as err:  # one figure's failure must not cost the others
            first = str(err).splitlines()[0][:160] if str(err) else ""
            skipped.append(f"{name}.png not drawn: {type(err).__name__}: {first}")
            continue
        if path is None:
            skipped.append(f"{name}.png not drawn: {reasons[name]}")
        else:
            drawn[name] = path
    return drawn, skipped
