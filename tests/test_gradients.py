"""GradientRecorder on tiny real Keras models: right values, and no side effects."""

from __future__ import annotations

import math

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers

from resnet_exp.contract import PROFILE_COLUMNS
from resnet_exp.recording.gradients import GradientRecorder, kernel_gradient_norms

NUM_CLASSES = 10
CONV_KERNELS = ["stem_conv", "block1_conv", "block2_conv", "classifier"]


def conv_net(*, softmax: bool = True, dropout: float = 0.0) -> keras.Model:
    """A small conv net with batch norm, laid out like the project's ResNets."""
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, padding="same", name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i in (1, 2):
        x = layers.Conv2D(4, 3, padding="same", name=f"block{i}_conv")(x)
        x = layers.BatchNormalization(name=f"block{i}_bn")(x)
        x = layers.ReLU(name=f"block{i}_relu")(x)
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    if dropout:
        x = layers.Dropout(dropout, name="dropout")(x)
    outputs = layers.Dense(
        NUM_CLASSES, activation="softmax" if softmax else None, name="classifier"
    )(x)
    return keras.Model(inputs, outputs, name="tiny_conv")


def dense_net(*, zero_classifier: bool = False) -> keras.Model:
    inputs = keras.Input((64,))
    x = layers.Dense(16, activation="tanh", name="dense_1")(inputs)
    x = layers.Dense(16, activation="tanh", name="dense_2")(x)
    outputs = layers.Dense(
        NUM_CLASSES,
        name="classifier",
        kernel_initializer="zeros" if zero_classifier else "glorot_uniform",
    )(x)
    return keras.Model(inputs, outputs, name="tiny_dense")


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(96, 8, 8, 1)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, size=96)
    return x, y


def reference_norms(model: keras.Model, x, y, loss_fn) -> tuple[np.ndarray, np.ndarray, float]:
    """The plain way: a tape around `model(x, training=True)`, then restore the state."""
    state = [v.numpy().copy() for v in model.non_trainable_variables]
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, training=True))
    grads = tape.gradient(loss, kernels)
    for variable, value in zip(model.non_trainable_variables, state, strict=True):
        variable.assign(value)
    grad_norms = np.array([np.linalg.norm(g.numpy()) for g in grads])
    weight_norms = np.array([np.linalg.norm(k.numpy()) for k in kernels])
    return grad_norms, weight_norms, float(loss)


def profile_at(recorder: GradientRecorder, step: int) -> tuple[np.ndarray, np.ndarray]:
    frame = recorder.profile_frame()
    rows = frame[frame["epoch"] == step].sort_values("layer_index")
    assert list(rows["layer_name"]) == recorder.layer_names
    return rows["grad_norm"].to_numpy(), rows["weight_norm"].to_numpy()


def assert_matches_reference(recorder: GradientRecorder, step: int, reference) -> None:
    ref_grads, ref_weights, ref_loss = reference
    grads, weights = profile_at(recorder, step)
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(weights, ref_weights, rtol=1e-6)
    metrics = recorder.history[step]
    assert metrics["grad_first_norm"] == pytest.approx(ref_grads[0], rel=1e-5)
    assert metrics["grad_last_norm"] == pytest.approx(ref_grads[-1], rel=1e-5)
    assert metrics["grad_first_rel"] == pytest.approx(ref_grads[0] / ref_weights[0], rel=1e-5)
    assert metrics["grad_last_rel"] == pytest.approx(ref_grads[-1] / ref_weights[-1], rel=1e-5)
    assert metrics["grad_first_last_ratio"] == pytest.approx(ref_grads[0] / ref_grads[-1], rel=1e-5)
    assert metrics["probe_loss"] == pytest.approx(ref_loss, rel=1e-5)
    # The summary is the profile's first and last row, exactly.
    assert metrics["grad_first_norm"] == grads[0]
    assert metrics["grad_last_norm"] == grads[-1]
    assert metrics["grad_first_rel"] == grads[0] / weights[0]
    assert metrics["grad_first_last_ratio"] == grads[0] / grads[-1]


def test_values_match_a_plain_gradient_tape_at_init_and_after_an_epoch(images):
    x, y = images
    keras.utils.set_random_seed(1)
    model = conv_net()
    model.compile(optimizer=keras.optimizers.SGD(0.1), loss="sparse_categorical_crossentropy")
    x_probe, y_probe = x[:32], y[:32]
    reference_loss = keras.losses.SparseCategoricalCrossentropy()

    at_init = reference_norms(model, x_probe, y_probe, reference_loss)
    recorder = GradientRecorder(x_probe, y_probe)
    model.fit(x, y, batch_size=32, epochs=1, shuffle=False, callbacks=[recorder], verbose=0)
    after_epoch = reference_norms(model, x_probe, y_probe, reference_loss)

    assert recorder.layer_names == CONV_KERNELS
    assert_matches_reference(recorder, 0, at_init)
    assert_matches_reference(recorder, 1, after_epoch)
    assert not np.allclose(at_init[0], after_epoch[0])  # training did move the gradients

    names, grads, weights, loss = kernel_gradient_norms(model, x_probe, y_probe)
    assert names == CONV_KERNELS
    np.testing.assert_allclose(grads, after_epoch[0], rtol=1e-5, atol=1e-8)
    np.testing.assert_allclose(weights, after_epoch[1], rtol=1e-6)
    assert loss == pytest.approx(after_epoch[2], rel=1e-5)


def test_a_measurement_leaves_every_variable_untouched(images):
    x, y = images
    keras.utils.set_random_seed(2)
    model = conv_net(dropout=0.5)
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=32, epochs=1, verbose=0)  # moving stats away from 0/1
    before = {v.path: v.numpy().copy() for v in model.variables}
    before_optimizer = [v.numpy().copy() for v in model.optimizer.variables]
    assert any("moving_mean" in path for path in before)
    assert any("seed_generator_state" in path for path in before)

    recorder = GradientRecorder(x[:32], y[:32])
    recorder.set_model(model)
    recorder.measure(0)
    recorder.measure(1)
    kernel_gradient_norms(model, x[:32], y[:32])

    for variable in model.variables:
        np.testing.assert_array_equal(
            variable.numpy(), before[variable.path], err_msg=variable.path
        )
    for variable, value in zip(model.optimizer.variables, before_optimizer, strict=True):
        np.testing.assert_array_equal(variable.numpy(), value)
    assert recorder.history[0] == recorder.history[1]  # same state, same probe: same numbers
    recorder.measure(1)  # a step measured again replaces its rows, keeps the others
    steps = recorder.profile_frame()["epoch"].tolist()
    assert steps.count(0) == steps.count(1) == len(recorder.layer_names)


def _seeded_fit(images, *, record: bool, seed: int = 3, epochs: int = 2):
    x, y = images
    keras.utils.set_random_seed(seed)
    model = conv_net(dropout=0.3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9), loss="sparse_categorical_crossentropy"
    )
    callbacks = [GradientRecorder(x[:32], y[:32])] if record else []
    history = model.fit(x, y, batch_size=16, epochs=epochs, callbacks=callbacks, verbose=0)
    # By position: seed-generator paths carry a process-wide counter (seed_generator_2).
    return history.history["loss"], [(v.path, v.numpy()) for v in model.variables]


def test_a_seeded_run_trains_identically_with_and_without_the_recorder(images):
    tf.config.experimental.enable_op_determinism()
    losses_plain, weights_plain = _seeded_fit(images, record=False)
    losses_recorded, weights_recorded = _seeded_fit(images, record=True)

    assert losses_recorded == losses_plain
    assert len(weights_recorded) == len(weights_plain)
    assert any("moving_variance" in path for path, _ in weights_plain)
    assert any("seed_generator_state" in path for path, _ in weights_plain)
    for (path, value), (_, recorded) in zip(weights_plain, weights_recorded, strict=True):
        np.testing.assert_array_equal(recorded, value, err_msg=path)


def test_history_logs_and_profile_cover_every_step(images):
    x, y = images
    epochs = 3
    keras.utils.set_random_seed(4)
    model = conv_net()
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    recorder = GradientRecorder(x[:32], y[:32])
    fit_history = model.fit(x, y, batch_size=32, epochs=epochs, callbacks=[recorder], verbose=0)

    assert sorted(recorder.history) == list(range(epochs + 1))
    assert (recorder.first_layer, recorder.last_layer) == ("stem_conv", "classifier")
    for key in recorder.history[0]:
        logged = fit_history.history[key]
        assert logged == [recorder.history[step][key] for step in range(1, epochs + 1)]

    frame = recorder.profile_frame()
    assert list(frame.columns) == PROFILE_COLUMNS
    assert len(recorder.profile) == len(frame) == (epochs + 1) * len(CONV_KERNELS)
    assert sorted(frame["epoch"].unique()) == list(range(epochs + 1))
    assert (
        frame.groupby("epoch")["layer_index"].apply(list) == [[0, 1, 2, 3]] * (epochs + 1)
    ).all()
    # Traced once, reused at every step.
    assert recorder._probe._fn.experimental_get_tracing_count() == 1


def test_dense_model_with_a_loss_object(images):
    x_images, y = images
    x = x_images.reshape(len(x_images), -1)
    y_onehot = keras.utils.to_categorical(y, NUM_CLASSES)
    keras.utils.set_random_seed(5)
    model = dense_net()
    loss = keras.losses.CategoricalCrossentropy(from_logits=True)
    model.compile(optimizer="adam", loss=loss)
    recorder = GradientRecorder(x[:32], y_onehot[:32])
    model.fit(x, y_onehot, batch_size=32, epochs=2, callbacks=[recorder], verbose=0)

    assert recorder.layer_names == ["dense_1", "dense_2", "classifier"]
    assert sorted(recorder.history) == [0, 1, 2]
    reference = reference_norms(model, x[:32], y_onehot[:32], loss)
    assert_matches_reference(recorder, 2, reference)


def test_an_explicit_loss_overrides_the_compiled_one(images):
    x, y = images
    keras.utils.set_random_seed(6)
    model = conv_net(softmax=False)
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    probe_loss = keras.losses.SparseCategoricalCrossentropy(from_logits=True, reduction="sum")
    names, grads, _, loss = kernel_gradient_norms(model, x[:32], y[:32], probe_loss)
    ref_grads, _, ref_loss = reference_norms(model, x[:32], y[:32], probe_loss)
    assert names == CONV_KERNELS
    np.testing.assert_allclose(grads, ref_grads, rtol=1e-5)
    assert loss == pytest.approx(ref_loss, rel=1e-5)


def test_non_finite_values_are_recorded_not_raised(images):
    x_images, y = images
    x = x_images.reshape(len(x_images), -1)
    keras.utils.set_random_seed(7)
    model = dense_net(zero_classifier=True)
    model.compile(
        optimizer="sgd", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True)
    )
    recorder = GradientRecorder(x[:32], y[:32])
    recorder.set_model(model)

    zero_kernel = recorder.measure(0)  # a zero classifier kernel: division by a zero norm
    assert math.isinf(zero_kernel["grad_last_rel"])

    first = model.get_layer("dense_1").kernel
    first.assign(np.full(first.shape, np.nan, dtype="float32"))
    broken = recorder.measure(1)
    assert all(math.isnan(value) for value in broken.values())
    assert recorder.profile_frame().query("epoch == 1")["grad_norm"].isna().all()


def test_a_model_without_a_loss_is_a_clear_error(images):
    x, y = images
    model = conv_net()
    with pytest.raises(ValueError, match="No loss"):
        kernel_gradient_norms(model, x[:8], y[:8])
