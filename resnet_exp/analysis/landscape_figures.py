"""The curvature and loss-landscape figures, drawn with the helpers of `figures` (same look).

* `landscape_contours`: the loss over the plane around the trained weights, a
  row per depth and a column per kind of net (and condition), as Li et al.
  (2018, Fig. 5) lay out plain vs residual nets; one run per panel, every panel
  on the same contour levels so that they compare.
* `landscape_slices`: the loss along one filter-normalised direction, a line
  per depth, a panel per kind of net.
* `curvature_depth`: the Hessian's top eigenvalue and trace against depth,
  after training and at initialisation (cf. Yao et al. 2020).

Each panel is `resnet_exp.recording.landscape_image.draw_contour`, the function that
draws a run's own `landscape.png`; its module says how the contour levels are chosen.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.cm import ScalarMappable
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D

from resnet_exp import contract
from resnet_exp.analysis.figures import (
    DEPTH_LABEL,
    _arch_handles,
    _depth_axis,
    _depth_handles,
    _figure,
    _legend,
    _row_title,
    arch_styles,
    archs_in,
    depth_colors,
    dodge,
    draw_each,
    label_grid,
    seed_lines,
    theme,
    what_is_drawn,
)
from resnet_exp.analysis.landscape_data import LandscapeData
from resnet_exp.recording.landscape_image import CMAP, contour_levels, draw_contour

CONDITION_DASHES = ("-", (0, (4, 2)), (0, (1, 1.5)), (0, (6, 2, 1, 2)))


def _one_run_each(frame: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    """The rows of the lowest-seed run of each configuration: a surface is one run's
    (averaging surfaces along different random directions means nothing)."""
    first = frame.sort_values(["seed", "run_id"]).groupby(keys)["run_id"].first()
    return frame[frame["run_id"].isin(set(first))]


def _annotate(ax, numbers: pd.DataFrame, run_id: str) -> None:
    """The run's sharpness and non-convex fraction in the panel's corner."""
    if run_id not in numbers.index:
        return
    run = numbers.loc[run_id]
    lines = [f"sharpness {run['sharpness']:.3g}"] if np.isfinite(run["sharpness"]) else []
    if np.isfinite(run["nonconvexity"]):
        lines.append(f"non-convex {run['nonconvexity']:.0%}")
    box = {"facecolor": "white", "alpha": 0.8, "linewidth": 0, "pad": 1.5}
    ax.text(0.03, 0.97, "\n".join(lines), transform=ax.transAxes, va="top", fontsize=7, bbox=box)


def landscape_contours(data: LandscapeData) -> Figure | None:
    """A row per depth, a column per (condition, net kind): the surfaces on shared levels."""
    s = data.surfaces
    if s.empty:
        return None
    s = _one_run_each(s, ["condition", "arch", "depth"])
    levels = contour_levels(s["loss"])
    columns = [
        (cond, arch)
        for cond in data.conditions
        for arch in archs_in(s)
        if ((s["condition"] == cond) & (s["arch"] == arch)).any()
    ]
    depths = sorted(int(d) for d in s["depth"].unique())
    numbers = data.per_run.set_index("run_id")
    with theme():
        fig, axes = _figure(len(depths), len(columns), panel=(2.9, 2.7), sharex=True, sharey=True)
        for r, depth in enumerate(depths):
            for c, (cond, arch) in enumerate(columns):
                ax = axes[r, c]
                sub = s[(s["condition"] == cond) & (s["arch"] == arch) & (s["depth"] == depth)]
                if sub.empty:
                    ax.text(0.5, 0.5, "no surface", transform=ax.transAxes, ha="center")
                    ax.grid(False)
                    continue
                draw_contour(ax, sub, levels=levels)
                ax.set(xlabel="", ylabel="")  # the grid's edges say it once
                _annotate(ax, numbers, sub["run_id"].iloc[0])
        titles = [f"{arch} · {cond}" if cond else arch for cond, arch in columns]
        label_grid(axes, titles, [f"depth {d}\nβ (direction 2)" for d in depths], "α (direction 1)")
        if len(levels):
            mappable = ScalarMappable(LogNorm(levels[0], levels[-1]), CMAP)
            fig.colorbar(mappable, ax=axes, label="loss (log-spaced levels)", shrink=0.8)
        fig.suptitle(
            "Loss around the trained weights along two filter-normalised directions "
            "(+: the trained weights)\n(one run per panel, the lowest seed; every panel on "
            "the same levels)"
        )
        return fig


def landscape_slices(data: LandscapeData) -> Figure | None:
    """The loss along direction 1, a line per depth (mean over seeds), a panel per kind."""
    s = data.slices
    if s.empty:
        return None
    conds = [c for c in data.conditions if c in set(s["condition"])]
    archs = archs_in(s)
    colors = depth_colors(s["depth"])
    with theme():
        fig, axes = _figure(len(conds), len(archs), sharex=True, sharey=True)
        for r, cond in enumerate(conds):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                ax.set_yscale("log")  # before drawing: seaborn then averages the logs
                sub = s[(s["condition"] == cond) & (s["arch"] == arch)]
                for depth, line in seed_lines(ax, sub, "alpha", "loss", "depth", colors).items():
                    line.set_gid(f"{arch} depth {depth}")
                ax.axvline(0.0, color="0.4", linewidth=0.9, linestyle=":")
        ylabels = [_row_title(cond, "", "loss (log scale)") for cond in conds]
        label_grid(axes, archs, ylabels, "α along direction 1 (filter-normalised)")
        drawn = what_is_drawn(s, ["condition", "arch", "depth"], "geometric sd")
        fig.suptitle(
            f"The loss along one filter-normalised direction (dotted: trained weights)\n({drawn})"
        )
        _legend(fig, _depth_handles(colors), "depth", right=True)
        return fig


_CURVATURE_PANELS = (("top_eig", "top Hessian eigenvalue"), ("trace", "Hessian trace"))
_WHEN = (("end", "after training"), ("init", "at initialisation"))


def _curvature_series(
    ax, runs: pd.DataFrame, column: str, series: list, dashes: dict, depths
) -> None:
    """Per (condition, net kind): mean over seeds vs depth (dodged), error bars ± 1 sd
    (geometric on the log axis); with one seed, the trace's standard error as the bar."""
    styles = arch_styles([arch for _, arch in series])
    for k, (cond, arch) in enumerate(series):
        sub = runs[(runs["condition"] == cond) & (runs["arch"] == arch)]
        sub = sub[np.isfinite(sub[column].astype(float))]
        if sub.empty:
            continue
        sub = sub.assign(x=dodge(sub["depth"], k, len(series), depths))
        style = styles[arch]
        sns.lineplot(
            data=sub,
            x="x",
            y=column,
            color=style.color,
            marker=style.marker,
            markerfacecolor="none" if style.open else style.color,
            markeredgecolor=style.color,
            linestyle=dashes[cond],
            errorbar=("sd", 1),
            err_style="bars",
            err_kws={"capsize": 2.5, "elinewidth": 1.0},
            ax=ax,
            gid=f"{arch} {cond}".strip(),
        )
        stderr = column.replace("trace_", "trace_stderr_")
        one = sub[sub.groupby("depth")["run_id"].transform("nunique") == 1]
        if column.startswith("trace_") and stderr in one and one[stderr].notna().any():
            ax.errorbar(
                one["x"], one[column], yerr=one[stderr], fmt="none", ecolor=style.color,
                elinewidth=1.0, capsize=2.5, gid="trace_stderr",
            )  # fmt: skip
    ax.set(xlabel="", ylabel="")


def _symlog(ax, values: pd.Series) -> None:
    """A log axis that also shows negative values (symlog), linear within the smallest
    decade measured: a top eigenvalue at initialisation, in training-mode batch norm, is
    often negative (a saddle), and a trace can be."""
    magnitudes = values.abs().to_numpy(float)
    magnitudes = magnitudes[np.isfinite(magnitudes) & (magnitudes > 0)]
    floor = magnitudes.min() if magnitudes.size else 1.0
    ax.set_yscale("symlog", linthresh=10 ** np.floor(np.log10(floor)))
    ax.axhline(0.0, color="0.5", linewidth=0.8)


def curvature_depth(data: LandscapeData) -> Figure | None:
    """Top eigenvalue and trace vs depth: a row after training, a row at initialisation."""
    runs = data.per_run
    rows = [
        (when, label)
        for when, label in _WHEN
        if any(
            f"{col}_{when}" in runs and runs[f"{col}_{when}"].notna().any()
            for col, _ in _CURVATURE_PANELS
        )
    ]
    if runs.empty or not rows:
        return None
    archs = archs_in(runs)
    conds = [c for c in data.conditions if c in set(runs["condition"])]
    series = [(cond, arch) for cond in conds for arch in archs]
    dashes = {c: CONDITION_DASHES[i % len(CONDITION_DASHES)] for i, c in enumerate(conds)}
    with theme():
        fig, axes = _figure(len(rows), len(_CURVATURE_PANELS), sharex=True)
        for r, (when, _) in enumerate(rows):
            for c, (column, _) in enumerate(_CURVATURE_PANELS):
                ax = axes[r, c]
                values = runs.get(f"{column}_{when}", pd.Series(dtype=float))
                _symlog(ax, values)
                _curvature_series(ax, runs, f"{column}_{when}", series, dashes, runs["depth"])
                _depth_axis(ax, runs["depth"])
        ylabels = [_row_title("", label, "(symmetric log scale)") for _, label in rows]
        label_grid(axes, [title for _, title in _CURVATURE_PANELS], ylabels, DEPTH_LABEL)
        extra = []
        if len(conds) > 1:
            extra = [Line2D([], [], color="0.3", linestyle=d, label=c) for c, d in dashes.items()]
        drawn = what_is_drawn(runs, ["condition", "arch", "depth"], "sd", item="point")
        drawn = drawn.replace("band", "bars")
        fig.suptitle(
            "Curvature of the data loss vs depth (one fixed batch)\n"
            f"({drawn};\nwith one seed the trace's bar is its standard error)"
        )
        _legend(fig, _arch_handles(archs, False, extra))
        return fig


def draw_landscape_figures(data: LandscapeData, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Draw what the data allow; return {name: png path} and why the others were not drawn."""
    reasons = {
        landscape_contours: f"no run has a {contract.LANDSCAPE_2D_ARTIFACT} "
        "(landscape.enabled=false, or landscape.surface=false)",
        landscape_slices: f"no run has a {contract.LANDSCAPE_1D_ARTIFACT} "
        "(landscape.enabled=false)",
        curvature_depth: "no run logged Hessian metrics (curvature.enabled=false)",
    }
    makers = {f.__name__: (partial(f, data), why) for f, why in reasons.items()}
    return draw_each(makers, out_dir)
