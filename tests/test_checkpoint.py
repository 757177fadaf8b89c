"""A stopped run continues from its checkpoint: same MLflow run, each epoch trained and logged once.

Real Keras models, real SQLite stores, real subprocesses of the entry point and real
signals: a run stopped by SIGTERM (or the pre-emption warning, SIGUSR2) after a few
epochs is relaunched with the same command and finishes the same run.
"""

from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import threading
import time

import keras
import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, TRAIN, runs_of
from mlflow.tracking import MlflowClient

from resnet_exp.recording.gradients import GradientRecorder, StepGradientRecorder
from resnet_exp.training.checkpoint import Checkpoint, CheckpointMismatch, Snapshot, owner

EPOCHS = 12
# epochs of a few tenths of a second: the run is stopped while it trains
LONG = [*TINY, "data.num_samples=1600", f"trainer.epochs={EPOCHS}", "trainer.threads=1"]


def _env() -> dict[str, str]:
    """The environment now: with the test's MLFLOW_TRACKING_URI (set by `tracking_uri`)."""
    return {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}


def _steps(client: MlflowClient, run_id: str) -> dict[str, list[int]]:
    keys = client.get_run(run_id).data.metrics
    return {k: sorted(m.step for m in client.get_metric_history(run_id, k)) for k in keys}


def _logged_epoch(client: MlflowClient, epoch: int, process: subprocess.Popen, timeout_s=300):
    """The run, once it has logged `epoch`; fails if the process ends or never gets there."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "train"]
        if runs:
            history = client.get_metric_history(runs[0].info.run_id, "train_loss")
            if any(m.step >= epoch for m in history):
                return runs[0]
        if process.poll() is not None:
            out = process.communicate()[0] or ""
            pytest.fail(f"the command ended before epoch {epoch}: {out[-3000:]}")
        time.sleep(0.05)
    process.kill()
    pytest.fail(f"the run never logged epoch {epoch}")


def _epoch_lines(text: str) -> list[int]:
    """The epochs a process trained, from its one line per epoch (`<run> epoch e/E: ...`)."""
    return [
        int(line.split(" epoch ")[1].split("/")[0])
        for line in text.splitlines()
        if " epoch " in line and f"/{EPOCHS}:" in line
    ]


def _assert_continuous(client: MlflowClient, run, reached: int) -> None:
    """One FINISHED run, continued after `reached`: every epoch-stepped metric has each
    step once, step 0 (initialisation) once, and the tables hold every epoch once."""
    run_id = run.info.run_id
    assert run.info.status == "FINISHED"
    assert run.data.tags["resumed_from_epoch"] == str(reached)
    assert run.data.tags["restarts"] == "1"
    assert "error" not in run.data.tags
    steps = _steps(client, run_id)
    for key in ("train_loss", "val_loss", "train_accuracy", "lr", "epoch_time_s"):
        assert steps[key] == list(range(1, EPOCHS + 1)), (key, steps[key])
    for key in ("grad_first_norm", "grad_last_norm", "grad_first_last_ratio"):
        assert steps[key] == list(range(0, EPOCHS + 1)), (key, steps[key])

    def table(name: str) -> pd.DataFrame:
        return _artifact_csv(client, run_id, name)

    assert table("history.csv")["epoch"].tolist() == list(range(1, EPOCHS + 1))
    per_step = table("grad_profile.csv").groupby("epoch").size()
    assert per_step.index.tolist() == list(range(0, EPOCHS + 1))
    assert per_step.nunique() == 1  # each kernel once per step


@pytest.mark.slow
def test_sigterm_then_relaunch_continues_the_same_run_from_its_epoch(
    tracking_uri, client, tmp_path
):
    first = subprocess.Popen(
        [sys.executable, str(TRAIN), *LONG],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    _logged_epoch(client, 2, first)
    first.send_signal(signal.SIGTERM)
    _, first_err = first.communicate(timeout=120)
    assert first.returncode != 0
    (killed,) = runs_of(client)
    assert killed.info.status == "KILLED", first_err[-3000:]
    reason = killed.data.tags["error"]
    assert reason.startswith("killed by signal SIGTERM; checkpoint at epoch "), reason
    reached = int(reason.rsplit("checkpoint at epoch ", 1)[1].split()[0])
    assert 2 <= reached < EPOCHS
    assert _epoch_lines(first_err) == list(range(1, reached + 1))
    digest, run_id = killed.data.tags["config_hash"], killed.info.run_id
    checkpoint = tmp_path / "checkpoints" / digest / f"{run_id}.npz"
    assert checkpoint.is_file()

    second = subprocess.run(
        [sys.executable, str(TRAIN), *LONG],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=600,
    )
    assert second.returncode == 0, second.stderr[-3000:]
    assert f"continuing run {run_id} (KILLED) after epoch {reached}" in second.stderr
    (run,) = runs_of(client)  # the same run, no new one
    assert run.info.run_id == run_id
    _assert_continuous(client, run, reached)
    # nothing trained twice: the relaunch trained exactly the epochs after the checkpoint
    assert _epoch_lines(second.stderr) == list(range(reached + 1, EPOCHS + 1))
    assert not checkpoint.exists()  # a FINISHED run's checkpoint is deleted


@pytest.mark.slow
def test_the_preemption_warning_requeues_the_job_and_it_continues_its_run(
    tracking_uri, client, tmp_path
):
    """submitit's own USR2 handling, run locally (`submitit_local`: the job is requeued by
    restarting its process, where Slurm runs `scontrol requeue`): the job's process gets
    USR2 after epoch 2, the run closes KILLED, and the requeued job finishes that run."""
    sweep = subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", *LONG, "hydra/launcher=submitit_local"],
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=_env(),
    )
    run = _logged_epoch(client, 2, sweep)
    digest, run_id = run.data.tags["config_hash"], run.info.run_id
    checkpoint = Checkpoint(tmp_path / "checkpoints" / digest / f"{run_id}.npz")
    job_pid = checkpoint.read_state()["owner"]["pid"]  # the job's process, not the sweep's
    os.kill(job_pid, signal.SIGUSR2)
    out, _ = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, out[-3000:]
    (run,) = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "train"]
    assert run.info.run_id == run_id
    reached = int(run.data.tags["resumed_from_epoch"])
    assert 2 <= reached < EPOCHS
    _assert_continuous(client, run, reached)
    logs = "".join(p.read_text() for p in tmp_path.rglob(".submitit/**/*_log.err"))
    assert "this job is preempted" in logs, logs[-3000:]  # submitit's handler ran, and requeued
    assert f"continuing run {run_id} (KILLED) after epoch {reached}" in logs
    assert not checkpoint.exists()


def _sigterm_once_logged(client: MlflowClient, experiment: str, epoch: int, done: threading.Event):
    """From a thread: SIGTERM to this process once `experiment`'s run has logged `epoch`."""
    while not done.is_set():
        runs = runs_of(client, experiment)
        if runs and runs[0].info.status == "RUNNING":
            history = client.get_metric_history(runs[0].info.run_id, "train_loss")
            if any(m.step >= epoch for m in history):
                os.kill(os.getpid(), signal.SIGTERM)
                return
        time.sleep(0.02)


class _LateSignal(Exception):
    """The test's own SIGTERM handler: the signal came after the run it was meant for."""


@pytest.mark.slow
def test_a_resumed_run_trains_exactly_as_the_uninterrupted_one(make_cfg, client):
    """Same weights, optimiser, schedule and shuffles: a deterministic run stopped after an
    epoch and continued logs the very numbers of a run that was never stopped."""
    from resnet_exp.run.job import Terminated, run_job

    overrides = [*TINY, "data.num_samples=800", "trainer.epochs=6", "trainer.deterministic=true"]
    # the curvature recorder's record crosses the stop too (issue 18)
    curvature = ["curvature.enabled=true", "curvature.every=1", "curvature.examples=16"]
    overrides += [*curvature, "curvature.iterations=4", "curvature.samples=3"]
    whole = run_job(make_cfg(*overrides, "tracking.experiment=whole"))
    done = threading.Event()
    stopper = threading.Thread(
        target=_sigterm_once_logged, args=(client, "split", 1, done), daemon=True
    )

    def late(signum, frame):
        raise _LateSignal("SIGTERM after the run")

    previous = signal.signal(signal.SIGTERM, late)
    try:
        stopper.start()
        with pytest.raises(Terminated):
            run_job(make_cfg(*overrides, "tracking.experiment=split"))
    finally:
        done.set()
        stopper.join()
        signal.signal(signal.SIGTERM, previous)
    (stopped,) = runs_of(client, "split")
    assert stopped.info.status == "KILLED"
    resumed = run_job(make_cfg(*overrides, "tracking.experiment=split"))
    assert resumed.run_id == stopped.info.run_id
    reached = int(client.get_run(resumed.run_id).data.tags["resumed_from_epoch"])
    assert 1 <= reached < 6
    for key in (
        "train_loss",
        "val_loss",
        "lr",
        "grad_first_norm",
        "grad_last_norm",
        "hessian_trace",
    ):
        expected = sorted((m.step, m.value) for m in client.get_metric_history(whole.run_id, key))
        got = sorted((m.step, m.value) for m in client.get_metric_history(resumed.run_id, key))
        assert got == expected, key
    tables = [_artifact_csv(client, r, "curvature.csv") for r in (whole.run_id, resumed.run_id)]
    pd.testing.assert_frame_equal(*(t.drop(columns="seconds") for t in tables))


def _artifact_csv(client: MlflowClient, run_id: str, name: str) -> pd.DataFrame:
    text = mlflow.artifacts.load_text(f"{client.get_run(run_id).info.artifact_uri}/{name}")
    return pd.read_csv(io.StringIO(text))


# ---------------------------------------------------------------- units


def _tiny_model() -> keras.Model:
    model = keras.Sequential(
        [
            keras.Input((4,)),
            keras.layers.Dense(8, activation="relu", name="hidden"),
            keras.layers.Dense(3, name="head"),
        ]
    )
    model.compile(
        optimizer=keras.optimizers.SGD(0.05, momentum=0.9),
        loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True),
    )
    return model


def _data():
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 4)).astype("float32"), rng.integers(0, 3, size=64)


@pytest.mark.parametrize("kind", ["step", "probe"])
def test_a_recorders_history_round_trips_through_its_state_and_continues(kind):
    """state() -> JSON -> restore() on a fresh recorder: the record goes on, step 0 is not
    measured again, and each step's profile rows appear once."""
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _tiny_model()

    def recorder():
        return StepGradientRecorder() if kind == "step" else GradientRecorder(x[:16], y[:16])

    first = recorder()
    model.fit(x, y, batch_size=16, epochs=2, callbacks=[first], verbose=0)
    saved = json.loads(json.dumps(first.state()))

    second = recorder()
    second.restore(saved, model)
    assert second.history == first.history and second.profile == first.profile
    assert second.layer_names == first.layer_names
    model.fit(x, y, batch_size=16, epochs=4, initial_epoch=2, callbacks=[second], verbose=0)
    assert sorted(second.history) == [0, 1, 2, 3, 4]
    for step in (0, 1, 2):
        assert second.history[step] == first.history[step]  # kept, not measured again
    frame = second.profile_frame()
    assert frame.groupby("epoch").size().to_dict() == {s: 2 for s in range(5)}


def test_a_checkpoint_restores_weights_and_optimiser_and_refuses_another_model(tmp_path):
    keras.utils.set_random_seed(0)
    x, y = _data()
    model = _tiny_model()
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)
    checkpoint = Checkpoint.of_run(tmp_path, "hash", "run")
    snapshot = Snapshot(model)
    state = {"epoch": 1, "rows": [], "manifest": snapshot.manifest(), "owner": owner()}
    checkpoint.submit(snapshot.take(), state)
    checkpoint.flush()
    assert checkpoint.saved_epoch == 1 and checkpoint.read_state()["epoch"] == 1
    saved = [v.numpy().copy() for v in [*model.weights, *model.optimizer.variables]]
    model.fit(x, y, batch_size=16, epochs=1, verbose=0)  # moves weights, momenta, iterations

    assert Checkpoint.of_run(tmp_path, "hash", "run").restore(model)["epoch"] == 1
    now = [v.numpy() for v in [*model.weights, *model.optimizer.variables]]
    assert all(np.array_equal(a, b) for a, b in zip(saved, now, strict=True))
    assert int(model.optimizer.iterations.numpy()) == 4  # 64 examples / 16: one epoch

    other = keras.Sequential([keras.Input((4,)), keras.layers.Dense(3)])
    other.compile(optimizer="sgd", loss="mse")
    other.optimizer.build(other.trainable_variables)
    with pytest.raises(CheckpointMismatch):
        checkpoint.restore(other)
    checkpoint.delete()
    assert not checkpoint.exists() and not (tmp_path / "hash").exists()


def test_a_running_run_is_continued_only_once_its_writer_is_gone(client, tmp_path, monkeypatch):
    """RUNNING with a checkpoint: continued when the process that wrote it has ended (or it
    was this Slurm job, now requeued); left alone while that process may still train."""
    from resnet_exp.run.job import find_resumable_run
    from resnet_exp.tracking.store import ensure_experiment

    for name in ("SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID"):
        monkeypatch.delenv(name, raising=False)
    experiment = ensure_experiment(client, "running")
    run = client.create_run(experiment, tags={"config_hash": "h"}).info.run_id
    root = tmp_path / "checkpoints"

    def write(writer: dict) -> None:
        checkpoint = Checkpoint.of_run(root, "h", run)
        checkpoint.submit({}, {"epoch": 3, "rows": [], "manifest": [], "owner": writer})
        checkpoint.flush()

    def found():
        hit = find_resumable_run(client, experiment, "h", None, root)
        return hit and (hit[0].info.run_id, hit[2]["epoch"])

    ended = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"],
        text=True,
        capture_output=True,
        check=True,
    )
    here = owner()
    write({**here, "pid": int(ended.stdout)})  # a process of this host that has ended
    assert found() == (run, 3)
    write({**here, "pid": os.getppid()})  # alive: may still be training
    assert found() is None
    write({**here, "host": "another-node"})  # cannot tell: left alone
    assert found() is None
    write({**here, "host": "another-node", "slurm_job": "4242"})
    monkeypatch.setenv("SLURM_JOB_ID", "4242")  # this job, requeued: its earlier self is gone
    assert found() == (run, 3)
    assert find_resumable_run(client, experiment, "h", "a-sweep", root) is None  # other sweep
    client.set_terminated(run, "FAILED")
    assert found() is None  # a failed run is retried afresh, not continued
