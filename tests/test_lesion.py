"""Block lesions and branch magnitudes: exact weights, exact predictions, independent checks."""

from __future__ import annotations

import functools
import io

import keras
import numpy as np
import pandas as pd
import pytest
from conftest import TINY
from specs import build

from resnet_exp.config.schema import ConfigError, check_config
from resnet_exp.models import PadShortcut
from resnet_exp.models.anatomy import block_specs
from resnet_exp.recording.branches import BranchRecorder
from resnet_exp.recording.lesions import lesion_study, lesioned_model, predict

IMAGE = (8, 8, 1)


@functools.cache
def _builder_of(family: str, depth: int, items: tuple):
    kw = {"input_shape": IMAGE, "num_classes": 5, "seed": 0, **dict(items)}
    return lambda skip: build(family, depth, skip_blocks=skip, **kw)


def _builder(family: str, depth: int, **kw):
    """One builder per architecture, so `_trained` trains each architecture once per session."""
    return _builder_of(
        family,
        depth,
        tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in sorted(kw.items())),
    )


_TRAINED: dict = {}


def _data(n: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, *IMAGE)).astype("float32"), np.arange(n) % 5


def _trained(build) -> keras.Model:
    """One real epoch of SGD, so weights and BN moving statistics are not their initial values."""
    if build in _TRAINED:
        return _TRAINED[build]
    keras.utils.set_random_seed(0)
    model = build(frozenset())
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    x, y = _data()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    _TRAINED[build] = model
    return model


def _snapshot(model: keras.Model) -> dict[str, list[np.ndarray]]:
    return {layer.name: [w.copy() for w in layer.get_weights()] for layer in model.layers}


CASES = [
    ("resnet_cifar", 14, {"residual": True}),
    ("resnet_cifar", 14, {"residual": False}),
    ("resnet_cifar", 8, {"residual": True, "shortcut": "B"}),
    ("mlp", 8, {"residual": True, "width": 16}),
    (
        "resnet_basic",
        10,
        {"residual": True, "base_filters": 4, "shortcut": "B", "blocks_per_stage": [1, 1, 1, 1]},
    ),
]


@pytest.mark.parametrize(("family", "depth", "kw"), CASES)
def test_deleting_no_block_reproduces_the_trained_predictions_exactly(family, depth, kw):
    build = _builder(family, depth, **kw)
    trained = _trained(build)
    x, _ = _data(32, seed=1)
    np.testing.assert_array_equal(
        predict(lesioned_model(build, trained, ()), x), predict(trained, x)
    )


@pytest.mark.parametrize(("family", "depth", "kw"), CASES)
def test_deleting_a_block_keeps_every_other_layer_exactly_and_leaves_the_model_alone(
    family, depth, kw
):
    build = _builder(family, depth, **kw)
    trained = _trained(build)
    before = _snapshot(trained)
    specs = block_specs(trained)
    victim = specs[-1].name
    lesioned = lesioned_model(build, trained, {victim})
    names = {layer.name for layer in lesioned.layers}
    assert f"{victim}_conv1" not in names and f"{victim}_dense1" not in names
    copied = 0
    for layer in lesioned.layers:
        for got, want in zip(layer.get_weights(), before[layer.name], strict=True):
            np.testing.assert_array_equal(got, want)
            copied += 1
    assert copied > 0
    after = _snapshot(trained)  # the trained model was only read
    assert after.keys() == before.keys()
    for name in before:
        for a, b in zip(after[name], before[name], strict=True):
            np.testing.assert_array_equal(a, b)
    x, _ = _data(16, seed=2)
    assert not np.allclose(predict(lesioned, x), predict(trained, x))


def _branch_zeroed(build, trained: keras.Model, block: str) -> keras.Model:
    """The intact net with the block's last BN scaled to zero: F(x) = 0 * x_hat + 0 = 0."""
    model = build(frozenset())
    model.set_weights(trained.get_weights())
    bn = model.get_layer(f"{block}_bn2")
    gamma, beta, mean, var = bn.get_weights()
    bn.set_weights([np.zeros_like(gamma), np.zeros_like(beta), mean, var])
    return model


@pytest.mark.parametrize(
    ("family", "depth", "kw", "which"),
    [
        ("resnet_cifar", 14, {"residual": True}, "same"),
        ("resnet_cifar", 14, {"residual": True}, "down"),  # option A: pad shortcut
        ("resnet_cifar", 8, {"residual": True, "shortcut": "B"}, "down"),  # projection
        ("mlp", 8, {"residual": True, "width": 16}, "same"),
    ],
)
def test_deleting_a_residual_block_equals_zeroing_its_branch(family, depth, kw, which):
    build = _builder(family, depth, **kw)
    trained = _trained(build)
    specs = [s for s in block_specs(trained) if s.downsampling == (which == "down")]
    block = specs[-1].name
    x, _ = _data(32, seed=3)
    expected = predict(_branch_zeroed(build, trained, block), x)
    got = predict(lesioned_model(build, trained, {block}), x)
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-6)
    assert not np.allclose(got, predict(trained, x), atol=1e-4)  # the block mattered


def _plain_by_hand(trained: keras.Model, block: str, x: np.ndarray, shortcut=None) -> np.ndarray:
    """A plain net is a chain: apply its trained layers one by one, the block's replaced."""
    h = x
    for layer in trained.layers[1:]:  # after the InputLayer
        if layer.name.startswith(f"{block}_") and layer.name != f"{block}_out":
            continue
        if layer.name == f"{block}_out" and shortcut is not None:
            h = shortcut(h)
        h = layer(h, training=False)
    return keras.ops.convert_to_numpy(h)


def test_a_deleted_plain_block_is_replaced_by_the_same_shortcut_path():
    build = _builder("resnet_cifar", 14, residual=False)
    trained = _trained(build)
    x, _ = _data(16, seed=4)
    for block, shortcut in (("stage1_block2", None), ("stage2_block1", PadShortcut(2, 32))):
        np.testing.assert_allclose(
            predict(lesioned_model(build, trained, {block}), x),
            _plain_by_hand(trained, block, x, shortcut),
            rtol=1e-5,
            atol=1e-6,
        )


def test_unknown_block_names_are_an_error():
    build = _builder("resnet_cifar", 8)
    with pytest.raises(ValueError, match="stage9_block1"):
        lesioned_model(build, build(frozenset()), {"stage9_block1"})


def test_lesion_study_rows_and_seeded_draws():
    build = _builder("resnet_cifar", 14)
    model = build(frozenset())
    x, y = _data(32)
    first = lesion_study(build, model, x, y, k_values=[1, 2, 4, 99], draws=2, seed=5)
    again = lesion_study(build, model, x, y, k_values=[1, 2, 4, 99], draws=2, seed=5)
    assert first.single["block"].tolist() == [s.name for s in block_specs(model)]
    assert first.single["downsampling"].tolist() == [s.downsampling for s in block_specs(model)]
    assert first.single["downsampling"].sum() == 2  # stage2_block1, stage3_block1
    assert sorted(first.multi["k"].unique()) == [1, 2, 4]  # 99 > the 4 same-shape blocks
    assert (first.multi.groupby("k").size() == 2).all()
    for row in first.multi.itertuples():
        chosen = row.blocks.split(";")
        assert len(set(chosen)) == row.k and "stage2_block1" not in chosen
    pd.testing.assert_frame_equal(first.multi, again.multi)
    np.testing.assert_allclose(
        first.single["drop"], first.intact_accuracy - first.single["accuracy"]
    )
    metrics = first.metrics()
    same = first.single[~first.single["downsampling"]]
    assert metrics["lesion_mean_drop"] == pytest.approx(same["drop"].mean())
    assert metrics["lesion_max_drop"] == pytest.approx(same["drop"].max())


# ---------------------------------------------------------------- branch magnitudes


def _bn_train(h: np.ndarray, layer: keras.layers.BatchNormalization) -> np.ndarray:
    """Batch norm in training mode by hand: the batch's own (biased) statistics."""
    gamma, beta, _, _ = layer.get_weights()
    mean, var = h.mean(axis=0), h.var(axis=0)
    return gamma * (h - mean) / np.sqrt(var + layer.epsilon) + beta


@pytest.mark.parametrize("residual", [True, False])
def test_branch_ratios_match_a_hand_computation(residual):
    build = _builder("mlp", 6, residual=residual, width=6)  # two blocks
    model = _trained(build)
    moving = [w.numpy().copy() for w in model.non_trainable_weights]
    x, _ = _data(12, seed=6)
    recorder = BranchRecorder(x)
    recorder.set_model(model)
    recorder.measure(0)

    relu = lambda v: np.maximum(v, 0.0)  # noqa: E731
    w = lambda name: model.get_layer(name).get_weights()[0]  # noqa: E731
    bn = model.get_layer
    h = relu(_bn_train(x.reshape(len(x), -1) @ w("stem_dense"), bn("stem_bn")))
    expected = []
    for b in ("block1", "block2"):
        y = relu(_bn_train(h @ w(f"{b}_dense1"), bn(f"{b}_bn1")))
        f = _bn_train(y @ w(f"{b}_dense2"), bn(f"{b}_bn2"))
        out = relu(f + h) if residual else relu(f)
        branch = f if residual else out
        expected.append(np.linalg.norm(branch) / np.linalg.norm(h))
        h = out
    got = recorder.frame()
    np.testing.assert_allclose(got["ratio"], expected, rtol=1e-4)
    assert recorder.history[0]["branch_ratio_mean"] == pytest.approx(np.mean(expected), rel=1e-4)
    assert recorder.history[0]["branch_ratio_max"] == pytest.approx(np.max(expected), rel=1e-4)
    for a, b in zip(model.non_trainable_weights, moving, strict=True):  # no side effects
        np.testing.assert_array_equal(a.numpy(), b)


def test_lesion_settings_are_checked(make_cfg):
    for bad, key in (("lesion.draws=0", "lesion.draws"), ("lesion.k=[0,2]", "lesion.k")):
        with pytest.raises(ConfigError, match=key):
            check_config(make_cfg(bad))
    with pytest.raises(ConfigError, match="lesion.max_examples"):
        check_config(make_cfg("lesion.max_examples=-1"))


# ---------------------------------------------------------------- MLflow


def _csv(client, run_id: str, name: str) -> pd.DataFrame:
    import mlflow

    uri = f"{client.get_run(run_id).info.artifact_uri}/{name}"
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(uri)))


def test_a_run_logs_lesions_and_branch_magnitudes_to_mlflow(make_cfg, client):
    from resnet_exp.run.job import run_job

    overrides = [*TINY, "model.depth=14", "lesion.enabled=true", "branches.enabled=true"]
    overrides += ["lesion.k=[1,2,8]", "lesion.draws=2", "lesion.max_examples=40"]
    outcome = run_job(make_cfg(*overrides))
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert {"lesion.csv", "lesion_k.csv", "branch_magnitude.csv"} <= artifacts

    single = _csv(client, outcome.run_id, "lesion.csv")
    assert single.columns.tolist() == [
        "block_index",
        "block",
        "stage",
        "downsampling",
        "accuracy",
        "drop",
    ]
    assert len(single) == 6 and single["downsampling"].sum() == 2
    multi = _csv(client, outcome.run_id, "lesion_k.csv")
    assert sorted(multi["k"].unique()) == [1, 2]  # 8 > the 4 same-shape blocks
    metrics = run.data.metrics
    same = single[~single["downsampling"]]
    assert metrics["lesion_mean_drop"] == pytest.approx(same["drop"].mean())
    assert metrics["lesion_max_drop"] == pytest.approx(same["drop"].max())
    assert 0.0 <= metrics["lesion_intact_accuracy"] <= 1.0

    branches = _csv(client, outcome.run_id, "branch_magnitude.csv")
    assert sorted(branches["epoch"].unique()) == [0, 1, 2]
    assert (branches.groupby("epoch").size() == 6).all()
    history = client.get_metric_history(outcome.run_id, "branch_ratio_mean")
    assert sorted(m.step for m in history) == [0, 1, 2]
    for m in history:
        assert m.value == pytest.approx(branches[branches["epoch"] == m.step]["ratio"].mean())


def test_lesion_accuracy_with_every_example_is_the_validation_accuracy(make_cfg, client):
    from resnet_exp.run.job import run_job

    outcome = run_job(make_cfg(*TINY, "lesion.enabled=true", "lesion.k=[1]", "lesion.draws=1"))
    metrics = client.get_run(outcome.run_id).data.metrics
    assert metrics["lesion_intact_accuracy"] == pytest.approx(metrics["val_accuracy"], abs=1e-6)
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert "branch_magnitude.csv" not in artifacts  # branches.enabled is off by default
    assert "branch_ratio_mean" not in metrics
