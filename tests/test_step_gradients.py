"""StepGradientRecorder: the training steps' own gradients, right values, no side effects."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from test_gradients import CONV_KERNELS, conv_net
from test_gradients_reach import HeadFirst
from twins import assert_training_unchanged

from resnet_exp.recording.gradients import StepGradientRecorder


@pytest.fixture(scope="module")
def batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(32, 8, 8, 1)).astype("float32"), rng.integers(0, 10, 32)


def compiled(model: keras.Model, optimizer=None) -> keras.Model:
    model.compile(
        optimizer=optimizer or keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
    )
    return model


def tape_norms(model: keras.Model, x, y) -> np.ndarray:
    """Kernel gradient norms of the compiled loss on (x, y), in creation order."""
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    with tf.GradientTape() as tape:
        loss = keras.losses.SparseCategoricalCrossentropy()(y, model(x, training=True))
    return np.array([np.linalg.norm(g) for g in tape.gradient(loss, kernels)])


def test_step_zero_is_the_first_step_and_each_epoch_its_steps(batch):
    """One batch per epoch: step 0 and 1 are the first step, step 2 the second."""
    x, y = batch
    keras.utils.set_random_seed(21)
    reference = compiled(conv_net())
    at_init = tape_norms(reference, x, y)
    reference.fit(x, y, batch_size=32, epochs=1, shuffle=False, verbose=0)
    after_one = tape_norms(reference, x, y)

    keras.utils.set_random_seed(21)
    model = compiled(conv_net())
    recorder = StepGradientRecorder()
    history = model.fit(
        x, y, batch_size=32, epochs=2, shuffle=False, callbacks=[recorder], verbose=0
    )

    assert recorder.layer_names == CONV_KERNELS
    frame = recorder.profile_frame()
    for step, expected in [(0, at_init), (1, at_init), (2, after_one)]:
        grads = frame[frame["epoch"] == step].sort_values("layer_index")["grad_norm"]
        np.testing.assert_allclose(grads, expected, rtol=1e-4, err_msg=f"step {step}")
    weights = frame[frame["epoch"] == 2].sort_values("layer_index")["weight_norm"]
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    np.testing.assert_allclose(weights, [np.linalg.norm(k.numpy()) for k in kernels], rtol=1e-6)
    assert history.history["grad_first_norm"] == [
        recorder.history[s]["grad_first_norm"] for s in (1, 2)
    ]
    assert "probe_loss" not in recorder.history[0]


def test_training_is_identical_with_and_without_the_hook(batch):
    x, y = batch
    assert_training_unchanged(
        lambda: compiled(conv_net(dropout=0.3)), StepGradientRecorder, x, y, seed=22, batch_size=8
    )


def test_subclassed_model_forward_order_and_the_hook_is_removed_after_fit(batch):
    x, y = batch
    model = compiled(HeadFirst())
    recorder = StepGradientRecorder()
    model.fit(x, y, batch_size=8, epochs=2, callbacks=[recorder], verbose=0)
    assert [n.split("/")[-1] for n in recorder.layer_names] == ["body", "middle", "head"]
    assert sorted(recorder.history) == [0, 1, 2]
    assert "apply" not in vars(model.optimizer)
    model.fit(x, y, batch_size=8, epochs=1, verbose=0)  # a later fit runs without the hook
    assert sorted(recorder.history) == [0, 1, 2]


def test_loss_scaling_is_undone(batch):
    x, y = batch
    norms = []
    for scaled in (False, True):
        keras.utils.set_random_seed(23)
        optimizer = keras.optimizers.SGD(0.05)
        if scaled:
            optimizer = keras.optimizers.LossScaleOptimizer(optimizer, initial_scale=2.0**10)
        recorder = StepGradientRecorder()
        compiled(conv_net(), optimizer).fit(
            x, y, batch_size=16, epochs=1, shuffle=False, callbacks=[recorder], verbose=0
        )
        norms.append(recorder.profile_frame()["grad_norm"].to_numpy())
    np.testing.assert_allclose(norms[1], norms[0], rtol=1e-4)
