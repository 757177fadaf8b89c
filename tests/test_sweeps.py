"""Real Hydra multiruns as a user launches them: parents, parallelism, failures, resume."""

from __future__ import annotations

import socket
import sqlite3
from pathlib import Path

import pytest
from conftest import TINY, run_train, runs_of, start_long_run, wait_for_an_epoch

pytestmark = pytest.mark.slow

EPOCH_KEYS = ["train_loss", "val_accuracy", "grad_first_norm", "grad_last_norm"]


def _children(client, parent_id: str):
    return [r for r in runs_of(client) if r.data.tags.get("mlflow.parentRunId") == parent_id]


def _parent(client):
    parents = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "sweep"]
    assert len(parents) == 1
    return parents[0]


def _assert_complete(client, run, epochs: int = 2) -> None:
    assert run.info.status == "FINISHED"
    for key in EPOCH_KEYS:
        steps = {m.step for m in client.get_metric_history(run.info.run_id, key)}
        assert set(range(1, epochs + 1)) <= steps, key


def test_two_job_sweep_is_one_parent_with_two_children(tracking_uri, client, tmp_path):
    result = run_train("-m", *TINY, "model.residual=true,false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    console = result.stdout + result.stderr  # Hydra's lines show the user's overrides only
    assert "#1 : " in console and "tracking.parent_run_id" not in console
    parent = _parent(client)
    children = _children(client, parent.info.run_id)
    assert sorted(c.data.params["model.residual"] for c in children) == ["False", "True"]
    for child in children:
        _assert_complete(client, child)
        assert child.data.tags["sweep_id"] == parent.data.tags["sweep_id"]
        assert "tracking.parent_run_id" not in child.data.tags["overrides"]
    assert parent.info.status == "FINISHED"
    assert parent.info.run_name == "resnet-exp: d8 x residual|plain"  # the study, what it sweeps
    assert parent.data.tags["jobs_finished"] == "2"
    assert parent.data.tags["jobs_failed"] == "0"
    assert not parent.data.metrics  # bookkeeping is tags: the chart view opens on training

    # as if the first launch had been a day ago: the parent's Duration stays the work's
    day_ms = 86_400_000
    with sqlite3.connect(tracking_uri.removeprefix("sqlite:///")) as db:
        db.execute(
            "update runs set start_time = start_time - ?, end_time = end_time - ? "
            "where run_uuid = ?",
            (day_ms, day_ms, parent.info.run_id),
        )
    first_work_s = (parent.info.end_time - parent.info.start_time) / 1000
    again = run_train("-m", *TINY, "model.residual=true,false", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert len(runs_of(client)) == 3  # the same parent, reopened; no new training run
    reopened = _parent(client)
    assert reopened.info.run_id == parent.info.run_id
    assert reopened.data.tags["launches"] == "2"
    duration_s = (reopened.info.end_time - reopened.info.start_time) / 1000
    assert first_work_s <= duration_s < first_work_s + 300  # not a day
    assert abs(duration_s - float(reopened.data.tags["work_s"])) < 0.2


def test_four_parallel_jobs_on_a_fresh_store_lose_nothing(tracking_uri, client, tmp_path):
    result = run_train(
        "-m",
        *TINY,
        "model.depth=8,14",
        "model.residual=true,false",
        "hydra/launcher=joblib",
        "hydra.launcher.n_jobs=4",
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    parent = _parent(client)
    children = _children(client, parent.info.run_id)
    assert len(children) == 4
    for child in children:
        _assert_complete(client, child)
        assert child.data.params["trainer.threads"] == "1"  # 2 cores shared by 4 jobs


def test_a_diverged_and_a_failing_job_do_not_cost_their_neighbours(tracking_uri, client, tmp_path):
    # lr=1e4 without batch norm overflows within the first epoch: a result, tagged.
    # 2,000,000 filters ask for a 3x3x2e6x2e6 kernel (144 TB): the job fails when it builds
    # the net (TensorFlow's ResourceExhaustedError), a failure no check before the run sees.
    # (Bad data no longer fails a job: the sweeper refuses it before any job starts.)
    result = run_train(
        "-m",
        *TINY,
        "model.batch_norm=false",
        "optim.lr=0.05,10000",
        "model.base_filters=16,2000000",
        cwd=tmp_path,
    )
    assert result.returncode != 0
    assert "failed jobs" in result.stderr
    children = _children(client, _parent(client).info.run_id)
    by_case = {
        (c.data.params["optim.lr"], c.data.params["model.base_filters"]): c for c in children
    }
    healthy = by_case[("0.05", "16")]
    _assert_complete(client, healthy)
    assert healthy.data.tags["diverged"] == "false"
    diverged = by_case[("10000.0", "16")]
    assert diverged.info.status == "FINISHED"
    assert diverged.data.tags["diverged"] == "true"
    assert int(diverged.data.tags["diverged_epoch"]) >= 1
    for case in [("0.05", "2000000"), ("10000.0", "2000000")]:
        assert by_case[case].info.status == "FAILED"
        assert by_case[case].data.tags["error"].startswith("ResourceExhaustedError")
    parent = _parent(client)
    assert parent.data.tags["jobs_failed"] == "2"
    assert parent.data.tags["jobs_diverged"] == "1"


def test_sigterm_marks_the_run_killed(tracking_uri, client, tmp_path):
    process = start_long_run(tmp_path)
    wait_for_an_epoch(client, process)
    process.terminate()
    process.wait(timeout=120)
    (run,) = runs_of(client)
    assert run.info.status == "KILLED"
    assert client.get_metric_history(run.info.run_id, "train_loss")  # kept what it logged


def test_submitit_local_runs_jobs_as_separate_processes(tracking_uri, client, tmp_path):
    result = run_train(
        "-m", *TINY, "model.residual=true,false", "hydra/launcher=submitit_local", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-3000:]
    children = _children(client, _parent(client).info.run_id)
    assert len(children) == 2
    for child in children:
        _assert_complete(client, child)
    assert list(Path(tmp_path, "multirun").rglob(".submitit"))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_sweep_against_a_real_tracking_server(tmp_path):
    from mlflow.tracking import MlflowClient
    from tracking_server import start_server

    port = _free_port()
    with open(tmp_path / "server.log", "w") as log:
        server = start_server(tmp_path / "server", port, log=log)
    try:
        uri = f"http://127.0.0.1:{port}"
        result = run_train(
            "-m", *TINY, "model.residual=true,false", env={"MLFLOW_TRACKING_URI": uri}, cwd=tmp_path
        )
        assert result.returncode == 0, result.stderr[-3000:]
        client = MlflowClient(uri)
        children = _children(client, _parent(client).info.run_id)
        assert len(children) == 2
        for child in children:
            _assert_complete(client, child)
            names = {a.path for a in client.list_artifacts(child.info.run_id)}
            assert {"grad_profile.csv", "history.csv", "config.yaml"} <= names
        assert any((tmp_path / "server" / "mlartifacts").rglob("grad_profile.csv"))
    finally:
        server.terminate()
        server.wait(timeout=30)
