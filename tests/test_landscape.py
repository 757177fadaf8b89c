"""Loss landscapes: Li et al.'s filter normalisation, the centre is the trained net, one trace
for the whole grid, no side effects, and the two summaries on surfaces with known answers."""

from __future__ import annotations

import keras
import numpy as np
import pandas as pd
import pytest

from resnet_exp.recording.landscape import (
    SLICE_COLUMNS,
    SURFACE_COLUMNS,
    LandscapeProbe,
    filter_normalize,
    grid_values,
    landscape_nonconvexity,
    landscape_sharpness,
    loss_landscape,
    model_directions,
    surface_curvatures,
    with_curvatures,
)

LOSS = "sparse_categorical_crossentropy"


def conv_bn_net(seed: int = 0) -> keras.Model:
    """conv(bias)-BN-relu-pool-dense: kernels, a bias, BN parameters and moving statistics
    (set away from their defaults, as training leaves them)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    x = keras.layers.Conv2D(4, 3, name="stem_conv")(inputs)
    x = keras.layers.BatchNormalization(name="stem_bn")(x)
    x = keras.layers.Activation("relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    outputs = keras.layers.Dense(3, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    rng = np.random.default_rng(seed)
    bn = model.get_layer("stem_bn")
    bn.moving_mean.assign(rng.normal(size=4).astype("float32"))
    bn.moving_variance.assign(rng.uniform(0.5, 2.0, size=4).astype("float32"))
    bn.gamma.assign(rng.uniform(0.5, 1.5, size=4).astype("float32"))
    model.compile(loss=LOSS, metrics=["accuracy"])
    return model


@pytest.fixture(scope="module")
def model() -> keras.Model:
    return conv_bn_net()


@pytest.fixture(scope="module")
def subset() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(1)
    return rng.normal(size=(50, 6, 6, 1)).astype("float32"), rng.integers(0, 3, 50)


# ---------------------------------------------------------------- directions


def test_directions_have_the_filter_norms_of_the_weights(model):
    directions = model_directions(model, seed=3)
    assert len(directions) == 2
    for direction in directions:
        for variable, d in zip(model.trainable_variables, direction, strict=True):
            w = variable.numpy()
            assert d.shape == w.shape and d.dtype == w.dtype
            if w.ndim <= 1:  # the conv's bias, BN's gamma and beta
                assert not d.any(), variable.path
                continue
            # one filter per output channel (conv) or unit (dense): the last axis
            w_norms = np.linalg.norm(w.reshape(-1, w.shape[-1]).astype(np.float64), axis=0)
            d_norms = np.linalg.norm(d.reshape(-1, d.shape[-1]).astype(np.float64), axis=0)
            assert len(d_norms) == w.shape[-1]
            np.testing.assert_allclose(d_norms, w_norms, rtol=1e-6)
    # random, not the weights: the two directions and the weights differ
    kernel = [v.path for v in model.trainable_variables].index("stem_conv/kernel")
    assert not np.allclose(directions[0][kernel], directions[1][kernel])
    assert not np.allclose(directions[0][kernel], model.trainable_variables[kernel].numpy())


def test_biases_and_batch_norm_get_a_direction_when_included(model):
    (direction,) = model_directions(model, count=1, seed=3, include_bias_bn=True)
    for variable, d in zip(model.trainable_variables, direction, strict=True):
        w = variable.numpy()
        if w.ndim <= 1 and np.any(w):  # a nonzero vector is one filter of its own norm
            assert d.any(), variable.path
            assert np.linalg.norm(d) == pytest.approx(np.linalg.norm(w), rel=1e-6)


def test_filter_normalize_per_filter_and_zero_filters():
    weights = np.zeros((3, 3, 2, 4), dtype=np.float32)
    weights[..., 1] = 2.0  # filter 1 has norm 2 * sqrt(18); filters 0, 2, 3 are zero
    d = filter_normalize(np.random.default_rng(0).standard_normal(weights.shape), weights)
    norms = np.linalg.norm(d.reshape(-1, 4), axis=0)
    np.testing.assert_allclose(norms, [0.0, 2 * np.sqrt(18), 0.0, 0.0], rtol=1e-6)
    dense = np.arange(1.0, 7.0).reshape(2, 3)  # (in, out): a column per unit
    d = filter_normalize(np.ones((2, 3)), dense)
    np.testing.assert_allclose(np.linalg.norm(d, axis=0), np.linalg.norm(dense, axis=0))


def test_directions_are_seeded_and_the_first_does_not_depend_on_the_count(model):
    one = model_directions(model, count=1, seed=5)
    two = model_directions(model, count=2, seed=5)
    other = model_directions(model, count=1, seed=6)
    for a, b, c in zip(one[0], two[0], other[0], strict=True):
        np.testing.assert_array_equal(a, b)
        if a.any():
            assert not np.array_equal(a, c)


# ---------------------------------------------------------------- the measured function


def test_centre_is_the_models_own_loss_and_accuracy(model, subset):
    x, y = subset
    result = LandscapeProbe(model, x, y, batch_size=16).slice(grid=5, span=0.5)
    centre = result.frame[result.frame["alpha"] == 0.0].iloc[0]
    predicted = model(x, training=False).numpy()  # inference mode: the moving statistics
    direct = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, predicted)))
    assert centre["loss"] == pytest.approx(direct, rel=1e-5)
    assert centre["accuracy"] == pytest.approx(np.mean(predicted.argmax(-1) == y))
    evaluated = model.evaluate(x, y, batch_size=50, verbose=0, return_dict=True)
    assert centre["loss"] == pytest.approx(evaluated["loss"], rel=1e-5)
    assert centre["accuracy"] == pytest.approx(evaluated["accuracy"])


def test_a_point_off_centre_is_the_net_with_moved_weights(model, subset):
    """w0 + a d1 + b d2, computed independently on a copy of the model."""
    x, y = subset
    probe = LandscapeProbe(model, x, y, seed=2)
    moved = keras.models.clone_model(model)
    moved.set_weights(model.get_weights())
    for variable, d1, d2 in zip(moved.trainable_variables, *probe.directions, strict=True):
        variable.assign(variable.numpy() + 0.3 * d1 - 0.2 * d2)
    predicted = moved(x, training=False).numpy()
    loss, accuracy = probe.evaluate(0.3, -0.2)
    expected = float(np.mean(keras.losses.sparse_categorical_crossentropy(y, predicted)))
    assert loss == pytest.approx(expected, rel=1e-5)
    assert accuracy == pytest.approx(np.mean(predicted.argmax(-1) == y))


def test_one_hot_labels_give_the_same_landscape(model, subset):
    x, y = subset
    sparse = LandscapeProbe(model, x, y, seed=1).evaluate(0.2, 0.1)
    onehot = LandscapeProbe(
        model, x, np.eye(3, dtype="float32")[y], "categorical_crossentropy", seed=1
    ).evaluate(0.2, 0.1)
    assert onehot == pytest.approx(sparse, rel=1e-5)


def test_the_grid_is_traced_once_and_leaves_the_model_bit_identical(model, subset):
    x, y = subset
    before = [v.numpy().copy() for v in model.variables]
    probe = LandscapeProbe(model, x, y, seed=0, batch_size=16)  # 16, 16, 16, 2: two shapes
    surface = probe.surface(grid=5, span=1.0)
    line = probe.slice(grid=7, span=1.0)
    assert probe.traces == 1
    assert len(surface.frame) == 25 and list(surface.frame.columns) == SURFACE_COLUMNS
    assert len(line.frame) == 7 and list(line.frame.columns) == SLICE_COLUMNS
    loss_landscape(model, x, y, grid=3, span=0.5, include_bias_bn=True)
    for after, was in zip([v.numpy() for v in model.variables], before, strict=True):
        np.testing.assert_array_equal(after, was)


def test_landscape_slice_is_the_surfaces_middle_row(model, subset):
    x, y = subset
    both = loss_landscape(model, x, y, grid=5, span=1.0, seed=4)
    alone = LandscapeProbe(model, x, y, seed=4).slice(grid=5, span=1.0)
    np.testing.assert_allclose(both.slice.frame["alpha"], alone.frame["alpha"])
    np.testing.assert_allclose(both.slice.frame["loss"], alone.frame["loss"], rtol=1e-6)
    assert both.slice.sharpness == pytest.approx(alone.sharpness, rel=1e-5, abs=1e-7)
    assert both.centre_loss == pytest.approx(float(alone.frame["loss"].iloc[2]), rel=1e-6)
    surface = LandscapeProbe(model, x, y, seed=4).surface(grid=5, span=1.0)
    assert both.surface.nonconvexity == surface.nonconvexity
    metrics = both.metrics()
    assert {"landscape_sharpness", "landscape_nonconvexity", "landscape_time_s"} <= set(metrics)
    assert alone.seconds > 0 and surface.seconds > 0 and both.seconds > 0


def test_grid_values_put_the_centre_exactly_on_zero():
    np.testing.assert_array_equal(grid_values(5, 1.0), [-1.0, -0.5, 0.0, 0.5, 1.0])
    assert grid_values(21, 0.7)[10] == 0.0
    with pytest.raises(ValueError, match="odd"):
        grid_values(4, 1.0)


# ---------------------------------------------------------------- the summaries


def _surface(function, grid: int = 11, span: float = 1.0) -> pd.DataFrame:
    values = grid_values(grid, span)
    rows = [(a, b, function(a, b), 1.0) for a in values for b in values]
    return pd.DataFrame(rows, columns=SURFACE_COLUMNS[:4])


def test_sharpness_is_the_mean_rise_at_half_the_span():
    alpha = grid_values(21, 1.0)
    frame = pd.DataFrame({"alpha": alpha, "loss": 0.1 + 3 * alpha**2 + alpha, "accuracy": 1.0})
    assert landscape_sharpness(frame, 0.5) == pytest.approx(0.75)  # 3 r^2; the odd part cancels
    with pytest.raises(ValueError, match="radius"):
        landscape_sharpness(frame, 2.0)


def test_finite_difference_curvatures_are_exact_on_quadratics():
    low, high = surface_curvatures(_surface(lambda a, b: 2 * a**2 + 0.5 * b**2 + a * b))
    eigen = np.linalg.eigvalsh([[4.0, 1.0], [1.0, 1.0]])
    assert np.isnan(low[0, 0]) and np.isnan(high[-1, 3])
    np.testing.assert_allclose(low[1:-1, 1:-1], eigen[0])
    np.testing.assert_allclose(high[1:-1, 1:-1], eigen[1])


def test_curvature_columns_belong_to_their_rows():
    """f = a^2 + b^3: curvatures 2 (in alpha) and 6b (in beta), exact for central differences."""
    frame = with_curvatures(_surface(lambda a, b: a**2 + b**3).sample(frac=1.0, random_state=0))
    inner = frame.dropna()
    assert len(inner) == 81
    expected = np.stack([np.full(len(inner), 2.0), 6 * inner["beta"].to_numpy()])
    np.testing.assert_allclose(inner["curvature_min"], expected.min(axis=0), atol=1e-9)
    np.testing.assert_allclose(inner["curvature_max"], expected.max(axis=0), atol=1e-9)


def test_nonconvexity_of_known_surfaces():
    assert landscape_nonconvexity(_surface(lambda a, b: a**2 + 3 * b**2)) == 0.0  # a bowl
    assert landscape_nonconvexity(_surface(lambda a, b: a**2 - b**2)) == 1.0  # a saddle
    assert landscape_nonconvexity(_surface(lambda a, b: -(a**2) - b**2)) == 1.0  # a cap
    assert landscape_nonconvexity(_surface(lambda a, b: 0.0 * a)) == 0.0  # flat
    # a bowl that flattens past its rim: non-convex outside |alpha| = 1 / sqrt(3) only
    rim = landscape_nonconvexity(_surface(lambda a, b: np.tanh(3 * a**2) + b**2, span=1.0))
    assert 0.0 < rim < 1.0


def test_filter_normalize_rescales_each_filter_without_changing_its_direction():
    """Each filter of the result is the same filter of the random direction times one positive
    factor (Li et al.'s d_i ||w_i|| / ||d_i||), not re-drawn or rescaled piece by piece."""
    rng = np.random.default_rng(0)
    weights = rng.normal(size=(3, 3, 2, 4)).astype(np.float32)
    weights[..., 2] *= 10.0  # filters of different sizes
    direction = rng.standard_normal(weights.shape)
    result = filter_normalize(direction, weights).astype(np.float64)
    for o in range(weights.shape[-1]):
        d, r = direction[..., o].ravel(), result[..., o].ravel()
        factor = np.linalg.norm(weights[..., o]) / np.linalg.norm(d)
        np.testing.assert_allclose(r, factor * d, rtol=1e-5, atol=1e-6)


def test_a_valley_flat_along_one_direction_is_convex():
    """A small positive curvature (under rtol of the largest) is not non-convexity, nor is a
    negative one within that tolerance (float32 noise); a clearly negative one is."""
    assert landscape_nonconvexity(_surface(lambda a, b: a**2 + 1e-3 * b**2)) == 0.0
    assert landscape_nonconvexity(_surface(lambda a, b: a**2 - 1e-3 * b**2)) == 0.0
    assert landscape_nonconvexity(_surface(lambda a, b: a**2 - 0.1 * b**2)) == 1.0
