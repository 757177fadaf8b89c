"""The profile images: blitted frames show exactly this step, on the right axes; each step
is stored twice (the image chart, a name that sorts) and every epoch in one picture at the end."""

from __future__ import annotations

import re

import keras
import numpy as np
import pytest
from mlflow.artifacts import download_artifacts
from PIL import Image
from specs import build

from resnet_exp import contract
from resnet_exp.recording.gradients import StepGradientRecorder
from resnet_exp.recording.profile_images import (
    ProfileImageLogger,
    ProfilePlot,
    all_epochs_image,
    epoch_file,
)
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
    """Images are drawn and logged off the training thread, and all are in the store at the end:
    the image chart's entries under MLflow's names, each step again under a name that sorts,
    and every epoch in one picture."""
    run_id = client.create_run(client.create_experiment("images")).info.run_id
    recorder = StepGradientRecorder()
    images = ProfileImageLogger.from_recorder(RunLog(client, run_id), recorder, label="d8-residual")
    _tiny_fit([recorder, images])
    files = [f.path for f in client.list_artifacts(run_id, "images")]
    steps = sorted({int(re.search(r"\+step\+(\d+)\+", f).group(1)) for f in files})
    assert steps == [0, 1, 2, 3]  # initialisation and every epoch
    assert sum(f.endswith(".png") for f in files) == 4  # and MLflow's .webp: nothing else
    assert client.get_run(run_id).data.tags.get("mlflow.loggedImages") == "True"
    folder = contract.PROFILE_EPOCH_IMAGES
    copies = [f.path for f in client.list_artifacts(run_id, folder)]
    assert copies == [f"{folder}/epoch_00{step}.png" for step in steps]  # listed in step order
    assert len(images.seconds) == len(images.copy_seconds) == 4
    assert images.all_epochs_seconds is not None
    root = {f.path for f in client.list_artifacts(run_id)}
    assert contract.PROFILE_ALL_EPOCHS_IMAGE in root
    path = download_artifacts(run_id=run_id, artifact_path=contract.PROFILE_ALL_EPOCHS_IMAGE,
                              tracking_uri=client.tracking_uri)  # fmt: skip
    assert Image.open(path).size == (800, 480)


def test_copies_are_named_in_epoch_order_past_ten_and_a_thousand():
    names = [epoch_file(step, 15) for step in range(16)]
    assert names == sorted(names) and names[2] == f"{contract.PROFILE_EPOCH_IMAGES}/epoch_002.png"
    names = [epoch_file(step, 1500) for step in (0, 2, 10, 999, 1000, 1500)]
    assert names == sorted(names) and names[-1].endswith("epoch_1500.png")


class _Store:
    """What a `RunLog` is asked to store, without a store: chart entries and files."""

    def __init__(self) -> None:
        self.chart: list[int] = []
        self.files: dict[str, np.ndarray] = {}

    def image(self, image: np.ndarray, key: str, step: int) -> None:
        self.chart.append(step)

    def image_file(self, image: np.ndarray, name: str) -> None:
        self.files[name] = image


PROFILES = {0: INIT, 1: EARLY, 2: LATER, 3: EARLY}


def test_a_resumed_run_logs_its_new_steps_and_draws_every_epoch(monkeypatch):
    """Steps the earlier process logged are not logged again; the picture of all epochs has
    them too, read back from the (restored) recorder."""
    drawn = {}

    def spy(profiles, title):
        drawn.update(profiles=dict(profiles), title=title)
        return all_epochs_image(profiles, title)

    monkeypatch.setattr("resnet_exp.recording.profile_images.all_epochs_image", spy)
    store = _Store()
    images = ProfileImageLogger(store, PROFILES.get, label="d8-plain")
    images.set_params({"epochs": 3})
    images.resume_after(2)  # epochs 1 and 2 were trained and logged before the stop
    images.on_train_begin()
    images.on_epoch_end(2)  # epoch 3
    images.on_train_end()
    assert store.chart == [3]
    assert set(store.files) == {f"{contract.PROFILE_EPOCH_IMAGES}/epoch_003.png",
                                contract.PROFILE_ALL_EPOCHS_IMAGE}  # fmt: skip
    assert drawn["profiles"] == PROFILES and drawn["title"].startswith("d8-plain: ")
    assert store.files[contract.PROFILE_ALL_EPOCHS_IMAGE].shape == (480, 800, 3)


def test_the_all_epochs_picture_colours_each_epoch_and_survives_bad_norms():
    """One line per epoch in its own colour (a colour bar beside them), the initialisation in
    black: a picture of more epochs has more colours; zeros, NaN and init alone still draw."""

    def colours(image: np.ndarray) -> int:  # saturated colours: the epochs' lines and bar
        rgb = image.reshape(-1, 3).astype(int)
        vivid = rgb[(rgb.max(axis=1) - rgb.min(axis=1)) > 60]
        return len({tuple(c // 16) for c in vivid})

    one = all_epochs_image({0: INIT, 1: EARLY}, "one epoch")
    three = all_epochs_image(PROFILES, "three epochs")
    assert one.shape == three.shape == (480, 800, 3) and three.dtype == np.uint8
    assert colours(three) > colours(one) > 0
    assert colours(all_epochs_image({0: INIT}, "initialisation only")) == 0  # black and grey
    broken = {0: [0.0, float("nan"), 1e-3], 1: [float("nan")] * 3, 2: [1e-3, 0.0, 2e-3]}
    assert all_epochs_image(broken, "diverged").shape == (480, 800, 3)


def test_a_store_error_is_raised_when_fit_ends(client, monkeypatch):
    run_id = client.create_run(client.create_experiment("broken")).info.run_id

    def refuse(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(client, "log_image", refuse)
    recorder = StepGradientRecorder()
    images = ProfileImageLogger.from_recorder(RunLog(client, run_id), recorder)
    with pytest.raises(OSError, match="disk full"):
        _tiny_fit([recorder, images], epochs=1)


def test_a_long_runs_copies_are_padded_to_its_epochs_from_the_first():
    """In a run of 1,500 epochs the copies of steps 0 .. 999 are padded to four digits too, so
    that the folder lists step 999 before step 1,000."""
    store = _Store()
    images = ProfileImageLogger(store, lambda step: INIT)
    images.set_params({"epochs": 1500})
    images.on_train_begin()
    for epoch in (8, 998, 999):  # steps 9, 999 and 1000
        images.on_epoch_end(epoch)
    images.flush()
    folder = contract.PROFILE_EPOCH_IMAGES
    names = [name for name in store.files if name.startswith(f"{folder}/")]
    assert names == [f"{folder}/epoch_{step:04d}.png" for step in (0, 9, 999, 1000)]
    assert names == sorted(names)


def test_the_all_epochs_picture_draws_the_initialisation():
    """The initialisation's profile is a dashed black line over the epochs': the picture with it
    has many more near-black pixels than the same epochs without it."""

    def black(image: np.ndarray) -> int:
        return int((image.max(axis=-1) < 60).sum())

    with_init = all_epochs_image({0: LATER, 1: EARLY, 2: INIT}, "d8-plain")
    without = all_epochs_image({1: EARLY, 2: INIT}, "d8-plain")
    assert black(with_init) > black(without) + 300
