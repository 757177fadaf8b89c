"""Hessian curvature: products against finite differences, estimates against the explicit
Hessian of a tiny net, the algorithms against matrices with a known spectrum, no side effects."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf

from resnet_exp import contract
from resnet_exp.recording.curvature import (
    DENSITY_COLUMNS,
    HessianProbe,
    exact_moments_twin,
    hessian_curvature,
    hutchinson_trace,
    lanczos_density,
    power_iteration,
)

LOSS = "sparse_categorical_crossentropy"


def dense_net(seed: int = 0) -> keras.Model:
    """4 -> 3 (tanh) -> 3 (softmax): 27 parameters, a Hessian small enough to write out."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    hidden = keras.layers.Dense(3, activation="tanh", name="hidden")(inputs)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(hidden)
    model = keras.Model(inputs, outputs)
    model.compile(loss=LOSS)
    return model


def conv_bn_net(seed: int = 0) -> keras.Model:
    """conv-BN-tanh-pool-dense, with moving statistics away from their defaults.

    tanh, not relu: finite differences of gradients converge to the Hessian only
    where the loss is smooth (a ReLU's kinks add jumps that do not shrink with the step).
    """
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(3, 3, use_bias=False, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("tanh")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("stem_bn")
    bn.moving_mean.assign(rng.normal(size=3).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=3).astype("float32"))
    model.compile(loss=LOSS)
    return model


@pytest.fixture(scope="module")
def dense_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(32, 4)).astype("float32"), rng.integers(0, 3, 32)


@pytest.fixture(scope="module")
def conv_batch() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(2)
    return rng.normal(size=(16, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 16)


def stateless_loss(model, flat, x, y, training=False):
    """The mean data loss at a flat parameter vector, without touching the model."""
    shapes = [tuple(v.shape) for v in model.trainable_variables]
    sizes = [int(np.prod(s)) for s in shapes]
    parts = [tf.reshape(p, s) for p, s in zip(tf.split(flat, sizes), shapes, strict=True)]
    state = [tf.convert_to_tensor(v.value) for v in model.non_trainable_variables]
    y_pred, _ = model.stateless_call(parts, state, x, training=training)
    return tf.reduce_mean(keras.losses.sparse_categorical_crossentropy(y, y_pred))


def flat_weights(model) -> tf.Tensor:
    return tf.concat([tf.reshape(v.value, [-1]) for v in model.trainable_variables], 0)


def gradient_at(model, flat, x, y, training=False) -> np.ndarray:
    flat = tf.convert_to_tensor(flat, tf.float32)
    with tf.GradientTape() as tape:
        tape.watch(flat)
        loss = stateless_loss(model, flat, x, y, training)
    return tape.gradient(loss, flat).numpy().astype(np.float64)


def explicit_hessian(model, x, y) -> np.ndarray:
    """The full Hessian, as the jacobian of the gradient (inference mode)."""
    flat = flat_weights(model)
    with tf.GradientTape() as outer:
        outer.watch(flat)
        with tf.GradientTape() as inner:
            inner.watch(flat)
            loss = stateless_loss(model, flat, x, y)
        grad = inner.gradient(loss, flat)
    hessian = outer.jacobian(grad, flat).numpy().astype(np.float64)
    return (hessian + hessian.T) / 2


@pytest.fixture(scope="module")
def dense_case(dense_batch):
    model = dense_net()
    x, y = dense_batch
    hessian = explicit_hessian(model, x, y)
    return model, x, y, hessian, np.linalg.eigvalsh(hessian)


class Matrix:
    """An explicit symmetric matrix as an operator: the algorithms without a network."""

    def __init__(self, matrix: np.ndarray):
        self.matrix = matrix
        self.size = matrix.shape[0]

    def matvec(self, v: np.ndarray) -> np.ndarray:
        return self.matrix @ v


# ---------------------------------------------------------------- products


@pytest.mark.parametrize(
    ("mode", "training"), [("reverse", False), ("reverse", True), ("forward", False)]
)
def test_hessian_vector_product_equals_finite_difference_of_gradients(conv_batch, mode, training):
    model = conv_bn_net()
    x, y = conv_batch
    probe = HessianProbe(model, x, y, training=training, mode=mode)
    v = np.random.default_rng(3).standard_normal(probe.size)
    v /= np.linalg.norm(v)
    w = flat_weights(model).numpy().astype(np.float64)
    eps = 1e-2
    difference = (
        gradient_at(model, w + eps * v, x, y, training)
        - gradient_at(model, w - eps * v, x, y, training)
    ) / (2 * eps)
    product = probe.matvec(v)
    assert np.linalg.norm(product - difference) <= 2e-3 * np.linalg.norm(difference)


def dense_bn_net(seed: int = 0) -> keras.Model:
    """4 -> 3 -> BN -> tanh -> 3 (softmax): batch statistics over few examples."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((4,))
    x = keras.layers.Dense(3, name="hidden")(inputs)
    x = keras.layers.BatchNormalization(name="hidden_bn")(x)
    x = keras.layers.Activation("tanh")(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    model.compile(loss=LOSS)
    return model


def test_tensorflow_double_backprop_through_training_batch_norm_is_still_wrong(dense_batch):
    """Why `exact_moments_twin` exists: tf.nn.moments stops the mean's gradient, so the
    model's own second derivatives in training mode miss a term, which finite
    differences of its (exact) gradients show. If this fails, TensorFlow fixed it and
    the twin can go. (On a ResNet-20 on digits the miss was 6-7% of a product.)"""
    model = dense_bn_net()
    x, y = dense_batch[0][:8], dense_batch[1][:8]
    w = flat_weights(model)
    v = np.random.default_rng(3).standard_normal(int(w.shape[0]))
    v /= np.linalg.norm(v)
    with tf.GradientTape() as outer:
        outer.watch(w)
        with tf.GradientTape() as inner:
            inner.watch(w)
            loss = stateless_loss(model, w, x, y, training=True)
        dot = tf.reduce_sum(inner.gradient(loss, w) * tf.constant(v, tf.float32))
    naive = outer.gradient(dot, w).numpy()
    eps, w = 1e-2, w.numpy().astype(np.float64)
    difference = (
        gradient_at(model, w + eps * v, x, y, True) - gradient_at(model, w - eps * v, x, y, True)
    ) / (2 * eps)
    exact = HessianProbe(model, x, y, training=True).matvec(v)
    scale = np.linalg.norm(difference)
    assert np.linalg.norm(exact - difference) <= 2e-3 * scale
    assert np.linalg.norm(naive - difference) > 5e-2 * scale


def test_exact_moments_twin_computes_what_the_model_computes(conv_batch):
    model = conv_bn_net()
    x, _ = conv_batch
    twin = exact_moments_twin(model)
    values = [
        [tf.convert_to_tensor(v.value) for v in vs]
        for vs in (model.trainable_variables, model.non_trainable_variables)
    ]
    for training in (False, True):
        mine, _ = model.stateless_call(*values, x, training=training)
        theirs, _ = twin.stateless_call(*values, x, training=training)
        np.testing.assert_allclose(theirs.numpy(), mine.numpy(), rtol=1e-5, atol=1e-6)


def test_product_matches_the_explicit_hessian(dense_case):
    model, x, y, hessian, _ = dense_case
    probe = HessianProbe(model, x, y)
    v = np.random.default_rng(4).standard_normal(probe.size)
    np.testing.assert_allclose(probe.matvec(v), hessian @ v, rtol=1e-4, atol=1e-5)
    assert probe.loss == pytest.approx(float(stateless_loss(model, flat_weights(model), x, y)))


# ---------------------------------------------------------------- estimates vs the explicit Hessian


def test_top_eigenvalue_matches_eigvalsh(dense_case):
    model, x, y, _, eigenvalues = dense_case
    largest = eigenvalues[np.argmax(np.abs(eigenvalues))]
    result = power_iteration(HessianProbe(model, x, y), iterations=500, rtol=1e-6)
    assert result.top == pytest.approx(largest, rel=1e-3)
    assert result.converged[0]
    assert 1 < result.iterations[0] < 500
    assert result.seconds > 0


def test_top_k_by_deflation_match_eigvalsh(dense_case):
    model, x, y, _, eigenvalues = dense_case
    expected = eigenvalues[np.argsort(-np.abs(eigenvalues))][:3]
    result = power_iteration(HessianProbe(model, x, y), k=3, iterations=2000, rtol=1e-7)
    np.testing.assert_allclose(result.eigenvalues, expected, rtol=1e-2)
    vectors = result.eigenvectors
    np.testing.assert_allclose(vectors @ vectors.T, np.eye(3), atol=1e-6)


def test_power_iteration_stops_at_the_iteration_cap(dense_case):
    model, x, y, _, _ = dense_case
    result = power_iteration(HessianProbe(model, x, y), iterations=3, rtol=0.0)
    assert result.iterations[0] == 3
    assert not result.converged[0]


def test_the_residual_bounds_the_distance_to_an_eigenvalue():
    """Stopped early, the estimate is off, but an eigenvalue lies within its residual; at
    convergence the residual is small. Opposite signs of similar size: the hard case."""
    spectrum = np.array([4.0, -3.8, 1.0, 0.5, -0.2, 0.1])
    q, _ = np.linalg.qr(np.random.default_rng(1).standard_normal((6, 6)))
    operator = Matrix(q @ np.diag(spectrum) @ q.T)
    for iterations in (2, 5, 20):
        top = power_iteration(operator, iterations=iterations, rtol=0.0, seed=3)
        nearest = np.min(np.abs(spectrum - top.top))
        assert nearest <= top.residuals[0] + 1e-12, (iterations, top.top, top.residuals)
    done = power_iteration(operator, iterations=5000, rtol=1e-12, seed=3)
    assert done.top == pytest.approx(4.0, rel=1e-6) and done.residuals[0] < 1e-3


def test_trace_is_within_three_standard_errors_of_the_exact_trace(dense_case):
    model, x, y, hessian, _ = dense_case
    result = hutchinson_trace(HessianProbe(model, x, y), samples=50, seed=0)
    assert result.stderr > 0
    assert abs(result.trace - np.trace(hessian)) <= 3 * result.stderr
    assert result.values.shape == (50,)
    assert result.size == hessian.shape[0]
    again = hutchinson_trace(HessianProbe(model, x, y), samples=50, seed=0)
    assert again.trace == result.trace  # seeded


def test_density_integrates_to_one_and_its_mean_is_trace_over_n(dense_case):
    model, x, y, hessian, eigenvalues = dense_case
    n = hessian.shape[0]
    result = lanczos_density(HessianProbe(model, x, y), runs=20, steps=n, seed=0)
    nodes = result.nodes
    assert list(nodes.columns) == DENSITY_COLUMNS
    assert nodes["weight"].sum() == pytest.approx(1.0, abs=1e-9)
    # each run's mean is its own v'Hv / n: the runs' spread is the mean's standard error
    per_run = nodes.assign(m=nodes["weight"] * nodes["eigenvalue"] * 20).groupby("run")["m"].sum()
    stderr = per_run.std(ddof=1) / np.sqrt(20)
    assert abs(result.mean - np.trace(hessian) / n) <= 3 * stderr
    # Lanczos finds the extremes of the spectrum
    assert nodes["eigenvalue"].max() == pytest.approx(eigenvalues[-1], rel=1e-3)
    assert nodes["eigenvalue"].min() == pytest.approx(eigenvalues[0], rel=1e-2, abs=1e-4)
    grid = np.linspace(eigenvalues[0] - 1, eigenvalues[-1] + 1, 4001)
    smooth = result.smoothed(grid, sigma=0.05)
    assert np.sum(smooth) * (grid[1] - grid[0]) == pytest.approx(1.0, rel=1e-3)


# ---------------------------------------------------------------- the algorithms on known spectra


def test_algorithms_on_a_known_spectrum():
    spectrum = np.array([5.0, -3.0, 2.0, 1.0, 0.5, 0.25, 0.0, -0.1])
    q, _ = np.linalg.qr(np.random.default_rng(0).standard_normal((8, 8)))
    operator = Matrix(q @ np.diag(spectrum) @ q.T)
    top = power_iteration(operator, k=2, iterations=500, rtol=1e-10)
    np.testing.assert_allclose(top.eigenvalues, [5.0, -3.0], rtol=1e-6)
    density = lanczos_density(operator, runs=1, steps=8)
    np.testing.assert_allclose(np.sort(density.nodes["eigenvalue"]), np.sort(spectrum), atol=1e-6)


def test_diagonal_operator_gives_exact_trace_and_uniform_weights():
    """v'Dv = tr(D) for every Rademacher v, and its spectral measure is uniform."""
    spectrum = np.arange(1.0, 7.0)
    operator = Matrix(np.diag(spectrum))
    trace = hutchinson_trace(operator, samples=5)
    assert trace.trace == pytest.approx(21.0) and trace.stderr == pytest.approx(0.0)
    density = lanczos_density(operator, runs=2, steps=6)
    np.testing.assert_allclose(np.sort(density.nodes["eigenvalue"]), np.repeat(spectrum, 2))
    np.testing.assert_allclose(density.nodes["weight"], 1 / 12)


def test_lanczos_stops_when_the_krylov_space_is_exhausted():
    operator = Matrix(np.diag([2.0, 2.0, 2.0, 1.0, 1.0]))  # two distinct eigenvalues
    density = lanczos_density(operator, runs=1, steps=5)
    assert len(density.nodes) == 2
    np.testing.assert_allclose(np.sort(density.nodes["eigenvalue"]), [1.0, 2.0])
    np.testing.assert_allclose(density.nodes.sort_values("eigenvalue")["weight"], [0.4, 0.6])


# ---------------------------------------------------------------- one trace, no side effects


def test_one_trace_serves_every_algorithm(conv_batch):
    model = conv_bn_net()
    x, y = conv_batch
    probe = HessianProbe(model, x, y)
    power_iteration(probe, k=2, iterations=5)
    hutchinson_trace(probe, samples=3)
    lanczos_density(probe, runs=2, steps=4)
    assert probe.traces == 1
    assert probe.products > 10


def test_curvature_leaves_weights_and_batch_norm_statistics_bit_identical(conv_batch):
    model = conv_bn_net()
    x, y = conv_batch
    before = [v.numpy().copy() for v in model.variables]
    losses = []
    for training in (False, True):
        result = hessian_curvature(
            model, x, y, iterations=3, samples=3, density_runs=1, lanczos_steps=3, training=training
        )
        assert result.training is training
        assert np.isfinite(result.top.top) and np.isfinite(result.trace.trace)
        losses.append(result.loss)
    # moving statistics away from the batch's: the two modes are different functions
    assert losses[0] != pytest.approx(losses[1], rel=1e-3)
    after = [v.numpy() for v in model.variables]
    assert len(after) == len(before)
    for a, b in zip(after, before, strict=True):
        np.testing.assert_array_equal(a, b)


def test_curvature_reports_its_parts_and_metrics(dense_case):
    model, x, y, hessian, eigenvalues = dense_case
    result = hessian_curvature(model, x, y, iterations=200, rtol=1e-6, top_k=2, samples=10)
    assert result.size == hessian.shape[0]
    assert result.density is None
    assert result.seconds >= result.top.seconds + result.trace.seconds
    metrics = result.metrics()
    top = eigenvalues[np.argmax(np.abs(eigenvalues))]
    assert metrics["hessian_top_eig"] == pytest.approx(top, rel=1e-3)
    assert set(metrics) == set(contract.CURVATURE_METRICS)
    row = result.row(epoch=3, examples=len(x))
    assert list(row)[: len(contract.CURVATURE_COLUMNS)] == contract.CURVATURE_COLUMNS
    assert row["top_eig"] == metrics["hessian_top_eig"] and row["epoch"] == 3
    second = sorted(np.abs(eigenvalues))[-2]
    assert abs(row["eig_2"]) == pytest.approx(second, rel=1e-2)


def test_bad_arguments_are_refused(dense_case):
    model, x, y, _, _ = dense_case
    with pytest.raises(ValueError, match="mode"):
        HessianProbe(model, x, y, mode="sideways")
    with pytest.raises(ValueError, match="samples"):
        hutchinson_trace(Matrix(np.eye(2)), samples=1)


# ---------------------------------------------------------------- a probe and a recorder over a run


def test_a_reused_probe_reports_the_batch_loss_at_the_current_weights(dense_batch):
    """A run measures at several epochs through one probe: each measurement's batch loss is
    that of the weights as they are then, not of the first measurement's."""
    from resnet_exp.recording.curvature import measure_curvature

    model = dense_net()
    x, y = dense_batch
    probe = HessianProbe(model, x, y)
    first = measure_curvature(probe, iterations=2, samples=2)
    for variable in model.trainable_variables:
        variable.assign(1.5 * variable.numpy())
    second = measure_curvature(probe, iterations=2, samples=2)
    expected = float(stateless_loss(model, flat_weights(model), x, y))
    assert second.loss == pytest.approx(expected, rel=1e-5)
    assert second.loss != pytest.approx(first.loss, rel=1e-3)  # the weights moved the loss
    assert probe.traces == 1


def test_a_run_measured_every_epoch_is_not_measured_again_after_training(dense_batch):
    """With every=1 the last epoch is measured at its end: `finish` adds no second row for it
    (and no second set of metrics), and a later step is measured."""
    from types import SimpleNamespace

    from resnet_exp.recording.curvature_recorder import CurvatureRecorder

    model = dense_net()
    model.compile(optimizer="sgd", loss=LOSS)
    x, y = dense_batch
    settings = SimpleNamespace(
        iterations=2, rtol=1e-3, top_k=1, samples=2, density_runs=0, lanczos_steps=3,
        every=1, bn_mode="auto",
    )  # fmt: skip
    logged = []
    recorder = CurvatureRecorder(x, y, settings, sink=lambda m, step: logged.append(step))
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[recorder], verbose=0)
    assert recorder.finish(2, model) == {}
    assert [row["epoch"] for row in recorder.rows] == [0, 1, 2]
    assert logged == [1, 2] and sorted(recorder.history) == [0, 1, 2]
    assert recorder.finish(3, model)  # a step not measured yet is
    assert [row["epoch"] for row in recorder.rows] == [0, 1, 2, 3]
