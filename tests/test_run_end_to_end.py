"""A run logged end to end to a real SQLite MLflow store: the metric contract."""

from __future__ import annotations

import io

import pandas as pd
import pytest
import yaml
from conftest import TINY, run_train, runs_of

from resnet_exp.run.job import run_job

GRAD_METRICS = [
    "grad_first_norm",
    "grad_last_norm",
    "grad_first_rel",
    "grad_last_rel",
    "grad_first_last_ratio",
]
EPOCH_METRICS = ["train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr", "epoch_time_s"]
ARTIFACTS = {"config.yaml", "grad_profile.csv", "history.csv", "model_summary.txt"}


def _artifact_text(client, run_id: str, name: str) -> str:
    import mlflow

    return mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/{name}")


def test_run_logs_every_param_metric_and_artifact(make_cfg, client):
    cfg = make_cfg(*TINY, "model.residual=false")
    outcome = run_job(cfg, overrides=TINY)
    assert outcome.status == "FINISHED"
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["model.depth"] == "8"
    assert params["model.residual"] == "False"
    assert params["model.batch_norm"] == "True"
    assert params["data.name"] == "synthetic"
    assert params["optim.lr"] == "0.1"
    assert params["seed"] == "0"
    assert run.data.tags["diverged"] == "false"
    assert run.data.tags["run_kind"] == "train"
    assert len(run.data.tags["config_hash"]) == 16
    for key in GRAD_METRICS:
        steps = [m.step for m in client.get_metric_history(outcome.run_id, key)]
        assert sorted(steps) == [0, 1, 2], key
    for key in EPOCH_METRICS:
        steps = [m.step for m in client.get_metric_history(outcome.run_id, key)]
        assert sorted(steps) == [1, 2], key
    assert {a.path for a in client.list_artifacts(outcome.run_id)} >= ARTIFACTS

    profile = pd.read_csv(io.StringIO(_artifact_text(client, outcome.run_id, "grad_profile.csv")))
    assert list(profile.columns) == [
        "epoch",
        "layer_index",
        "layer_name",
        "grad_norm",
        "weight_norm",
    ]
    assert sorted(profile.epoch.unique()) == [0, 1, 2]
    for _, layers in profile.groupby("epoch"):  # every weight layer, every epoch, in order
        assert layers.layer_index.tolist() == list(range(8))
        assert layers.layer_name.iloc[0] == "stem_conv"
        assert layers.layer_name.iloc[-1] == "classifier"
    # The first/last metrics are the profile's first and last rows, at the same step.
    for key, index in (("grad_first_norm", 0), ("grad_last_norm", 7)):
        logged = {m.step: m.value for m in client.get_metric_history(outcome.run_id, key)}
        rows = profile[profile.layer_index == index].set_index("epoch").grad_norm
        for step in (0, 1, 2):
            assert rows[step] == pytest.approx(logged[step], rel=1e-5), (key, step)

    config = yaml.safe_load(_artifact_text(client, outcome.run_id, "config.yaml"))
    assert config["model"]["depth"] == 8 and config["model"]["residual"] is False
    history = pd.read_csv(io.StringIO(_artifact_text(client, outcome.run_id, "history.csv")))
    assert history.epoch.tolist() == [1, 2]
    # Epoch e's Keras values are MLflow's step e, under the contract's names.
    for keras_key, metric in (("accuracy", "train_accuracy"), ("val_accuracy", "val_accuracy")):
        logged = {m.step: m.value for m in client.get_metric_history(outcome.run_id, metric)}
        assert [logged[e] for e in (1, 2)] == pytest.approx(history[keras_key].tolist(), rel=1e-6)


def test_gradients_disabled_logs_no_gradient_metrics(make_cfg, client):
    outcome = run_job(make_cfg(*TINY, "gradients.enabled=false"))
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"
    assert not set(GRAD_METRICS) & set(run.data.metrics)
    assert "grad_profile.csv" not in {a.path for a in client.list_artifacts(outcome.run_id)}


def test_a_run_that_raises_ends_failed_not_running(make_cfg, client, monkeypatch):
    from resnet_exp.training import fit as training

    def broken(*args, **kwargs):
        raise RuntimeError("boom")

    monkeypatch.setattr(training, "train", broken)
    with pytest.raises(RuntimeError, match="boom"):
        run_job(make_cfg(*TINY))
    (run,) = runs_of(client)
    assert run.info.status == "FAILED"
    assert "boom" in run.data.tags["error"]


def test_relaunching_the_same_config_trains_nothing(make_cfg, client):
    first = run_job(make_cfg(*TINY))
    again = run_job(make_cfg(*TINY))
    assert again.status == "SKIPPED" and again.run_id == first.run_id
    forced = run_job(make_cfg(*TINY, "tracking.resume=false"))
    assert forced.status == "FINISHED" and forced.run_id != first.run_id
    assert len(runs_of(client)) == 2


@pytest.mark.slow
def test_command_line_run_as_in_the_issue(tracking_uri, client, tmp_path):
    result = run_train(
        "model=resnet_cifar",
        "model.depth=8",
        "trainer.epochs=2",
        "data.num_samples=64",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    (run,) = runs_of(client)
    assert run.info.status == "FINISHED"
    assert run.data.params["data.name"] == "digits"
    for key in GRAD_METRICS:
        assert [m.step for m in client.get_metric_history(run.info.run_id, key)] == [0, 1, 2]


def test_deterministic_seeded_runs_repeat_bit_for_bit(make_cfg, client):
    overrides = [*TINY, "trainer.deterministic=true", "tracking.resume=false", "seed=3"]
    first = run_job(make_cfg(*overrides))
    second = run_job(make_cfg(*overrides))

    def losses(run_id: str, key: str) -> list[float]:
        history = sorted(client.get_metric_history(run_id, key), key=lambda m: m.step)
        return [m.value for m in history]

    assert first.run_id != second.run_id
    for key, steps in [("train_loss", 2), ("val_loss", 2), ("grad_first_norm", 3)]:
        logged = losses(first.run_id, key)
        assert len(logged) == steps, key  # something to compare: not [] == []
        assert losses(second.run_id, key) == logged, key
    assert losses(second.run_id, "grad_last_norm") == losses(first.run_id, "grad_last_norm")


def test_fixed_probe_source_is_still_available(make_cfg, client):
    cfg = make_cfg(*TINY, "gradients.source=probe")
    outcome = run_job(cfg, overrides=TINY)
    for key in [*GRAD_METRICS, "probe_loss"]:
        steps = [m.step for m in client.get_metric_history(outcome.run_id, key)]
        assert sorted(steps) == [0, 1, 2], key
