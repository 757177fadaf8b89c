"""Skips where you put them: `model.skip_at` names the blocks that get one, in every family."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from specs import build

from resnet_exp.config.depths import DepthError, block_names, skipped_blocks
from resnet_exp.config.schema import ConfigError, check_config

SMALL = {"input_shape": (8, 8, 1), "num_classes": 3, "seed": 0}
FAMILIES = [
    ("resnet_cifar", 14, {}),
    ("resnet_basic", 10, {"base_filters": 4}),
    ("mlp", 8, {"width": 8}),
    ("vgg", 13, {"base_filters": 4, "width": 8}),
]


def adds(model: keras.Model) -> list[str]:
    return [
        layer.name[: -len("_add")] for layer in model.layers if isinstance(layer, keras.layers.Add)
    ]


@pytest.mark.parametrize(("family", "depth", "kw"), FAMILIES)
def test_skip_at_adds_exactly_the_named_skips(family, depth, kw):
    names = block_names(family, depth)
    built = [
        layer.name[:-4]
        for layer in build(family, depth, **SMALL, **kw).layers
        if layer.name.endswith("_out")
    ]
    assert built == names  # the names the config checks are the names the builders use
    chosen = [names[0], names[-1]]
    model = build(family, depth, skip_at=[names[0], "-1"], **SMALL, **kw)
    assert adds(model) == chosen
    assert adds(build(family, depth, skip_at=[], **SMALL, **kw)) == []
    assert adds(build(family, depth, residual=True, **SMALL, **kw)) == names
    assert adds(build(family, depth, residual=False, **SMALL, **kw)) == []


def test_a_skip_on_the_last_vgg_block_is_the_only_difference_from_the_plain_net():
    kw = {"base_filters": 4, "width": 8, **SMALL}
    plain = build("vgg", 13, residual=False, **kw)
    one = build("vgg", 13, skip_at=["-1"], **kw)
    assert one.name == "vgg13_skip_at" and adds(one) == ["stage5_block1"]
    # an identity skip: no parameters of its own, and every weight the same (seeded by name)
    assert [v.path for v in one.weights] == [v.path for v in plain.weights]
    for a, b in zip(one.weights, plain.weights, strict=True):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    # and the skipped block computes act(F(x) + x): its branch plus its own input
    block_in = keras.Model(one.input, one.get_layer("stage5_block1_conv1").input)
    branch = keras.Model(one.input, one.get_layer("stage5_block1_bn2").output)
    out = keras.Model(one.input, one.get_layer("stage5_block1_out").output)
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype("float32")
    expected = np.maximum(branch(x, training=False) + block_in(x, training=False), 0)
    np.testing.assert_allclose(out(x, training=False), expected, atol=1e-5)


def test_entries_resolve_by_name_or_from_the_end():
    names = block_names("resnet_cifar", 14)
    assert names == [f"stage{s}_block{b}" for s in (1, 2, 3) for b in (1, 2)]
    assert skipped_blocks(names, ["-1", "-6", "stage2_block1"]) == {
        "stage3_block2",
        "stage1_block1",
        "stage2_block1",
    }
    with pytest.raises(DepthError, match="counts back past the first of 6 blocks"):
        skipped_blocks(names, ["-7"])
    with pytest.raises(DepthError, match="no block '3'"):
        skipped_blocks(names, ["3"])


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.skip_at=[stage9_block1]"],
            "model.skip_at=[stage9_block1]: no block 'stage9_block1'; name a block (stage1_block1,",
        ),
        (
            ["model.skip_at=[-10]"],
            "model.skip_at=[-10]: -10 counts back past the first of 9 blocks",
        ),
        (
            ["model=vgg", "model.skip_at=[stage1_block2]"],
            "no block 'stage1_block2'; name a block (stage1_block1, stage2_block1,",
        ),
    ],
)
def test_a_bad_skip_at_is_one_line_naming_the_valid_blocks(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(make_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)
