"""The VGG family: Table 1's configurations, counted by hand; blocks, pools and skips by name."""

from __future__ import annotations

import keras
import numpy as np
import pytest
from conftest import TINY
from specs import build

from resnet_exp.config.depths import VGG_LAYOUTS, DepthError, vgg_convs_per_stage
from resnet_exp.config.schema import ConfigError, check_config
from resnet_exp.models.anatomy import block_specs
from resnet_exp.recording.gradients import kernel_gradient_norms
from resnet_exp.run.job import run_job

CIFAR = (32, 32, 3)
VGG = {"base_filters": 64, "width": 512, "num_classes": 10}


def params(model: keras.Model) -> int:
    return sum(int(np.prod(v.shape)) for v in model.trainable_weights)


def by_hand(convs: list[int], shape=CIFAR, batch_norm: bool = True, width: int = 512) -> int:
    """Trainable parameters of a VGG net, counted from its layers: 3x3 kernels, then a bias
    (no BN) or BN's gamma and beta; 5 stages of 64, 128, 256, 512, 512 filters; pooling
    while the image is larger than 1x1; two hidden dense layers and the classifier."""
    total, channels, side = 0, shape[-1], shape[0]
    per_unit = 2 if batch_norm else 1  # gamma and beta, or a bias
    for filters, count in zip((64, 128, 256, 512, 512), convs, strict=True):
        for _ in range(count):
            total += 9 * channels * filters + per_unit * filters
            channels = filters
        side = side // 2 if side > 1 else side
    features = channels * side * side
    total += features * width + per_unit * width + width * width + per_unit * width
    return total + width * 10 + 10  # the classifier keeps its bias


@pytest.mark.parametrize("depth", sorted(VGG_LAYOUTS))
def test_table1_configurations_have_the_hand_counted_parameters(depth):
    model = build("vgg", depth, residual=False, input_shape=CIFAR, **VGG)
    assert params(model) == by_hand(list(VGG_LAYOUTS[depth]))
    kernels = [v for v in model.trainable_weights if v.path.endswith("/kernel")]
    assert len(kernels) == depth  # depth counts weight layers, as the paper's table does


def test_vgg16_matches_a_published_cifar_vgg16_less_its_batch_norm():
    """chengyangfu/pytorch-vgg-cifar10's `vgg16` (its vgg.py: configuration D, no BN, a
    512-512-10 head; dropout has no parameters) has these layers: 15,245,130 parameters."""
    model = build("vgg", 16, residual=False, batch_norm=False, input_shape=CIFAR, **VGG)
    assert params(model) == by_hand([2, 2, 3, 3, 3], batch_norm=False) == 15_245_130


@pytest.mark.parametrize(("shape", "pools"), [(CIFAR, 5), ((8, 8, 1), 3)])
def test_pooling_stops_at_one_pixel(shape, pools):
    model = build("vgg", 11, input_shape=shape, num_classes=10, base_filters=4, width=8)
    names = [layer.name for layer in model.layers if "pool" in layer.name]
    assert names == [f"stage{s}_pool" for s in range(1, pools + 1)]
    assert model.output_shape == (None, 10)


@pytest.mark.parametrize(("depth", "blocks"), [(11, 3), (13, 5), (16, 5), (19, 8)])
def test_a_residual_vgg_has_one_skip_per_pair_of_convolutions(depth, blocks):
    kw = {"input_shape": (8, 8, 1), "num_classes": 3, "base_filters": 4, "width": 8, "seed": 0}
    residual = build("vgg", depth, residual=True, **kw)
    plain = build("vgg", depth, residual=False, **kw)
    adds = [layer for layer in residual.layers if isinstance(layer, keras.layers.Add)]
    specs = block_specs(residual)
    assert len(adds) == len(specs) == blocks
    assert not any(isinstance(layer, keras.layers.Add) for layer in plain.layers)
    # option A: identity or zero-padded skips, no parameters of their own
    assert params(residual) == params(plain)
    x = np.random.default_rng(0).normal(size=(2, 8, 8, 1)).astype("float32")
    assert not np.allclose(plain(x, training=False), residual(x, training=False))


def test_an_odd_stage_starts_with_a_lone_convolution_and_its_blocks_keep_their_shape():
    model = build("vgg", 16, input_shape=CIFAR, num_classes=10, base_filters=4, width=8)
    names = [layer.name for layer in model.layers]
    for s, convs in enumerate(VGG_LAYOUTS[16], start=1):
        assert (f"stage{s}_conv" in names) == bool(convs % 2)
    shapes = {spec.name: spec.downsampling for spec in block_specs(model)}
    assert not shapes["stage5_block1"] and not shapes["stage3_block1"]  # identity skips
    assert shapes["stage2_block1"]  # 64 -> 128 channels inside the block: a padded skip


def test_first_and_last_layers_are_named_for_the_gradient_recorder():
    x = np.random.default_rng(1).normal(size=(8, 8, 8, 1)).astype("float32")
    y = np.arange(8) % 3
    for depth, first in ((11, "stage1_conv"), (13, "stage1_block1_conv1")):
        model = build("vgg", depth, input_shape=(8, 8, 1), num_classes=3, base_filters=4, width=8)
        model.compile(loss="sparse_categorical_crossentropy")
        names, grads, _, _ = kernel_gradient_norms(model, x, y)
        assert names[0].endswith(first) and names[-1].endswith("classifier"), names
        assert len(names) == depth and np.all(grads > 0)


def test_depths_and_stage_lists_are_checked_in_one_line(make_cfg):
    assert vgg_convs_per_stage(10, [1, 1, 1, 2, 2]) == [1, 1, 1, 2, 2]  # the seed's VGG-10
    with pytest.raises(DepthError, match="11, 13, 16 or 19"):
        vgg_convs_per_stage(12)
    with pytest.raises(DepthError, match=r"sum\(convs_per_stage\)\+3 = 10"):
        vgg_convs_per_stage(11, [1, 1, 1, 2, 2])
    with pytest.raises(ConfigError, match="model.depth=12: vgg depth must be") as err:
        check_config(make_cfg("model=vgg", "model.depth=12"))
    assert "\n" not in str(err.value)
    check_config(make_cfg("model=vgg", "model.depth=10", "model.convs_per_stage=[1,1,1,2,2]"))


def test_a_vgg_run_on_digits_logs_its_gradients(make_cfg, client):
    overrides = [*TINY, "model=vgg", "model.depth=11", "data=digits", "trainer.epochs=1"]
    outcome = run_job(make_cfg(*overrides), overrides=overrides)
    assert outcome.status == "FINISHED"
    run = client.get_run(outcome.run_id)
    assert run.data.params["model.name"] == "vgg" and "model.convs_per_stage" in run.data.params
    assert "model.blocks_per_stage" not in run.data.params
    ratios = client.get_metric_history(outcome.run_id, "grad_first_last_ratio")
    assert sorted(m.step for m in ratios) == [0, 1]
