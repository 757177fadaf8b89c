"""A loss surface as contour lines: one run's `landscape.png`, and each panel of the study's
`landscape_contours` figure (`resnet_exp.analysis.landscape_figures`). Matplotlib only, no
pyplot: a run draws its picture without the analysis package.

Contour levels are geometrically spaced (`contour_levels`), `LEVELS_PER_DECADE` to a
decade of loss, from the lowest positive loss to the highest. Why: a trained net's
loss at the centre is often 1e-3 or less while the walls a span away reach chance
loss (about 2.3 for ten classes) or, for a deep plain net, 1e7; even steps in loss
would put every line on the walls and leave the basin, where plain and residual nets
differ, one blank region. Levels per decade, not a fixed count, so that on the shared
levels of the grid a surface spanning four decades draws about eight lines whatever the
steepest panel reaches. Losses at or below zero (or more than `MAX_DECADES` below the
highest) fall under the lowest level and draw no line.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.colors import LogNorm
from matplotlib.figure import Figure

LEVELS_PER_DECADE = 2  # Li et al.'s figures show about a dozen lines over a basin
MIN_LEVELS, MAX_LEVELS = 6, 30  # a flat surface still draws some; a wild one, not a smear
MAX_DECADES = 12.0  # the lowest level is at most this many decades under the highest
CMAP = "viridis"  # dark basin, light walls, readable in grey
_CENTRE = {"marker": "+", "color": "black", "markersize": 9, "markeredgewidth": 1.6}


def contour_levels(losses) -> np.ndarray:
    """Levels geometrically spaced strictly between the lowest positive loss (floored at
    `MAX_DECADES` under the highest) and the highest finite loss, `LEVELS_PER_DECADE` to a
    decade (between `MIN_LEVELS` and `MAX_LEVELS`); none when no loss is positive or the
    surface is flat."""
    values = np.asarray(losses, dtype=float).ravel()
    values = values[np.isfinite(values)]
    if values.size == 0 or not values.max() > 0:
        return np.array([])
    high = float(values.max())
    low = max(float(values[values > 0].min()), high / 10**MAX_DECADES)
    if not high > low:
        return np.array([])
    n = int(np.clip(round(LEVELS_PER_DECADE * np.log10(high / low)), MIN_LEVELS, MAX_LEVELS))
    return np.geomspace(low, high, n + 2)[1:-1]  # ends excluded: each level draws a line


def draw_contour(ax, surface: pd.DataFrame, *, title: str | None = None, levels=None):
    """One loss surface (`contract.LANDSCAPE_2D_COLUMNS`) as contour lines on `ax`, the
    trained weights (0, 0) marked with a +.

    `levels` (default `contour_levels` of this surface) lets several panels share one
    scheme. NaN losses leave a gap; +inf and losses above the top level draw no line.
    Returns the contour set (for a colour bar), or None when no level is in range.
    """
    grid = surface.pivot_table(index="beta", columns="alpha", values="loss", aggfunc="mean")
    alpha, beta = grid.columns.to_numpy(float), grid.index.to_numpy(float)
    loss = grid.to_numpy(float)
    levels = contour_levels(loss) if levels is None else np.asarray(levels, dtype=float)
    finite = loss[np.isfinite(loss)]
    if finite.size and np.any((levels > finite.min()) & (levels < finite.max())):
        z = np.where(np.isposinf(loss), 10 * levels[-1], loss)
        z = np.ma.masked_invalid(np.clip(z, levels[0] / 2, None))  # under the lowest: no line
        norm = LogNorm(levels[0], levels[-1])
        lines = ax.contour(alpha, beta, z, levels=levels, cmap=CMAP, norm=norm, linewidths=0.9)
    else:
        lines = None
        ax.text(0.5, 0.25, "no level in range", transform=ax.transAxes, ha="center", color="0.4")
    ax.plot([0.0], [0.0], linestyle="", gid="centre", **_CENTRE)
    if len(alpha) and len(beta):
        ax.set_xlim(alpha.min(), alpha.max())
        ax.set_ylim(beta.min(), beta.max())
    ax.set_aspect("equal")
    ax.grid(False)  # contour lines are the grid
    ax.set_xlabel("α (direction 1)")
    ax.set_ylabel("β (direction 2)")
    if title:
        ax.set_title(title)
    return lines


def landscape_figure(surface: pd.DataFrame, title: str) -> Figure:
    """One run's picture (`contract.LANDSCAPE_IMAGE`): its surface on its own levels, with a
    colour bar when some level is in range."""
    figure = Figure(figsize=(5.4, 4.2), dpi=100, layout="constrained")
    lines = draw_contour(figure.add_subplot(), surface, title=title)
    if lines is not None:
        figure.colorbar(lines, label="loss (log-spaced levels)")
    return figure
