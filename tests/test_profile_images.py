"""The per-epoch profile image: blitted frames show exactly this step, on the right axes."""

from __future__ import annotations

import numpy as np

from resnet_exp.profile_images import ProfilePlot

INIT = [0.5, 0.3, 0.2, 0.25, 0.4]
EARLY = [0.6, 0.2, 0.15, 0.3, 0.5]  # the same decades as INIT: the background is reused
LATER = [40.0, 5.0, 0.9, 0.1, 0.5]  # two decades more: the axes are redrawn


def test_a_reused_plot_draws_what_a_fresh_plot_draws():
    """Restoring the background erases the last step's lines: no ghost of an earlier epoch."""
    plot = ProfilePlot()
    plot.render(INIT, None, "d20-plain initialisation")
    plot.render(LATER, INIT, "d20-plain epoch 2")
    plot.render(EARLY, INIT, "d20-plain epoch 1")
    reused = plot.render(EARLY, INIT, "d20-plain epoch 1")
    fresh = ProfilePlot().render(EARLY, INIT, "d20-plain epoch 1")
    assert reused.shape == fresh.shape and reused.dtype == np.uint8
    np.testing.assert_array_equal(reused, fresh)


def test_the_lines_and_title_change_the_image_and_the_axes_follow_the_decades():
    plot = ProfilePlot()
    first = plot.render(EARLY, INIT, "epoch 1")
    assert not np.array_equal(first, plot.render(INIT, INIT, "epoch 1"))  # the line moved
    assert not np.array_equal(first, plot.render(EARLY, INIT, "epoch 9"))  # the title changed
    assert plot.ax.get_ylim() == (-1.0, 0.0)  # log10 of 0.15 ... 0.6, out to whole decades
    plot.render(LATER, INIT, "epoch 2")
    assert plot.ax.get_ylim() == (-1.0, 2.0)  # log10 of 0.1 ... 40
    assert plot.ax.get_xlim() == (-0.5, 4.5)  # one point per layer


def test_a_blitted_frame_matches_a_full_redraw():
    """The blitted picture is the figure matplotlib draws whole (lines over the frame aside)."""
    plot = ProfilePlot()
    plot.render(INIT, None, "x")
    blitted = plot.render(EARLY, INIT, "d20-plain epoch 1").astype(int)
    plot.fig.canvas.draw()  # everything, in matplotlib's own order
    full = np.asarray(plot.fig.canvas.buffer_rgba())[..., :3].astype(int)
    differing = np.any(np.abs(blitted - full) > 8, axis=-1).mean()
    assert differing < 0.01, differing


def test_zero_and_missing_norms_still_draw():
    plot = ProfilePlot()
    image = plot.render([0.0, float("nan"), 1e-3, 2e-3], None, "diverged")
    assert image.shape[2] == 3
    assert plot.ax.get_ylim() == (-3.0, -2.0)
    assert ProfilePlot().render([0.0, 0.0], None, "all zero").shape[2] == 3
