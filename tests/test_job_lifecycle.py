"""A job's life in-process, on a real SQLite store: divergence, resume, SIGTERM, sweep parents.

The slow tests (test_sweeps.py) check the same behaviours through real Hydra
subprocesses; these run `run_job` and the sweep callback in this process with
tiny settings, so the fast suite sees a broken lifecycle too.
"""

from __future__ import annotations

import io
import math
import os
import signal

import keras
import pandas as pd
import pytest
from conftest import TINY, runs_of
from mlflow.tracking import MlflowClient

from resnet_exp.run.command_line import expand_sweeps
from resnet_exp.run.job import Terminated, find_finished_run, run_job
from resnet_exp.run.sweep import SweepParent
from resnet_exp.tracking.run_log import MlflowEpochLogger
from resnet_exp.tracking.store import ensure_experiment
from resnet_exp.training.callbacks import DivergenceMonitor

# Without batch norm, lr = 1e4 overflows within the first epoch (a NaN loss).
DIVERGING = [*TINY, "model.batch_norm=false", "optim.lr=10000", "trainer.epochs=4"]


def _steps(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def _artifact(client: MlflowClient, run_id: str, name: str) -> pd.DataFrame:
    import mlflow

    uri = f"{client.get_run(run_id).info.artifact_uri}/{name}"
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(uri)))


# ---------------------------------------------------------------- divergence


def test_divergence_monitor_stops_at_the_first_non_finite_loss():
    model = keras.Sequential([keras.Input((1,)), keras.layers.Dense(1)])
    monitor = DivergenceMonitor()
    monitor.set_model(model)
    model.stop_training = False
    monitor.on_epoch_end(0, {"loss": 0.7})
    assert not model.stop_training and not monitor.diverged
    monitor.on_epoch_end(1, {"loss": math.nan})
    assert model.stop_training and monitor.diverged and monitor.diverged_epoch == 2
    monitor.on_epoch_end(2, {"loss": math.inf})
    assert monitor.diverged_epoch == 2  # the first one is kept

    inf = DivergenceMonitor()
    inf.set_model(model)
    model.stop_training = False
    inf.on_epoch_end(0, {"loss": math.inf})
    assert model.stop_training and inf.diverged_epoch == 1


def test_a_diverged_run_stops_is_tagged_and_logs_no_epoch_after_the_nan(make_cfg, client):
    outcome = run_job(make_cfg(*DIVERGING))
    assert outcome.status == "FINISHED" and outcome.diverged
    run = client.get_run(outcome.run_id)
    assert run.info.status == "FINISHED"  # a result, not a crash
    assert run.data.tags["diverged"] == "true"
    stop = int(run.data.tags["diverged_epoch"])
    assert 1 <= stop < 4
    steps = _steps(client, outcome.run_id)
    assert steps["lr"] == list(range(1, stop + 1))  # logged every epoch, up to the NaN
    assert steps["grad_first_norm"][0] == 0
    assert max(max(s) for s in steps.values()) == stop, steps
    history = _artifact(client, outcome.run_id, "history.csv")
    assert history["epoch"].tolist() == list(range(1, stop + 1))
    assert not math.isfinite(history["loss"].iloc[-1])
    profile = _artifact(client, outcome.run_id, "grad_profile.csv")
    assert profile["epoch"].max() <= stop


# ---------------------------------------------------------------- resume


def test_only_a_finished_run_counts_as_done(client):
    experiment = ensure_experiment(client, "resume")
    for status in ("FAILED", "KILLED", "RUNNING"):
        run = client.create_run(experiment, tags={"config_hash": "same"})
        if status != "RUNNING":
            client.set_terminated(run.info.run_id, status)
    other = client.create_run(experiment, tags={"config_hash": "other"})
    client.set_terminated(other.info.run_id, "FINISHED")
    assert find_finished_run(client, experiment, "same") is None
    done = client.create_run(experiment, tags={"config_hash": "same"})
    client.set_terminated(done.info.run_id, "FINISHED")
    assert find_finished_run(client, experiment, "same") == done.info.run_id


def test_relaunch_retries_a_failed_or_killed_config_and_skips_a_finished_one(
    make_cfg, client, monkeypatch
):
    from resnet_exp.training import fit as training

    real_train = training.train

    def crash(*args, **kwargs):
        raise RuntimeError("boom")

    def preempted(*args, **kwargs):
        raise Terminated("signal 15")

    monkeypatch.setattr(training, "train", crash)
    with pytest.raises(RuntimeError):
        run_job(make_cfg(*TINY))
    monkeypatch.setattr(training, "train", preempted)
    with pytest.raises(Terminated):
        run_job(make_cfg(*TINY))
    broken = {r.info.run_id: r.info.status for r in runs_of(client)}
    assert sorted(broken.values()) == ["FAILED", "KILLED"]

    monkeypatch.setattr(training, "train", real_train)
    retried = run_job(make_cfg(*TINY))
    assert retried.status == "FINISHED" and retried.run_id not in broken
    again = run_job(make_cfg(*TINY))
    assert again.status == "SKIPPED" and again.run_id == retried.run_id
    assert len(runs_of(client)) == 3


# ---------------------------------------------------------------- SIGTERM


class _NoHandler(Exception):
    """Raised by the test's own SIGTERM handler: run_job did not install one."""


def test_sigterm_mid_training_ends_the_run_killed_and_keeps_its_epochs(
    make_cfg, client, monkeypatch
):
    logged = MlflowEpochLogger.on_epoch_end

    def log_then_sigterm(self, epoch, logs=None):
        logged(self, epoch, logs)
        if epoch == 0:
            os.kill(os.getpid(), signal.SIGTERM)  # pre-emption, after epoch 1 is logged

    def fallback(signum, frame):
        raise _NoHandler("run_job did not handle SIGTERM")

    monkeypatch.setattr(MlflowEpochLogger, "on_epoch_end", log_then_sigterm)
    previous = signal.signal(signal.SIGTERM, fallback)
    try:
        with pytest.raises(Terminated):
            run_job(make_cfg(*TINY, "trainer.epochs=50"))
        assert signal.getsignal(signal.SIGTERM) is fallback  # the caller's handler is back
    finally:
        signal.signal(signal.SIGTERM, previous)
    (run,) = runs_of(client)
    assert run.info.status == "KILLED"
    assert "signal" in run.data.tags["error"]
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")] == [1]


# ---------------------------------------------------------------- sweep parent, in-process


@pytest.fixture
def parents():
    """`parents(config, overrides)`: a sweep's parent run, as the sweeper opens it; the SIGTERM
    handler a sweep installs is undone afterwards."""
    previous = signal.getsignal(signal.SIGTERM)
    yield SweepParent
    signal.signal(signal.SIGTERM, previous)


def _run_sweep(make_cfg, parents, sweep: list[str]):
    """What the sweeper does: open the parent, run each job with its injected overrides
    (here in-process, through run_job), then count and close."""
    jobs = expand_sweeps(sweep)
    parent = parents(make_cfg(*jobs[0], hydra=True), list(sweep))
    parent.follow([make_cfg(*job) for job in jobs])
    outcomes = [
        run_job(make_cfg(*job, *parent.injected), overrides=job, raise_errors=False) for job in jobs
    ]
    with pytest.raises(SystemExit) as ended:
        parent.finish()
    return parent.injected, outcomes, ended.value.code


def _recorded(run, name: str) -> float:
    """A parent's bookkeeping count, whether it is kept as a metric or as a tag."""
    value = run.data.metrics.get(f"jobs_{name}", run.data.tags.get(f"jobs_{name}"))
    assert value is not None, (name, run.data.metrics, run.data.tags)
    return float(value)


def test_sweep_parent_is_passed_to_every_job_and_counts_their_outcomes(make_cfg, parents, client):
    # data.num_samples=4 cannot be split into 10 stratified classes: that job fails.
    sweep = [*TINY, "trainer.epochs=1", "data.num_samples=4,96"]
    task, outcomes, code = _run_sweep(make_cfg, parents, sweep)
    assert code == 1  # a failed configuration makes the sweep exit non-zero
    injected = [o for o in task if o.startswith("tracking.parent_run_id=")]
    assert len(injected) == 1
    parent_id = injected[0].split("=", 1)[1]
    parent = client.get_run(parent_id)
    assert parent.data.tags["run_kind"] == "sweep"
    assert parent.info.status in ("FAILED", "FINISHED")  # closed, not left RUNNING
    assert sorted(o.status for o in outcomes) == ["FAILED", "FINISHED"]
    children = {o.run_id: client.get_run(o.run_id) for o in outcomes}
    for child in children.values():
        assert child.data.tags["mlflow.parentRunId"] == parent_id
        assert child.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert "tracking.parent_run_id" not in child.data.tags["overrides"]
    assert _recorded(parent, "finished") == 1
    assert _recorded(parent, "failed") == 1
    assert _recorded(parent, "diverged") == 0

    # Relaunched: the same parent reopens, the finished job is skipped, the failed one retried.
    _, again, _ = _run_sweep(make_cfg, parents, sweep)
    assert sorted(o.status for o in again) == ["FAILED", "SKIPPED"]
    skipped = next(o for o in again if o.status == "SKIPPED")
    assert skipped.run_id == next(o.run_id for o in outcomes if o.status == "FINISHED")
    retried = next(o for o in again if o.status == "FAILED")
    assert retried.run_id not in children
    assert client.get_run(retried.run_id).data.tags["mlflow.parentRunId"] == parent_id
    parents = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "sweep"]
    assert [p.info.run_id for p in parents] == [parent_id]


def test_a_diverged_job_counts_as_finished_and_diverged_on_the_parent(make_cfg, parents, client):
    _, (outcome,), _ = _run_sweep_without_exit(make_cfg, parents, [*DIVERGING, "trainer.epochs=2"])
    assert outcome.diverged
    (parent,) = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "sweep"]
    assert parent.info.status == "FINISHED"
    assert _recorded(parent, "finished") == 1
    assert _recorded(parent, "diverged") == 1
    assert _recorded(parent, "failed") == 0


def _run_sweep_without_exit(make_cfg, parents, sweep: list[str]):
    """A sweep in which nothing fails: `finish` returns (no SystemExit)."""
    jobs = expand_sweeps(sweep)
    parent = parents(make_cfg(*jobs[0], hydra=True), list(sweep))
    outcomes = [
        run_job(make_cfg(*job, *parent.injected), overrides=job, raise_errors=False) for job in jobs
    ]
    parent.finish()
    return parent.injected, outcomes, None


def test_an_interrupted_sweep_leaves_its_parent_killed_not_running(make_cfg, parents, client):
    sweep = [*TINY, "seed=0,1"]
    sweep_parent = parents(make_cfg(*expand_sweeps(sweep)[0], hydra=True), sweep)
    (parent,) = runs_of(client)
    assert parent.info.status == "RUNNING"
    sweep_parent.close_if_interrupted()  # what atexit runs when the launcher dies mid-sweep
    assert client.get_run(parent.info.run_id).info.status == "KILLED"


def test_a_sqlite_stores_artifacts_live_beside_it_whatever_the_working_folder(
    tmp_path, monkeypatch, make_cfg
):
    """Not in `./mlruns` of wherever a run was launched (MLflow's default): beside the file."""
    from resnet_exp.run.job import run_job

    store = tmp_path / "store"
    store.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    uri = f"sqlite:///{store / 'mlflow.db'}"
    outcome = run_job(make_cfg(*TINY, "trainer.epochs=1", f"tracking.uri={uri}"))
    artifact_uri = MlflowClient(uri).get_run(outcome.run_id).info.artifact_uri
    assert artifact_uri.startswith((store / "mlruns").as_uri()), artifact_uri
    assert not (elsewhere / "mlruns").exists()
