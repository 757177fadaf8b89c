"""The per-epoch profile image: blitted frames show exactly this step, on the right axes."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from specs import build

from resnet_exp.recording.gradients import StepGradientRecorder
from resnet_exp.recording.profile_images import ProfileImageLogger, ProfilePlot
from resnet_exp.tracking.run_log import RunLog

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


def _tiny_fit(callbacks: list, epochs: int = 3) -> None:
    keras.utils.set_random_seed(0)
    x = np.random.default_rng(0).normal(size=(64, 8, 8, 1)).astype("float32")
    y = np.arange(64) % 4
    model = build("resnet_cifar", 8, input_shape=(8, 8, 1), num_classes=4, seed=0)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=16, epochs=epochs, callbacks=callbacks, verbose=0)


def test_every_step_is_stored_when_fit_returns(client):
    """Images are drawn and logged off the training thread, and all are in the store at the end."""
    run_id = client.create_run(client.create_experiment("images")).info.run_id
    recorder = StepGradientRecorder()
    images = ProfileImageLogger.from_recorder(RunLog(client, run_id), recorder, label="d8-residual")
    _tiny_fit([recorder, images])
    files = [f.path for f in client.list_artifacts(run_id, "images")]
    steps = sorted({int(re.search(r"\+step\+(\d+)\+", f).group(1)) for f in files})
    assert steps == [0, 1, 2, 3]  # initialisation and every epoch
    assert sum(f.endswith(".png") for f in files) == 4
    assert len(images.seconds) == 4
    assert client.get_run(run_id).data.tags.get("mlflow.loggedImages") == "True"


def test_a_store_error_is_raised_when_fit_ends(client, monkeypatch):
    run_id = client.create_run(client.create_experiment("broken")).info.run_id

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(client, "log_image", refuse)
    recorder = StepGradientRecorder()
    images = ProfileImageLogger.from_recorder(RunLog(client, run_id), recorder)
    with pytest.raises(OSError, match="disk full"):
        _tiny_fit([recorder, images], epochs=1)
