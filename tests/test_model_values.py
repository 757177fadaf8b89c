"""What the model builders compute, checked against NumPy by hand on tiny inputs.

Parameter counts and layer names (test_models.py) cannot tell a plain net from
its residual twin when the switch is miswired, nor a zero-padded shortcut from
one padded with copies: these tests compare outputs with a hand computation.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from specs import build

from resnet_exp.config.depths import (
    DepthError,
    basic_blocks_per_stage,
    check_depth,
    cifar_blocks_per_stage,
    mlp_blocks,
)
from resnet_exp.models import PadShortcut, basic_block, dense_block

RNG = np.random.default_rng(0)


def _numpy(x) -> np.ndarray:
    return keras.ops.convert_to_numpy(x)


def _option_a(x: np.ndarray, stride: int, filters: int) -> np.ndarray:
    """He et al. 2016 option A by hand: keep every `stride`-th pixel from 0, zero new channels."""
    sub = x[:, ::stride, ::stride, :]
    zeros = np.zeros((*sub.shape[:3], filters - x.shape[-1]), dtype=x.dtype)
    return np.concatenate([sub, zeros], axis=-1)


@pytest.mark.parametrize(("size", "stride", "channels", "filters"), [(4, 2, 2, 4), (5, 2, 3, 6)])
def test_option_a_shortcut_subsamples_from_offset_0_and_pads_with_zeros(
    size: int, stride: int, channels: int, filters: int
):
    # Strictly positive inputs: a zero-padded channel can only be zero if padding put it there.
    x = RNG.uniform(1.0, 2.0, size=(2, size, size, channels)).astype("float32")
    out = _numpy(PadShortcut(stride, filters)(x))
    np.testing.assert_array_equal(out, _option_a(x, stride, filters))
    # The same facts, spelled out: pixel (0, 0) is kept, new channels are exactly zero.
    np.testing.assert_array_equal(out[:, 0, 0, :channels], x[:, 0, 0, :])
    assert (out[..., channels:] == 0).all()
    assert out.shape[1:] == PadShortcut(stride, filters).compute_output_shape(x.shape)[1:]


def _block_model(block, input_shape, **kwargs) -> keras.Model:
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, block(inputs, **kwargs))


def _copy_weights(source: keras.Model, target: keras.Model) -> None:
    by_path = {v.path: v for v in source.weights}
    for v in target.weights:
        v.assign(by_path[v.path])


@pytest.mark.parametrize(("stride", "filters"), [(1, 3), (2, 6)])
def test_residual_basic_block_adds_exactly_the_shortcut_to_its_plain_twin(stride, filters):
    """Linear activation, no BN: residual(x) - plain(x) is the shortcut, by construction."""
    kwargs = {
        "filters": filters,
        "stride": stride,
        "batch_norm": False,
        "activation": "linear",
        "name": "b",
    }
    residual = _block_model(basic_block, (4, 4, 3), residual=True, **kwargs)
    plain = _block_model(basic_block, (4, 4, 3), residual=False, **kwargs)
    _copy_weights(residual, plain)
    x = RNG.uniform(1.0, 2.0, size=(2, 4, 4, 3)).astype("float32")
    difference = _numpy(residual(x)) - _numpy(plain(x))
    expected = x if stride == 1 else _option_a(x, stride, filters)
    np.testing.assert_allclose(difference, expected, atol=1e-5)


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


def _softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def _mlp_by_hand(model: keras.Model, x: np.ndarray, residual: bool) -> np.ndarray:
    """stem -> one block (dense-relu-dense, + h if residual, relu) -> softmax classifier."""

    def dense(name: str, h: np.ndarray) -> np.ndarray:
        kernel, bias = (v.numpy() for v in model.get_layer(name).weights)
        return h @ kernel + bias

    h = _relu(dense("stem_dense", x.reshape(len(x), -1)))
    y = dense("block1_dense2", _relu(dense("block1_dense1", h)))
    h = _relu(y + h) if residual else _relu(y)
    return _softmax(dense("classifier", h))


def test_plain_mlp_has_no_identity_and_its_residual_twin_has_it():
    kwargs = {"input_shape": (6,), "num_classes": 3, "batch_norm": False, "width": 8, "seed": 1}
    plain = build("mlp", 4, residual=False, **kwargs)
    residual = build("mlp", 4, residual=True, **kwargs)
    x = RNG.normal(size=(5, 6)).astype("float32")
    out_plain = _numpy(plain(x, training=False))
    out_residual = _numpy(residual(x, training=False))
    # Same weights (seeded by name), so the outputs differ only through the shortcut.
    residual_weights = {v.path: v.numpy() for v in residual.weights}
    for v in plain.weights:
        np.testing.assert_array_equal(v.numpy(), residual_weights[v.path])
    assert not np.allclose(out_plain, out_residual, atol=1e-4)
    np.testing.assert_allclose(out_plain, _mlp_by_hand(plain, x, residual=False), atol=1e-5)
    np.testing.assert_allclose(out_residual, _mlp_by_hand(residual, x, residual=True), atol=1e-5)


def test_dense_block_adds_exactly_its_input_when_residual():
    kwargs = {"units": 5, "batch_norm": False, "activation": "linear", "name": "b"}
    residual = _block_model(dense_block, (5,), residual=True, **kwargs)
    plain = _block_model(dense_block, (5,), residual=False, **kwargs)
    _copy_weights(residual, plain)
    x = RNG.normal(size=(3, 5)).astype("float32")
    np.testing.assert_allclose(_numpy(residual(x)) - _numpy(plain(x)), x, atol=1e-5)


@pytest.mark.parametrize(
    ("name", "depth", "kwargs"),
    [
        ("resnet_cifar", 8, {}),
        ("resnet_basic", 10, {"base_filters": 4, "shortcut": "B"}),
        ("mlp", 4, {}),
    ],
)
def test_plain_twin_has_no_add_layer_and_computes_something_else(name, depth, kwargs):
    shape = (8, 8, 1)
    plain = build(name, depth, input_shape=shape, num_classes=3, residual=False, seed=3, **kwargs)
    residual = build(name, depth, input_shape=shape, num_classes=3, residual=True, seed=3, **kwargs)
    adds = [layer for layer in residual.layers if isinstance(layer, keras.layers.Add)]
    blocks = [layer for layer in residual.layers if layer.name.endswith("_out")]  # one a block
    assert len(adds) == len(blocks) > 0
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    x = RNG.normal(size=(2, *shape)).astype("float32")
    assert not np.allclose(_numpy(plain(x, training=False)), _numpy(residual(x, training=False)))


# ---------------------------------------------------------------- depth rules


@pytest.mark.parametrize(
    ("family", "depth", "blocks"),
    [
        ("resnet_cifar", 8, 1),
        ("resnet_cifar", 14, 2),
        ("resnet_cifar", 56, 9),
        ("mlp", 4, 1),
        ("mlp", 6, 2),
        ("mlp", 202, 100),
    ],
)
def test_valid_depths_give_the_papers_block_counts(family, depth, blocks):
    count = cifar_blocks_per_stage if family == "resnet_cifar" else mlp_blocks
    assert count(depth) == blocks
    check_depth(family, depth)  # no error


def test_basic_resnet_depths_give_their_layouts():
    assert basic_blocks_per_stage(10) == [1, 1, 1, 1]
    assert basic_blocks_per_stage(18) == [2, 2, 2, 2]
    assert basic_blocks_per_stage(34) == [3, 4, 6, 3]
    assert basic_blocks_per_stage(26) == [3, 3, 3, 3]
    assert basic_blocks_per_stage(12, [2, 1, 1, 1]) == [2, 1, 1, 1]


@pytest.mark.parametrize(
    ("family", "depth"),
    [
        ("resnet_cifar", 2),  # n = 0: no block at all
        ("resnet_cifar", -4),
        ("resnet_cifar", 0),
        ("resnet_cifar", 9),
        ("resnet_cifar", 20 + 1),
        ("resnet_basic", 2),
        ("resnet_basic", 8),
        ("resnet_basic", 0),
        ("mlp", 2),  # n = 0
        ("mlp", 0),
        ("mlp", 3),
        ("mlp", 5),
    ],
)
def test_depths_without_a_block_or_off_the_grid_are_refused(family, depth):
    with pytest.raises(DepthError):
        check_depth(family, depth)


def test_config_validation_refuses_depth_2_before_anything_runs():
    from resnet_exp.run.command_line import validate

    assert "model.depth=2" in validate(["model.depth=2"])
    assert "model.depth=2" in validate(["model=mlp", "model.depth=2"])
    assert validate(["model.depth=8"]) is None
