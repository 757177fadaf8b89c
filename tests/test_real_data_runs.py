"""Runs on real-format data: test metrics, iterations, warm-up, mixed precision, presets."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import specs
from conftest import run_train, runs_of
from real_formats import write_cifar10, write_cifar100, write_idx

from resnet_exp.run.job import run_job

SMALL = ["model.depth=8", "trainer.batch_size=32", "gradients.probe_size=16"]


@pytest.fixture(scope="module")
def cifar10(tmp_path_factory):
    return write_cifar10(tmp_path_factory.mktemp("data") / "c10", per_batch=40)


@pytest.fixture(autouse=True)
def float32_after():
    """A mixed-precision run sets Keras's global policy; leave it as other tests expect."""
    yield
    keras.mixed_precision.set_global_policy("float32")


def _history(client, run_id: str, key: str) -> list[tuple[int, float]]:
    return sorted((m.step, m.value) for m in client.get_metric_history(run_id, key))


def test_iterations_cut_the_last_epoch_and_the_test_set_is_scored_once(make_cfg, client, tmp_path):
    """cifar100 coarse, 180 training images at batch 32 (6 per epoch), 8 iterations: 2 epochs."""
    path = write_cifar100(tmp_path / "c100", train=200, test=40)
    overrides = [
        "data=cifar100",
        f"data.path={path}",
        "data.label_mode=coarse",
        "trainer.steps=8",
        *SMALL,
    ]
    outcome = run_job(make_cfg(*overrides), overrides=overrides)
    assert outcome.status == "FINISHED"
    assert [s for s, _ in _history(client, outcome.run_id, "train_loss")] == [1, 2]
    assert [s for s, _ in _history(client, outcome.run_id, "grad_first_norm")] == [0, 1, 2]
    ((step, accuracy),) = _history(client, outcome.run_id, "test_accuracy")
    assert step == 2 and 0.0 <= accuracy <= 1.0
    assert [s for s, _ in _history(client, outcome.run_id, "test_loss")] == [2]
    # 8 iterations: the step schedule's milestones (50%, 75%) fall after iterations 4 and 6;
    # the second epoch starts at iteration 6 (Keras: the rate drops once step > boundary)
    lrs = [v for _, v in _history(client, outcome.run_id, "lr")]
    np.testing.assert_allclose(lrs, [0.1, 0.01], rtol=1e-6)
    params = client.get_run(outcome.run_id).data.params
    assert params["data.label_mode"] == "coarse" and params["trainer.steps"] == "8"


def test_warmup_and_milestones_in_iterations():
    rate = specs.rate("step", 0.1, 64000, milestone_steps=[32000, 48000], warmup_steps=400)
    at = {s: float(rate(s)) for s in (0, 399, 400, 32000, 32001, 48001, 63999)}
    np.testing.assert_allclose(
        list(at.values()), [0.01, 0.01, 0.1, 0.1, 0.01, 0.001, 0.001], rtol=1e-6
    )
    restored = keras.optimizers.schedules.deserialize(keras.optimizers.schedules.serialize(rate))
    assert float(restored(10)) == pytest.approx(0.01) and float(restored(500)) == pytest.approx(0.1)


def test_he2016_preset_composes_to_the_papers_values(make_cfg):
    cfg = make_cfg("experiment=he2016_cifar10")
    assert (cfg.model.name, cfg.model.shortcut, cfg.model.base_filters) == ("resnet_cifar", "A", 16)
    assert cfg.model.batch_norm and cfg.model.kernel_initializer == "he_normal"
    assert (cfg.data.name, cfg.data.val_fraction, cfg.data.augment) == ("cifar10", 0.1, True)
    o = cfg.optim
    assert (o.name, o.lr, o.momentum, o.weight_decay) == ("sgd", 0.1, 0.9, 1e-4)
    assert o.weight_decay_mode == "l2"  # through the momentum, as the paper's frameworks
    assert (o.schedule.name, list(o.schedule.milestone_steps), o.schedule.gamma) == (
        "step",
        [32000, 48000],
        0.1,
    )
    assert (cfg.trainer.steps, cfg.trainer.batch_size) == (64000, 128)
    assert cfg.tracking.experiment == "he2016_cifar10"
    # the warm-up belongs to ResNet-110 only
    assert o.schedule.warmup_steps == 0
    cfg110 = make_cfg("experiment=he2016_cifar10", "model.depth=110")
    assert (cfg110.optim.schedule.warmup_steps, cfg110.optim.schedule.warmup_lr) == (400, 0.01)


def test_he2016_sweep_covers_the_papers_depths():
    from resnet_exp.run.command_line import validate

    assert validate(["-m", "experiment=he2016_cifar10"]) is None
    assert validate(["-m", "experiment=mnist_depth"]) is None
    assert validate(["-m", "experiment=seed_resnet18_cifar10"]) is None


@pytest.mark.slow
def test_mixed_precision_trains_with_float32_outputs_and_gradients(make_cfg, client, cifar10):
    overrides = ["data=cifar10", f"data.path={cifar10}", "trainer.epochs=1", *SMALL]
    mixed = run_job(make_cfg(*overrides, "trainer.mixed_precision=true"), overrides=overrides)
    from resnet_exp.training import fit as training

    assert keras.mixed_precision.global_policy().name == "mixed_float16"
    model = training.model_from_config(make_cfg(*overrides), (32, 32, 3), 10)
    assert model.get_layer("classifier").compute_dtype == "float32"
    assert model.layers[1].compute_dtype == "float16"  # the first convolution
    assert isinstance(model.output.dtype, str) and model.output.dtype == "float32"
    plain = run_job(make_cfg(*overrides), overrides=overrides)
    assert mixed.status == plain.status == "FINISHED"
    for key in ("grad_first_norm", "grad_last_norm", "test_loss"):
        (m_step, m_value), *_ = _history(client, mixed.run_id, key)
        (p_step, p_value), *_ = _history(client, plain.run_id, key)
        assert np.isfinite(m_value) and m_step == p_step
    # same initial weights: at initialisation float16 compute changes the probe only slightly
    (_, m0), *_ = _history(client, mixed.run_id, "grad_first_norm")
    (_, p0), *_ = _history(client, plain.run_id, "grad_first_norm")
    assert m0 == pytest.approx(p0, rel=0.05)


@pytest.mark.slow
def test_he2016_preset_smoke_run_on_every_format(tmp_path, tracking_uri, client):
    """The paper's preset through the entry point for a few iterations, on each format.

    One folder holds a CIFAR-10 pickle copy and gzipped IDX files (their names do
    not collide), so one sweep runs both formats from it. (CIFAR-100 runs in
    process above; depth 8 keeps graph tracing short.)
    """
    root = write_cifar10(tmp_path, per_batch=40)
    write_idx(root, gz=True)
    result = run_train(
        "-m",
        "experiment=he2016_cifar10",
        "data=cifar10,mnist",
        f"data.path={root}",
        "model.depth=8",
        "model.residual=true",
        "trainer.steps=7",  # 180 CIFAR-10 images at batch 64: 3 per epoch, the third cut to 1
        "trainer.batch_size=64",
        "optim.schedule.milestone_steps=[2,4]",
        "gradients.probe_size=16",
    )
    assert result.returncode == 0, result.stderr[-3000:]
    runs = [r for r in runs_of(client, "he2016_cifar10") if "mlflow.parentRunId" in r.data.tags]
    by_name = {r.data.params["data.name"]: r for r in runs}
    assert set(by_name) == {"cifar10", "mnist"}
    assert all(r.info.status == "FINISHED" for r in runs)
    for run in runs:
        assert run.data.params["data.augment"] == "True"
        assert "test_accuracy" in run.data.metrics and "test_loss" in run.data.metrics
    run_id = by_name["cifar10"].info.run_id
    assert [s for s, _ in _history(client, run_id, "test_accuracy")] == [3]
    lrs = [round(v, 6) for _, v in _history(client, run_id, "lr")]
    assert lrs == [0.1, 0.01, 0.001]  # at iterations 0, 3, 6 (drops after 2 and 4)


@pytest.mark.slow
def test_uncached_download_offline_is_one_line_before_training(tmp_path, tracking_uri, client):
    """An empty Keras cache and no network: one line naming the cache and data.path, and no
    run in the store."""
    env = {"KERAS_HOME": str(tmp_path / "keras")}
    single = run_train("data=cifar100", "model.depth=8", env=env)
    assert single.returncode == 2
    lines = [line for line in single.stderr.splitlines() if line.startswith("data error")]
    assert len(lines) == 1 and "Traceback" not in single.stderr
    assert str(tmp_path / "keras" / "datasets") in lines[0] and "data.path=" in lines[0]
    assert not runs_of(client)  # the data is checked before any run opens: nothing left behind


@pytest.mark.slow
def test_augmented_deterministic_runs_repeat_bit_for_bit(make_cfg, client, cifar10):
    overrides = [
        "data=cifar10",
        f"data.path={cifar10}",
        "data.augment=true",
        "trainer.deterministic=true",
        "trainer.epochs=2",
        "tracking.resume=false",
        *SMALL,
    ]
    first, second = (run_job(make_cfg(*overrides), overrides=overrides) for _ in range(2))
    for key in ("train_loss", "val_loss", "grad_first_norm", "test_loss"):
        assert _history(client, first.run_id, key) == _history(client, second.run_id, key), key


def test_l2_weight_decay_passes_through_the_momentum():
    """With a zero data gradient, L2 decay (the paper's) accumulates in the momentum."""

    def weights_after(mode: str, steps: int = 3) -> float:
        w = keras.Variable(1.0)
        opt = specs.optimizer(
            "sgd", 10, lr=0.1, momentum=0.9, weight_decay=0.1, weight_decay_mode=mode
        )
        for _ in range(steps):
            opt.apply_gradients([(keras.ops.zeros(()), w)])
        return float(w.numpy())

    # by hand: Keras decoupled w <- w (1 - lr wd); L2: m <- 0.9 m - lr wd w, w <- w + m
    decoupled, m, w = 1.0, 0.0, 1.0
    for _ in range(3):
        decoupled *= 1 - 0.1 * 0.1
        m = 0.9 * m - 0.1 * 0.1 * w
        w += m
    assert weights_after("decoupled") == pytest.approx(decoupled, rel=1e-6)
    assert weights_after("l2") == pytest.approx(w, rel=1e-6)
    assert w < decoupled
