"""`model.residual_init`: SkipInit and Fixup start residual nets without batch norm so they train.

SkipInit (De & Smith 2020) gates each residual branch with a scalar that starts at 0;
Fixup (Zhang, Dauphin & Ma 2019) adds scalar biases and a scale, scales each branch's
first kernel by L^-1/2 and zeroes its second and the classifier.
"""

from __future__ import annotations

import keras
import numpy as np
import pytest
from sklearn.datasets import load_digits
from specs import build, optimizer

from resnet_exp.config.schema import ConfigError, check_config
from resnet_exp.models.anatomy import block_input, block_specs, branch_output
from resnet_exp.recording.gradients import kernel_gradient_norms
from resnet_exp.recording.lesions import lesioned_model, predict

SMALL = {"input_shape": (8, 8, 1), "num_classes": 3, "seed": 0, "batch_norm": False}
NETS = [
    ("resnet_cifar", 14, {}),
    ("resnet_basic", 10, {"base_filters": 4, "shortcut": "B"}),
    ("vgg", 13, {"base_filters": 4, "width": 8, "residual": True}),
    ("mlp", 6, {"width": 8}),
]
FIXUP_SCALARS = {"bias1a": 0.0, "bias1b": 0.0, "bias2a": 0.0, "scale": 1.0, "bias2b": 0.0}


def _images(n: int = 6, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, 8, 8, 1)).astype("float32")


def _weights(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {layer.name: layer.get_weights() for layer in model.layers if layer.weights}


@pytest.mark.parametrize(("family", "depth", "kw"), NETS)
def test_a_skipinit_net_at_initialisation_is_its_shortcut_path(family, depth, kw):
    def builder(skip):
        return build(family, depth, residual_init="skipinit", skip_blocks=skip, **SMALL, **kw)

    model = builder(frozenset())
    blocks = [spec.name for spec in block_specs(model)]
    assert all(spec.residual for spec in block_specs(model))
    for name in blocks:
        assert model.get_layer(f"{name}_skipinit").get_weights() == [0.0]
        assert branch_output(model, name) is model.get_layer(f"{name}_skipinit").output
    # every block deleted (the shortcut path alone), weights copied by name as lesions do
    deleted = lesioned_model(builder, model, blocks)
    x = _images()
    out = predict(model, x)
    assert out.std(axis=0).max() > 1e-3  # not a constant: the comparison means something
    np.testing.assert_array_equal(out, predict(deleted, x))


@pytest.mark.parametrize(
    ("family", "depth", "kw", "blocks", "kind"),
    [
        ("resnet_cifar", 8, {}, 3, "conv"),
        ("resnet_cifar", 20, {}, 9, "conv"),
        ("mlp", 8, {"width": 64}, 3, "dense"),
    ],
)
def test_fixup_scales_the_first_kernel_by_l_to_the_minus_half_and_zeroes_the_rest(
    family, depth, kw, blocks, kind
):
    fixup = build(family, depth, residual_init="fixup", **SMALL, **kw)
    standard = build(family, depth, **SMALL, **kw)
    assert fixup.name == f"{family}{depth}_residual_fixup"
    names = [spec.name for spec in block_specs(fixup)]
    assert len(names) == blocks
    scale = np.float32(blocks**-0.5)
    for name in names:
        (first,) = fixup.get_layer(f"{name}_{kind}1").get_weights()  # no bias of its own
        (second,) = fixup.get_layer(f"{name}_{kind}2").get_weights()
        # the standard twin's own draw (seeded by layer name), times L^-1/2 exactly
        twin = standard.get_layer(f"{name}_{kind}1").get_weights()[0]
        np.testing.assert_array_equal(first, twin * scale)
        assert np.all(second == 0)
        for scalar, initial in FIXUP_SCALARS.items():
            assert fixup.get_layer(f"{name}_{scalar}").get_weights() == [initial]
        assert branch_output(fixup, name) is fixup.get_layer(f"{name}_bias2b").output
        assert block_input(fixup, name) is fixup.get_layer(f"{name}_bias1a").input
    # and independently of the twin: He's std, sqrt(2 / fan_in), times L^-1/2
    fan_in = int(np.prod(first.shape[:-1]))
    np.testing.assert_allclose(first.std(), np.sqrt(2 / fan_in) * blocks**-0.5, rtol=0.1)
    kernel, bias = fixup.get_layer("classifier").get_weights()
    assert np.all(kernel == 0) and np.all(bias == 0)
    assert fixup.get_layer("classifier_bias").get_weights() == [0.0]
    # the stem is standard: the same kernel and bias as the twin's
    stem = f"stem_{kind}"
    assert _same(_weights(fixup)[stem], _weights(standard)[stem])
    # so every input starts at the uniform distribution
    np.testing.assert_allclose(predict(fixup, _images()), 1 / 3, rtol=1e-6)


def test_a_partly_skipped_vgg_changes_only_its_skipped_blocks_and_the_classifier():
    kw = {"base_filters": 4, "width": 8, "skip_at": ["stage1_block1", "-1"], **SMALL}
    standard, fixup, skipinit = (
        build("vgg", 13, residual_init=r, **kw) for r in ("standard", "fixup", "skipinit")
    )
    assert fixup.name == "vgg13_skip_at_fixup" and skipinit.name == "vgg13_skip_at_skipinit"
    ours, theirs = _weights(fixup), _weights(standard)
    changed = {n for n in ours if n not in theirs or not _same(ours[n], theirs[n])}
    skipped = ("stage1_block1", "stage5_block1")  # L = 2; stages 2-4 stay plain and standard
    expected = {"classifier", "classifier_bias"}
    for block in skipped:
        expected |= {f"{block}_conv1", f"{block}_conv2"} | {f"{block}_{s}" for s in FIXUP_SCALARS}
        (conv1,) = ours[f"{block}_conv1"]  # the standard draw times 2^-1/2, without its bias
        np.testing.assert_array_equal(conv1, theirs[f"{block}_conv1"][0] * np.float32(2**-0.5))
    assert changed == expected
    assert set(theirs) - set(ours) == set()  # fc1, fc2, the plain blocks: all kept
    # SkipInit adds one gate per skipped block and changes nothing else
    gated = _weights(skipinit)
    assert set(gated) - set(theirs) == {f"{block}_skipinit" for block in skipped}
    assert all(_same(gated[n], theirs[n]) for n in theirs)


def test_these_nets_survive_save_and_load(tmp_path):
    for init in ("skipinit", "fixup"):
        model = build("resnet_cifar", 8, residual_init=init, **SMALL)
        for variable in model.trainable_variables:  # away from the initial values
            variable.assign(variable + 0.01)
        model.save(tmp_path / f"{init}.keras")
        loaded = keras.models.load_model(tmp_path / f"{init}.keras")
        assert [v.path for v in loaded.weights] == [v.path for v in model.weights]
        np.testing.assert_array_equal(predict(loaded, _images()), predict(model, _images()))


def _same(a: list[np.ndarray], b: list[np.ndarray]) -> bool:
    return len(a) == len(b) and all(np.array_equal(u, v) for u, v in zip(a, b, strict=True))


@pytest.mark.parametrize("init", ["skipinit", "fixup"])
def test_lesions_delete_blocks_of_these_nets_by_name(init):
    def builder(skip):
        return build("resnet_cifar", 8, residual_init=init, skip_blocks=skip, **SMALL)

    model = builder(frozenset())
    lesioned = lesioned_model(builder, model, {"stage2_block1"})
    names = {layer.name for layer in lesioned.layers}
    left = {n for n in names if n.startswith("stage2_block1_")}
    assert left == {"stage2_block1_shortcut", "stage2_block1_out"}  # the shortcut path alone
    assert {"stage1_block1_conv1", "stage3_block1_conv2"} <= names
    assert np.isfinite(predict(lesioned, _images())).all()


@pytest.mark.parametrize(
    ("family", "depth", "kw", "first"),
    [
        ("resnet_cifar", 8, {}, "stem_conv"),
        ("vgg", 11, {"base_filters": 4, "width": 8, "residual": True}, "stage1_conv"),
        ("mlp", 6, {"width": 8}, "stem_dense"),
    ],
)
@pytest.mark.parametrize("init", ["skipinit", "fixup"])
def test_first_and_last_layers_are_still_named_for_the_gradient_recorder(
    family, depth, kw, first, init
):
    model = build(family, depth, residual_init=init, **SMALL, **kw)
    model.compile(loss="sparse_categorical_crossentropy")
    names, grads, _, _ = kernel_gradient_norms(model, _images(8, 1), np.arange(8) % 3)
    # the scalars are not kernels: one kernel per weight layer, as in the standard net
    assert names[0].endswith(first) and names[-1].endswith("classifier"), names
    assert len(names) == depth and grads[-1] > 0
    if init == "fixup":  # a zero classifier passes no gradient back at initialisation
        assert np.all(grads[:-1] == 0)


@pytest.mark.slow  # 19 s of training: the measurement, end to end
def test_without_batch_norm_skipinit_and_fixup_train_a_deep_resnet_the_standard_one_cannot():
    """ResNet-32 without BN, SGD lr 0.05 (momentum 0.9), 96 steps of 32 on 256 digits.

    Measured (this test's settings): the standard net's loss is nan from the first epoch;
    the training-set loss at the end is 0.0022 (SkipInit) and 0.0052 (Fixup), from 2.3.
    """
    digits = load_digits()
    x = (digits.images[:256] / 16.0).astype("float32")[..., None]
    x, y = (x - x.mean()) / x.std(), digits.target[:256]
    losses = {}
    for init in ("standard", "skipinit", "fixup"):
        keras.utils.set_random_seed(0)
        model = build(
            "resnet_cifar",
            32,
            residual_init=init,
            batch_norm=False,
            input_shape=(8, 8, 1),
            num_classes=10,
            seed=0,
        )
        model.compile(
            optimizer=optimizer("sgd", 96, lr=0.05, weight_decay=0.0),
            loss="sparse_categorical_crossentropy",
        )
        history = model.fit(x, y, batch_size=32, epochs=12, verbose=0)
        first = history.history["loss"][0]
        losses[init] = (first, float(model.evaluate(x, y, batch_size=256, verbose=0)))
    first, last = losses["standard"]
    assert not np.isfinite(first) or first > 100, losses
    assert not np.isfinite(last) or last > 2, losses
    for init in ("skipinit", "fixup"):
        assert losses[init][1] < 0.1, losses


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        (
            ["model.residual_init=fixup"],
            "model.residual_init=fixup: needs model.batch_norm=false (Fixup and SkipInit",
        ),
        (
            ["model.residual_init=skipinit", "model.batch_norm=false", "model.residual=false"],
            "model.residual_init=skipinit: needs skip connections (model.residual=true or",
        ),
        (
            ["model.residual_init=fixup", "model.batch_norm=false", "model.skip_at=[]"],
            "model.residual_init=fixup: needs skip connections",
        ),
        (
            ["model=vgg", "model.residual_init=skipinit", "model.batch_norm=false"],
            "model.residual_init=skipinit: needs skip connections",
        ),
    ],
)
def test_a_bad_combination_is_one_line(make_cfg, overrides, message):
    with pytest.raises(ConfigError) as err:
        check_config(make_cfg(*overrides))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_good_combinations_pass_and_the_builder_refuses_the_bad_ones(make_cfg):
    for overrides in (
        ["model.residual_init=skipinit", "model.batch_norm=false"],
        ["model=mlp", "model.residual_init=fixup", "model.batch_norm=false"],
        ["model=vgg", "model.residual_init=fixup", "model.batch_norm=false", "model.skip_at=[-1]"],
    ):
        check_config(make_cfg(*overrides))
    with pytest.raises(ConfigError, match="needs model.batch_norm=false"):
        build("resnet_cifar", 8, residual_init="fixup", **{**SMALL, "batch_norm": True})
    with pytest.raises(ConfigError, match="needs skip connections"):
        build("resnet_cifar", 8, residual_init="skipinit", residual=False, **SMALL)
