"""The lesion and branch-magnitude figures, drawn with the helpers of `figures` (same look).

* `lesion_single`: validation accuracy after deleting one block vs the block's
  index, plain vs residual, a panel per depth (Veit et al. 2016, Fig. 3).
* `lesion_k`: validation error vs the number of blocks deleted at once, a
  line per depth, a panel per kind of net (Veit et al. 2016, Fig. 4).
* `branch_magnitude`: ‖F(x)‖/‖x‖ per block at initialisation and after
  training, and its mean over blocks vs depth.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from resnet_exp.analysis.figures import (
    DEPTH_LABEL,
    _arch_handles,
    _depth_axis,
    _depth_handles,
    _figure,
    _legend,
    _row_title,
    _style,
    arch_styles,
    archs_in,
    at_init_and_end,
    depth_colors,
    draw_each,
    label_grid,
    seed_lines,
    theme,
)
from resnet_exp.analysis.lesion_report import LesionData

_DOWN_COLOR = "0.88"
_CHANCE = {"color": "0.45", "linestyle": "--"}


def _chance(ax, chance: float | None) -> None:
    if chance:
        ax.axhline(100 * chance, linewidth=0.9, **_CHANCE)


def _chance_handle() -> Line2D:
    return Line2D([], [], **_CHANCE, label="chance")  # made under the theme: its line width


def _arch_lines(ax, frame: pd.DataFrame, x: str, y: str) -> dict:
    """The mean over seeds per net kind, in its colour and marker; {arch: its Line2D}."""
    styles = arch_styles(archs_in(frame))
    lines = seed_lines(ax, frame, x, y, "arch", {a: s.color for a, s in styles.items()})
    for arch, line in lines.items():
        _style(line, marker=styles[arch].marker)
    return lines


def lesion_single(data: LesionData) -> Figure | None:
    """Accuracy after deleting each block alone; dotted: the intact net; grey: downsampling."""
    s = data.single
    if s.empty:
        return None
    s = s.assign(pct=100 * s["accuracy"], intact_pct=100 * s["intact_accuracy"])
    conds = [c for c in data.conditions if c in set(s["condition"])]
    depths = sorted(s["depth"].unique())
    with theme():
        fig, axes = _figure(len(conds), len(depths), sharey=True)
        for r, cond in enumerate(conds):
            for c, depth in enumerate(depths):
                ax = axes[r, c]
                sub = s[(s["condition"] == cond) & (s["depth"] == depth)]
                for index in sorted(sub.loc[sub["downsampling"], "block_index"].unique()):
                    ax.axvspan(index - 0.45, index + 0.45, color=_DOWN_COLOR, zorder=0)
                for arch, line in _arch_lines(ax, sub, "block_index", "pct").items():
                    intact = sub[sub["arch"] == arch].groupby("run_id")["intact_pct"].first()
                    ax.axhline(intact.mean(), color=line.get_color(), linewidth=1.0, linestyle=":")
                _chance(ax, data.chance)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylim(0, 102)
        ylabels = [_row_title(cond, "", "val. accuracy (%)") for cond in conds]
        label_grid(axes, [f"depth {d}" for d in depths], ylabels, "deleted block (index)")
        handles = _arch_handles(archs_in(s), False) + [
            Line2D([], [], color="0.3", linestyle=":", label="intact net"),
            Patch(color=_DOWN_COLOR, label="block that changes shape\n(downsamples or widens)"),
        ]
        if data.chance:
            handles.append(_chance_handle())
        fig.suptitle("Validation accuracy after deleting one block (mean over seeds, band: sd)")
        _legend(fig, handles)
        return fig


def lesion_k(data: LesionData) -> Figure | None:
    """Error vs k blocks deleted at once (k = 0: the intact net), mean over draws and seeds."""
    m = data.multi
    if m.empty or data.single.empty:
        return None
    intact = data.single.groupby("run_id").first().reset_index()
    intact = intact.assign(k=0, accuracy=intact["intact_accuracy"])
    cols = ["run_id", "condition", "depth", "arch", "k", "accuracy"]
    m = pd.concat([intact[cols], m[cols]], ignore_index=True)
    m["err"] = 100 * (1 - m["accuracy"])
    conds = [c for c in data.conditions if c in set(m["condition"])]
    archs = archs_in(m)
    colors = depth_colors(m["depth"])
    with theme():
        fig, axes = _figure(len(conds), len(archs), sharex=True, sharey=True)
        for r, cond in enumerate(conds):
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                sub = m[(m["condition"] == cond) & (m["arch"] == arch)]
                lines = seed_lines(ax, sub, "k", "err", "depth", colors, clip=(0, 100))
                for line in lines.values():
                    _style(line, marker="o")
                _chance(ax, (1 - data.chance) if data.chance else None)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylim(0, 100)
        ylabels = [_row_title(cond, "", "val. error (%)") for cond in conds]
        label_grid(axes, archs, ylabels, "blocks deleted at once (k)")
        extra = [_chance_handle()] if data.chance else []
        fig.suptitle("Validation error vs number of deleted blocks (mean over draws, band: sd)")
        _legend(fig, _depth_handles(colors, extra), "depth", right=True)
        return fig


def branch_magnitude(data: LesionData) -> Figure | None:
    """‖F(x)‖/‖x‖ per block (a line per depth) and its mean over blocks vs depth.

    A linear axis: the ratios stay within about one decade. Downsampling blocks
    are marked: their output has a quarter of the positions of their input, so
    their ratio is not comparable with the others'.
    """
    b = data.branches
    if b.empty:
        return None
    b = b[np.isfinite(b["ratio"]) & (b["ratio"] > 0)]
    b, rows = at_init_and_end(b, data.conditions, "after training")
    archs = archs_in(b)
    colors = depth_colors(b["depth"])
    with theme():
        fig, axes = _figure(len(rows), len(archs) + 1, sharey=True)
        for r, (cond, when) in enumerate(rows):
            sub = b[(b["condition"] == cond) & (b["when"] == when)]
            for c, arch in enumerate(archs):
                ax = axes[r, c]
                a = sub[sub["arch"] == arch]
                lines = seed_lines(ax, a, "block_index", "ratio", "depth", colors, lw=1.4)
                for depth, line in lines.items():
                    downsampling = a.loc[(a["depth"] == depth) & a["downsampling"], "block_index"]
                    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
                    at = np.isin(x, downsampling.to_numpy())
                    ax.scatter(x[at], y[at], marker="v", s=30, color="0.25", zorder=5)
                ax.axhline(1.0, color="0.4", linewidth=0.9, linestyle=":")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            per_run = sub.groupby(["run_id", "depth", "arch"])["ratio"].mean().reset_index()
            _arch_lines(axes[r, -1], per_run, "depth", "ratio")
            _depth_axis(axes[r, -1], b["depth"])
        titles = [f"{a}: {'‖F(x)‖/‖x‖' if a == 'residual' else 'out/in'}" for a in archs]
        ylabels = [_row_title(cond, when, "ratio of norms") for cond, when in rows]
        label_grid(axes, [*titles, "mean over blocks"], ylabels, "block index")
        axes[-1, -1].set_xlabel(DEPTH_LABEL)
        for ax in axes.flat:  # after every panel is drawn: the y axis is shared
            ax.set_ylim(bottom=0)
        down = Line2D([], [], color="0.25", marker="v", linestyle="", label="downsampling")
        handles = _depth_handles(colors, [down, Line2D([], [], linestyle="", label="")])
        handles += _arch_handles(archs, False)
        fig.suptitle(
            "Branch magnitude on the probe batch (training mode): residual ‖F(x)‖/‖x‖, "
            "plain block output/input"
        )
        _legend(fig, handles, "depth / net", right=True)
        return fig


def draw_lesion_figures(data: LesionData, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Draw what the data allow; return {name: png path} and why the others were not drawn."""
    figures = (lesion_single, lesion_k, branch_magnitude)
    makers = {f.__name__: (partial(f, data), "no run has its data") for f in figures}
    return draw_each(makers, out_dir)
