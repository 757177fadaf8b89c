"""The lesion and branch-magnitude figures, in the look of `figures` (same theme and colours).

* `lesion_single`: validation accuracy after deleting one block vs the block's
  index, plain vs residual, a panel per depth (Veit et al. 2016, Fig. 3).
* `lesion_k`: validation error vs the number of blocks deleted at once, a
  line per depth, a panel per kind of net (Veit et al. 2016, Fig. 4).
* `branch_magnitude`: ‖F(x)‖/‖x‖ per block at initialisation and after
  training, and its mean over blocks vs depth.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.ticker import MaxNLocator

from resnet_exp.analysis.figures import (
    ARCH_COLORS,
    ARCH_MARKERS,
    DEPTH_LABEL,
    _arch_handles,
    _depth_axis,
    _depth_handles,
    _figure,
    _legend,
    _row_title,
    _style,
    depth_colors,
    draw_each,
    save,
    seed_lines,
    theme,
)
from resnet_exp.analysis.lesion_report import LesionData
from resnet_exp.analysis.summary import ARCHS

_DOWN_COLOR = "0.88"


def _archs(frame: pd.DataFrame) -> list[str]:
    return [a for a in ARCHS if a in set(frame["arch"])]


def _chance(ax, chance: float | None, scale: float = 100.0) -> None:
    if chance:
        ax.axhline(scale * chance, color="0.45", linewidth=0.9, linestyle="--")


def lesion_single(data: LesionData, out_dir: Path) -> Path | None:
    """Accuracy after deleting each block alone; dotted: the intact net; grey: downsampling."""
    s = data.single
    if s.empty:
        return None
    s = s.assign(pct=100 * s["accuracy"], intact_pct=100 * s["intact_accuracy"])
    conds = [c for c in data.conditions if c in set(s["condition"])]
    depths = sorted(s["depth"].unique())
    archs = _archs(s)
    with theme():
        fig, axes = _figure(len(conds), len(depths), sharey=True)
        for r, cond in enumerate(conds):
            for c, depth in enumerate(depths):
                ax = axes[r, c]
                sub = s[(s["condition"] == cond) & (s["depth"] == depth)]
                for index in sorted(sub.loc[sub["downsampling"], "block_index"].unique()):
                    ax.axvspan(index - 0.45, index + 0.45, color=_DOWN_COLOR, zorder=0)
                colors = {arch: ARCH_COLORS[arch] for arch in archs}
                for arch, line in seed_lines(ax, sub, "block_index", "pct", "arch", colors).items():
                    _style(line, marker=ARCH_MARKERS[arch])
                    intact = sub[sub["arch"] == arch].groupby("run_id")["intact_pct"].first()
                    ax.axhline(intact.mean(), color=colors[arch], linewidth=1.0, linestyle=":")
                _chance(ax, data.chance)
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                ax.set_ylim(0, 102)
                if r == 0:
                    ax.set_title(f"depth {depth}")
                ax.set_ylabel(_row_title(cond, "", "val. accuracy (%)") if c == 0 else "")
                ax.set_xlabel("deleted block (index)" if r == len(conds) - 1 else "")
        handles = _arch_handles(archs, False) + [
            Line2D([], [], color="0.3", linestyle=":", label="intact net"),
            Patch(color=_DOWN_COLOR, label="downsampling block"),
        ]
        if data.chance:
            handles.append(Line2D([], [], color="0.45", linestyle="--", label="chance"))
        fig.suptitle("Validation accuracy after deleting one block (mean over seeds, band: sd)")
        _legend(fig, handles)
        return save(fig, out_dir, "lesion_single")


def lesion_k(data: LesionData, out_dir: Path) -> Path | None:
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
    archs = _archs(m)
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
                if r == 0:
                    ax.set_title(arch)
                ax.set_ylabel(_row_title(cond, "", "val. error (%)") if c == 0 else "")
                ax.set_xlabel("blocks deleted at once (k)" if r == len(conds) - 1 else "")
        extra = (
            [Line2D([], [], color="0.45", linestyle="--", label="chance")] if data.chance else []
        )
        fig.suptitle("Validation error vs number of deleted blocks (mean over draws, band: sd)")
        _legend(fig, _depth_handles(colors, extra), "depth", right=True)
        return save(fig, out_dir, "lesion_k")


def branch_magnitude(data: LesionData, out_dir: Path) -> Path | None:
    """‖F(x)‖/‖x‖ per block (a line per depth) and its mean over blocks vs depth.

    A linear axis: the ratios stay within about one decade. Downsampling blocks
    are marked: their output has a quarter of the positions of their input, so
    their ratio is not comparable with the others'.
    """
    b = data.branches
    if b.empty:
        return None
    b = b[np.isfinite(b["ratio"]) & (b["ratio"] > 0)]
    last = b.groupby("run_id")["epoch"].transform("max")
    b = pd.concat(
        [
            b[b["epoch"] == 0].assign(when="at initialisation"),
            b[(b["epoch"] == last) & (last > 0)].assign(when="after training"),
        ]
    )
    rows = [
        (cond, when)
        for cond in data.conditions
        for when in ("at initialisation", "after training")
        if ((b["condition"] == cond) & (b["when"] == when)).any()
    ]
    archs = _archs(b)
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
                    _style(line)
                    downsampling = a.loc[(a["depth"] == depth) & a["downsampling"], "block_index"]
                    x, y = np.asarray(line.get_xdata()), np.asarray(line.get_ydata())
                    at = np.isin(x, downsampling.to_numpy())
                    ax.scatter(x[at], y[at], marker="v", s=30, color="0.25", zorder=5)
                ax.axhline(1.0, color="0.4", linewidth=0.9, linestyle=":")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
                if r == 0:
                    ax.set_title(f"{arch}: {'‖F(x)‖/‖x‖' if arch == 'residual' else 'out/in'}")
                ax.set_ylabel(_row_title(cond, when, "ratio of norms") if c == 0 else "")
                ax.set_xlabel("block index" if r == len(rows) - 1 else "")
            ax = axes[r, -1]
            per_run = sub.groupby(["run_id", "depth", "arch"])["ratio"].mean().reset_index()
            arch_colors = {arch: ARCH_COLORS[arch] for arch in archs}
            lines = seed_lines(ax, per_run, "depth", "ratio", "arch", arch_colors)
            for arch, line in lines.items():
                _style(line, marker=ARCH_MARKERS[arch])
            _depth_axis(ax, b["depth"])
            if r == 0:
                ax.set_title("mean over blocks")
            ax.set_xlabel(DEPTH_LABEL if r == len(rows) - 1 else "")
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
        return save(fig, out_dir, "branch_magnitude")


def draw_lesion_figures(data: LesionData, out_dir: Path) -> tuple[dict[str, Path], list[str]]:
    """Draw what the data allow; return {name: png path} and why the others were not drawn."""
    out_dir = Path(out_dir)
    makers = {
        name: (lambda make=make: make(data, out_dir))
        for name, make in (
            ("lesion_single", lesion_single),
            ("lesion_k", lesion_k),
            ("branch_magnitude", branch_magnitude),
        )
    }
    return draw_each(makers, dict.fromkeys(makers, "no run has its data"))
