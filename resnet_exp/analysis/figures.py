"""The study's figures, drawn with seaborn on matplotlib's object API.

Every figure shares one look: seaborn's whitegrid theme, the Okabe-Ito colours
for plain (vermillion) vs residual (blue), viridis for depth (both readable with
the common colour-vision deficiencies), log axes for anything gradient, and the
mean over seeds with a band for the spread (sd for errors, geometric sd for
gradient norms; see `summary`). Diverged runs are marked with an x where their
numbers stop. When the study varies more than depth and plain/residual (batch
norm, model, ...), each such condition gets its own row of panels.

No pyplot: figures are `matplotlib.figure.Figure` objects, so importing this
module changes no global backend state, and saving works without a display.
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

from resnet_exp.analysis.summary import (
    ARCHS,
    aggregate,
    condition_columns,
    condition_order,
    with_condition,
)

ARCH_COLORS = {"plain": "#D55E00", "residual": "#0072B2"}  # Okabe-Ito vermillion / blue
ARCH_MARKERS = {"plain": "o", "residual": "s"}
GRAD_LABEL = "gradient norm ‖∂L/∂W‖₂"  # unicode, not mathtext: parsing that is slow
DEPTH_LABEL = "depth (weight layers)"
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
    """Viridis from dark to light-green (its pale yellow end is hard to see on white)."""
    depths = sorted(set(int(d) for d in depths))
    colors = sns.color_palette("viridis", as_cmap=True)(np.linspace(0.0, 0.85, len(depths)))
    return {d: tuple(c) for d, c in zip(depths, colors, strict=True)}


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


def _depth_axis(ax, depths: Sequence[int]) -> None:
    """Depths as ticks; a log2 axis when they span a factor of 4 or more."""
    depths = sorted(set(int(d) for d in depths))
    if len(depths) > 1 and depths[-1] / max(depths[0], 1) >= 4:
        ax.set_xscale("log", base=2)
    ax.xaxis.set_major_locator(FixedLocator(depths))
    ax.xaxis.set_major_formatter(ScalarFormatter())
    ax.xaxis.set_minor_locator(NullLocator())
    if len(depths) == 1:
        ax.set_xlim(depths[0] * 0.8, depths[0] * 1.2)


def _band(ax, x, lo, hi, color) -> None:
    ok = np.isfinite(lo) & np.isfinite(hi)
    if ok.any():
        ax.fill_between(
            np.asarray(x)[ok],
            np.asarray(lo)[ok],
            np.asarray(hi)[ok],
            color=color,
            alpha=0.18,
            linewidth=0,
        )


def _line(
    ax,
    agg: pd.DataFrame,
    x: str,
    color,
    *,
    marker=None,
    linestyle="-",
    lw=1.8,
    band=True,
    clip: tuple[float, float] | None = None,
) -> None:
    """The centre line of `aggregate`'s output, and its spread band (clipped to `clip`)."""
    agg = agg.sort_values(x)
    if agg.empty:
        return
    # ax.plot, not sns.lineplot: the data are already aggregated, and lineplot
    # costs ~75 ms a call, which made a 6-depth study take half a minute to draw.
    ax.plot(
        agg[x].to_numpy(),
        agg["centre"].to_numpy(),
        color=color,
        marker=marker,
        linestyle=linestyle,
        linewidth=lw,
        markersize=5,
        markeredgewidth=0,
    )
    if band:
        lo, hi = agg["lo"].to_numpy(), agg["hi"].to_numpy()
        if clip:
            lo, hi = np.clip(lo, *clip), np.clip(hi, *clip)
        _band(ax, agg[x].to_numpy(), lo, hi, color)


def _diverged_curves(ax, runs: pd.DataFrame, x: str, y: str, color) -> None:
    """Each diverged run on its own (thin, dotted), with an x at its last finite point.

    Curves over epochs average the runs that did not diverge: a diverged run
    would drag the mean to its blow-up and then vanish from it.
    """
    for _, run in runs.groupby("run_id"):
        run = run[np.isfinite(run[y].astype(float))].sort_values(x)
        if run.empty:
            continue
        ax.plot(run[x], run[y], color=color, linestyle=":", linewidth=1.1)
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


def _arch_handles(archs: Sequence[str], diverged: bool) -> list:
    handles = [
        Line2D([], [], color=ARCH_COLORS[a], marker=ARCH_MARKERS[a], label=a, linewidth=1.8)
        for a in archs
    ]
    if diverged:
        handles.append(Line2D([], [], color="0.3", marker="x", linestyle="", label="diverged run"))
    return handles


def _depth_handles(colors: dict[int, tuple], extra: Sequence[Line2D] = ()) -> list:
    handles = [Line2D([], [], color=c, linewidth=2, label=str(d)) for d, c in colors.items()]
    if extra:
        handles.append(Line2D([], [], linestyle="", label=""))  # a gap before the styles
    return handles + list(extra)


def _row_title(cond: str, what: str, unit: str = "") -> str:
    head = f"{cond} · {what}" if cond and what else cond or what
    return f"{head}\n{unit}" if unit else head


# ---------------------------------------------------------------- 1. depth vs gradient


def depth_vs_gradient(finals: pd.DataFrame, out_dir: Path) -> Path | None:
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
                for arch in archs:
                    a = sub[sub["arch"] == arch]
                    agg = aggregate(a, ["depth"], column, geometric=True)
                    _line(ax, agg, "depth", ARCH_COLORS[arch], marker=ARCH_MARKERS[arch])
                    _diverged_marks(ax, a[a["diverged"]], "depth", column, ARCH_COLORS[arch])
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
        fig.suptitle(
            "Gradient norm of the first and last weight layer vs depth "
            "(mean over seeds, band: geometric sd)"
        )
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any())))
        return save(fig, out_dir, "depth_vs_gradient")


# ---------------------------------------------------------------- 2. depth vs accuracy


def depth_vs_accuracy(finals: pd.DataFrame, out_dir: Path) -> Path | None:
    """Final training and validation error against depth."""
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
    with theme():
        fig, axes = _figure(len(conds), 2, sharex=True, sharey=True)
        for r, cond in enumerate(conds):
            sub = data[data["condition"] == cond]
            for c, (column, title) in enumerate(panels):
                ax = axes[r, c]
                for arch in archs:
                    a = sub[sub["arch"] == arch].assign(pct=lambda f, col=column: 100 * f[col])
                    agg = aggregate(a, ["depth"], "pct", geometric=False)
                    _line(ax, agg, "depth", ARCH_COLORS[arch], marker=ARCH_MARKERS[arch])
                    ax.scatter(
                        a["depth"],
                        a["pct"],
                        s=10,
                        color=ARCH_COLORS[arch],
                        alpha=0.45,
                        linewidths=0,
                    )
                    _diverged_marks(ax, a[a["diverged"]], "depth", "pct", ARCH_COLORS[arch])
                _depth_axis(ax, data["depth"])
                if r == 0:
                    ax.set_title(f"final {title}")
                ax.set_ylabel(_row_title(cond, "", "error (%)") if c == 0 else "")
                ax.set_xlabel(DEPTH_LABEL if r == len(conds) - 1 else "")
        for ax in axes.flat:  # after all panels are drawn: the y axis is shared
            ax.set_ylim(bottom=0)
        fig.suptitle("Final error vs depth (line: mean over seeds, band: sd, dots: runs)")
        _legend(fig, _arch_handles(archs, bool(data["diverged"].any())))
        return save(fig, out_dir, "depth_vs_accuracy")


# ---------------------------------------------------------------- 3. training curves


def _per_depth_curves(
    fig: Figure,
    axes: np.ndarray,
    data: pd.DataFrame,
    conds: list[str],
    archs: list[str],
    colors: dict[int, tuple],
    draw: Callable,
) -> None:
    for r, cond in enumerate(conds):
        for c, arch in enumerate(archs):
            ax = axes[r, c]
            sub = data[(data["condition"] == cond) & (data["arch"] == arch)]
            for depth in sorted(sub["depth"].unique()):
                draw(ax, sub[sub["depth"] == depth], colors[int(depth)])
            if r == 0:
                ax.set_title(arch)


def training_curves(epochs: pd.DataFrame, finals: pd.DataFrame, out_dir: Path) -> Path | None:
    """Training (solid) and validation (dashed) error per epoch, a line per depth."""
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
    colors = depth_colors(data["depth"])
    any_diverged = bool(data["diverged"].any())

    def draw(ax, sub, color):
        steady = sub[~sub["diverged"]]
        for value, style, lw in (("train_pct", "-", 1.8), ("val_pct", "--", 1.0)):
            agg = aggregate(steady, ["epoch"], value, geometric=False)
            _line(
                ax,
                agg,
                "epoch",
                color,
                linestyle=style,
                lw=lw,
                band=value == "train_pct",
                clip=(0, 100),
            )
        _diverged_curves(ax, sub[sub["diverged"]], "epoch", "train_pct", color)

    with theme():
        fig, axes = _figure(len(conds), len(archs), sharex=True, sharey=True)
        _per_depth_curves(fig, axes, data, conds, archs, colors, draw)
        for r, cond in enumerate(conds):
            axes[r, 0].set_ylabel(_row_title(cond, "", "error (%)"))
            for ax in axes[r]:
                ax.set_xlabel("epoch" if r == len(conds) - 1 else "")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        for ax in axes.flat:
            ax.set_ylim(bottom=0)
        styles = [
            Line2D([], [], color="0.3", linewidth=1.8, label="training error"),
            Line2D([], [], color="0.3", linewidth=1.0, linestyle="--", label="validation error"),
        ]
        if any_diverged:
            styles.append(DIVERGED_HANDLE)
        _legend(fig, _depth_handles(colors, styles), "depth", right=True)
        fig.suptitle(
            "Error during training, plain vs residual (mean over seeds; band: sd of training error)"
        )
        return save(fig, out_dir, "training_curves")


# ---------------------------------------------------------------- 4. gradient profile


def gradient_profile(profiles: pd.DataFrame, finals: pd.DataFrame, out_dir: Path) -> Path | None:
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
    colors = depth_colors(data["depth"])
    rows = [
        (c, w)
        for c in conds
        for w in ("at initialisation", "after the last epoch")
        if ((data["condition"] == c) & (data["when"] == w)).any()
    ]
    with theme():
        fig, axes = _figure(len(rows), len(archs), sharex=True, sharey=True)
        for r, (cond, when) in enumerate(rows):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                sub = data[
                    (data["condition"] == cond) & (data["when"] == when) & (data["arch"] == arch)
                ]
                for depth in sorted(sub["depth"].unique()):
                    d = sub[sub["depth"] == depth]
                    agg = aggregate(d, ["layer_index"], "grad_norm", geometric=True)
                    _line(ax, agg, "layer_index", colors[int(depth)], lw=1.4)
                ax.set_yscale("log")
                if r == 0:
                    ax.set_title(arch)
                ax.set_ylabel(_row_title(cond, when, GRAD_LABEL) if c == 0 else "")
                ax.set_xlabel("layer index (0 = first weight layer)" if r == len(rows) - 1 else "")
        fig.suptitle(
            "Gradient norm through the network, per depth (mean over seeds, band: geometric sd)"
        )
        _legend(fig, _depth_handles(colors), "depth", right=True)
        return save(fig, out_dir, "gradient_profile")


# ---------------------------------------------------------------- 5. gradient dynamics


def gradient_dynamics(epochs: pd.DataFrame, finals: pd.DataFrame, out_dir: Path) -> Path | None:
    """First- and last-layer gradient norms at every epoch (0 = initialisation)."""
    if "grad_first_norm" not in epochs:
        return None
    data = epochs[epochs["usable"] & epochs["has_gradients"]]
    if data.empty:
        return None
    cols = condition_columns(finals)
    data = with_condition(data, cols)
    conds = [c for c in condition_order(data, cols) if c in set(data["condition"])]
    archs = [a for a in ARCHS if a in set(data["arch"])]
    colors = depth_colors(data["depth"])
    layers = [("grad_first_norm", "first layer"), ("grad_last_norm", "last layer")]
    rows = [(c, col, label) for c in conds for col, label in layers if col in data]
    with theme():
        fig, axes = _figure(len(rows), len(archs), sharex=True, sharey=True)
        for r, (cond, column, label) in enumerate(rows):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                sub = data[(data["condition"] == cond) & (data["arch"] == arch)]
                for depth in sorted(sub["depth"].unique()):
                    d = sub[sub["depth"] == depth]
                    agg = aggregate(d[~d["diverged"]], ["epoch"], column, geometric=True)
                    _line(ax, agg, "epoch", colors[int(depth)], lw=1.4)
                    _diverged_curves(ax, d[d["diverged"]], "epoch", column, colors[int(depth)])
                ax.set_yscale("log")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if r == 0:
                    ax.set_title(arch)
                ax.set_ylabel(_row_title(cond, label, GRAD_LABEL) if c == 0 else "")
                ax.set_xlabel("epoch (0 = initialisation)" if r == len(rows) - 1 else "")
        fig.suptitle(
            "First- and last-layer gradient norm during training "
            "(mean over seeds, band: geometric sd)"
        )
        extra = [DIVERGED_HANDLE] if data["diverged"].any() else []
        _legend(fig, _depth_handles(colors, extra), "depth", right=True)
        return save(fig, out_dir, "gradient_dynamics")


def draw_all(
    epochs: pd.DataFrame,
    finals: pd.DataFrame,
    profiles: pd.DataFrame | None,
    out_dir: Path,
) -> tuple[dict[str, Path], list[str]]:
    """Draw every figure the data allows; return {name: png path} and why others were not."""
    out_dir = Path(out_dir)
    drawn, skipped = {}, []
    reasons = {
        "depth_vs_gradient": "no run has gradient metrics",
        "depth_vs_accuracy": "no run has finished an epoch",
        "training_curves": "no run has finished an epoch",
        "gradient_profile": "no run has a grad_profile.csv artifact",
        "gradient_dynamics": "no run has gradient metrics",
    }
    makers = {
        "depth_vs_gradient": lambda: depth_vs_gradient(finals, out_dir),
        "depth_vs_accuracy": lambda: depth_vs_accuracy(finals, out_dir),
        "training_curves": lambda: training_curves(epochs, finals, out_dir),
        "gradient_profile": lambda: gradient_profile(profiles, finals, out_dir),
        "gradient_dynamics": lambda: gradient_dynamics(epochs, finals, out_dir),
    }
    for name in FIGURES:
        try:
            path = makers[name]()
        except Exception as err:  # one figure's failure must not cost the others
            first = str(err).splitlines()[0][:160] if str(err) else ""
            skipped.append(f"{name}.png not drawn: {type(err).__name__}: {first}")
            continue
        if path is None:
            skipped.append(f"{name}.png not drawn: {reasons[name]}")
        else:
            drawn[name] = path
    return drawn, skipped
