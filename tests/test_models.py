"""The model builders: paper-faithful sizes, exact plain/residual twins, stable layer names.

Real Keras models, built symbolically; small 8x8x1 inputs wherever the
parameter count does not depend on the input size.
"""

from __future__ import annotations

from typing import Any

import keras
import numpy as np
import pytest
import specs
from twins import kernel_variables

from resnet_exp.config.depths import DepthError
from resnet_exp.models import PadShortcut

SMALL = (8, 8, 1)
# Small but complete members of each family (resnet_basic with few filters to stay fast).
FAMILY_SPECS = [
    ("resnet_cifar", 8, {}),
    ("resnet_basic", 10, {"base_filters": 4, "shortcut": "B"}),
    ("resnet_basic", 10, {"base_filters": 4, "shortcut": "A"}),
    ("mlp", 4, {"width": 16}),
]


def build(name: str, depth: int, **kwargs: Any) -> keras.Model:
    kwargs.setdefault("input_shape", SMALL)
    kwargs.setdefault("num_classes", 3)
    return specs.build(name, depth, **kwargs)


def trainable_params(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def predict(model: keras.Model, x: np.ndarray) -> np.ndarray:
    """One eager forward pass; `model.predict` would trace a tf.function per model (slow)."""
    return keras.ops.convert_to_numpy(model(x.astype("float32"), training=False))


def layer_names(model: keras.Model) -> list[str]:
    return [layer.name for layer in model.layers]


@pytest.fixture(scope="module")
def resnet18() -> keras.Model:
    return build(
        "resnet_basic", 18, shortcut="B", base_filters=64, input_shape=(32, 32, 3), num_classes=10
    )


@pytest.mark.parametrize(("depth", "paper_params"), [(20, 0.27e6), (56, 0.85e6)])
def test_cifar_resnet_parameter_count_matches_paper_table6(depth: int, paper_params: float):
    model = build("resnet_cifar", depth, input_shape=(32, 32, 3), num_classes=10)
    assert trainable_params(model) == pytest.approx(paper_params, rel=0.02)


@pytest.mark.parametrize(
    ("name", "depth", "kwargs"),
    [
        ("resnet_cifar", 8, {}),
        ("resnet_cifar", 14, {}),
        ("resnet_basic", 10, {"base_filters": 4, "shortcut": "A"}),
        ("mlp", 4, {}),
        ("mlp", 10, {}),
    ],
)
def test_plain_and_residual_twins_have_identical_parameter_counts(
    name: str, depth: int, kwargs: dict
):
    residual = build(name, depth, residual=True, **kwargs)
    plain = build(name, depth, residual=False, **kwargs)
    assert residual.count_params() == plain.count_params()
    assert trainable_params(residual) == trainable_params(plain)


def test_option_b_adds_projection_parameters_to_the_residual_net_only():
    a = build("resnet_cifar", 8, shortcut="A")
    b = build("resnet_cifar", 8, shortcut="B")
    # 1x1 convs 16->32 and 32->64 (no bias with BN), plus a BN (gamma, beta, mean, var) each.
    projections = 16 * 32 + 32 * 64 + 4 * (32 + 64)
    assert b.count_params() - a.count_params() == projections
    plain_a = build("resnet_cifar", 8, shortcut="A", residual=False)
    plain_b = build("resnet_cifar", 8, shortcut="B", residual=False)
    assert plain_a.count_params() == plain_b.count_params() == a.count_params()


def test_resnet18_follows_the_seed_article_layout(resnet18: keras.Model):
    names = layer_names(resnet18)
    blocks = [sum(f"stage{s}_block{b}_conv1" in names for b in range(1, 9)) for s in (1, 2, 3, 4)]
    assert blocks == [2, 2, 2, 2]
    filters = [resnet18.get_layer(f"stage{s}_block1_conv2").filters for s in (1, 2, 3, 4)]
    assert filters == [64, 128, 256, 512]
    strides = [resnet18.get_layer(f"stage{s}_block1_conv1").strides for s in (1, 2, 3, 4)]
    assert strides == [(1, 1), (2, 2), (2, 2), (2, 2)]
    pool = resnet18.get_layer("stem_pool")
    assert (pool.pool_size, pool.strides) == ((2, 2), (1, 1))
    assert resnet18.count_params() == pytest.approx(11.2e6, rel=0.02)
    shortcuts = [n for n in names if n.endswith("_shortcut")]
    assert shortcuts == [
        "stage2_block1_shortcut",
        "stage3_block1_shortcut",
        "stage4_block1_shortcut",
    ]
    for n in shortcuts:
        layer = resnet18.get_layer(n)
        assert isinstance(layer, keras.layers.Conv2D)
        assert layer.kernel_size == (1, 1)


def test_resnet34_has_blocks_3_4_6_3():
    model = build("resnet_basic", 34, base_filters=4, shortcut="B")
    names = layer_names(model)
    blocks = [sum(f"stage{s}_block{b}_conv1" in names for b in range(1, 9)) for s in (1, 2, 3, 4)]
    assert blocks == [3, 4, 6, 3]


@pytest.mark.parametrize(("name", "depth", "kwargs"), FAMILY_SPECS + [("mlp", 10, {})])
def test_depth_counts_weight_layers_outside_shortcuts(name: str, depth: int, kwargs: dict):
    kernels = [
        v for v in kernel_variables(build(name, depth, **kwargs)) if "_shortcut" not in v.path
    ]
    assert len(kernels) == depth


def test_mlp_depth_counts_its_dense_kernels_exactly():
    for depth in (4, 8):
        kernels = kernel_variables(build("mlp", depth))
        assert len(kernels) == depth
        assert all(len(v.shape) == 2 for v in kernels)


@pytest.mark.parametrize(("name", "depth", "kwargs"), FAMILY_SPECS)
def test_output_is_a_probability_per_class(name: str, depth: int, kwargs: dict):
    model = build(name, depth, num_classes=5, **kwargs)
    probs = predict(model, np.random.default_rng(0).normal(size=(2, *SMALL)))
    assert probs.shape == (2, 5)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_mlp_takes_flat_features_and_conv_families_refuse_them():
    assert build("mlp", 4, input_shape=(20,)).output_shape == (None, 3)
    for name in ("resnet_cifar", "resnet_basic"):
        with pytest.raises(ValueError, match="height, width, channels"):
            build(name, 8 if name == "resnet_cifar" else 10, input_shape=(20,))


@pytest.mark.parametrize("residual", [True, False])
@pytest.mark.parametrize(("name", "depth", "kwargs"), FAMILY_SPECS)
def test_first_kernel_is_the_stem_and_last_is_the_classifier(
    name: str, depth: int, kwargs: dict, residual: bool
):
    kernels = kernel_variables(build(name, depth, residual=residual, **kwargs))
    stem = "stem_dense" if name == "mlp" else "stem_conv"
    assert kernels[0].path == f"{stem}/kernel"
    assert kernels[-1].path == "classifier/kernel"
    block = "block1_dense1" if name == "mlp" else "stage1_block1_conv1"
    assert kernels[1].path == f"{block}/kernel"


def test_model_name_says_family_depth_and_switch():
    assert build("resnet_cifar", 8).name == "resnet_cifar8_residual"
    assert build("mlp", 4, residual=False).name == "mlp4_plain"


@pytest.mark.parametrize(("name", "depth", "kwargs"), FAMILY_SPECS)
def test_seeded_plain_and_residual_twins_start_from_identical_weights(
    name: str, depth: int, kwargs: dict
):
    residual = build(name, depth, residual=True, seed=7, **kwargs)
    plain = build(name, depth, residual=False, seed=7, **kwargs)
    plain_weights = {v.path: v.numpy() for v in plain.weights}
    shared = [v for v in residual.weights if v.path in plain_weights]
    # Only option "B" projections are missing from the plain twin.
    assert all("_shortcut" in v.path for v in residual.weights if v.path not in plain_weights)
    assert len(shared) == len(plain_weights)
    for v in shared:
        np.testing.assert_array_equal(v.numpy(), plain_weights[v.path], err_msg=v.path)


def test_seed_gives_each_layer_its_own_draw_and_different_seeds_differ():
    a = kernel_variables(build("mlp", 6, seed=1))
    b = kernel_variables(build("mlp", 6, seed=2))
    assert not np.array_equal(a[1].numpy(), a[2].numpy())  # same shape, different layer
    assert not np.array_equal(a[1].numpy(), b[1].numpy())
    again = kernel_variables(build("mlp", 6, seed=1))
    np.testing.assert_array_equal(a[1].numpy(), again[1].numpy())


@pytest.mark.parametrize(("name", "depth", "kwargs"), FAMILY_SPECS)
def test_batch_norm_off_removes_every_bn_layer_and_restores_biases(
    name: str, depth: int, kwargs: dict
):
    model = build(name, depth, batch_norm=False, **kwargs)
    assert not any(isinstance(x, keras.layers.BatchNormalization) for x in model.layers)
    weighted = [x for x in model.layers if isinstance(x, keras.layers.Conv2D | keras.layers.Dense)]
    assert all(x.use_bias for x in weighted)


@pytest.mark.parametrize(
    ("name", "depth"), [("resnet_cifar", 21), ("resnet_basic", 19), ("mlp", 5), ("mlp", 2)]
)
def test_bad_depth_raises_depth_error(name: str, depth: int):
    with pytest.raises(DepthError):
        build(name, depth)


def test_unknown_family_and_shortcut_are_clear_errors():
    with pytest.raises(ValueError, match="unknown model family"):
        build("densenet", 8)
    with pytest.raises(ValueError, match="shortcut"):
        build("resnet_cifar", 8, shortcut="C")


@pytest.mark.parametrize("activation", ["tanh", "sigmoid"])
def test_saturating_activations_build(activation: str):
    model = build("resnet_cifar", 8, activation=activation, residual=False)
    acts = {x.name: x for x in model.layers if isinstance(x, keras.layers.Activation)}
    assert acts["stage1_block1_act1"].activation is keras.activations.get(activation)
    assert acts["stage1_block1_out"].activation is keras.activations.get(activation)
    assert np.isfinite(predict(model, np.ones((1, *SMALL)))).all()


def test_config_enums_are_accepted():
    from resnet_exp.config.schema import Activation, ModelFamily, Shortcut

    model = build(ModelFamily.resnet_cifar, 8, activation=Activation.tanh, shortcut=Shortcut.B)
    assert model.name == "resnet_cifar8_residual"
    assert isinstance(model.get_layer("stage2_block1_shortcut"), keras.layers.Conv2D)


def test_option_a_shortcut_has_no_weights_and_survives_save_and_load(tmp_path):
    model = build("resnet_cifar", 8, seed=0)
    pad = model.get_layer("stage2_block1_shortcut")
    assert isinstance(pad, PadShortcut)
    assert pad.weights == []
    assert pad.output.shape == (None, 4, 4, 32)
    path = tmp_path / "model.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    x = np.random.default_rng(0).normal(size=(2, *SMALL))
    np.testing.assert_allclose(predict(loaded, x), predict(model, x))
