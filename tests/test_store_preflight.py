"""An unusable tracking store fails in one line before anything trains; a busy one does not."""

from __future__ import annotations

import socket
import sqlite3
import subprocess
import sys

import pytest
from conftest import TINY, run_train, start_long_run, wait_for_an_epoch

from resnet_exp.tracking.preflight import check_store


def _dead_port() -> int:
    """A loopback port with nothing listening (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _not_a_folder(tmp_path) -> str:
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    return f"sqlite:///{blocker / 'mlflow.db'}"


def test_dead_server_is_named(tmp_path):
    port = _dead_port()
    problem = check_store(f"http://127.0.0.1:{port}")
    assert problem is not None and "connection refused" in problem and str(port) in problem


def test_unwritable_sqlite_and_wrong_scheme_are_named(tmp_path):
    assert "not a folder" in check_store(_not_a_folder(tmp_path))
    junk = tmp_path / "junk.db"
    junk.write_bytes(b"this is not sqlite" * 100)
    assert "not an SQLite database" in check_store(f"sqlite:///{junk}")
    assert "unknown scheme 'htp://'" in check_store("htp://127.0.0.1:5000")


def test_healthy_and_busy_sqlite_stores_pass(tmp_path):
    assert check_store(f"sqlite:///{tmp_path / 'new' / 'sub' / 'mlflow.db'}") is None
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path)
    holder.execute("create table t (x)")
    holder.execute("begin exclusive")  # another job holds the write lock
    try:
        assert check_store(f"sqlite:///{path}", timeout=0.2) is None
    finally:
        holder.rollback()
        holder.close()
    assert not (tmp_path / "new").exists()  # the check creates nothing


def test_a_live_non_mlflow_server_is_told_apart(tmp_path):
    server = subprocess.Popen(
        [sys.executable, "-m", "http.server", "0", "--bind", "127.0.0.1", "-d", str(tmp_path)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        line = server.stdout.readline()  # "Serving HTTP on 127.0.0.1 port N ..."
        port = int(line.split(" port ")[1].split()[0])
        assert "not an MLflow tracking server" in check_store(f"http://127.0.0.1:{port}")
    finally:
        server.terminate()
        server.wait(timeout=10)


def _assert_one_store_line(result, uri: str, fragment: str) -> None:
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in (result.stderr + result.stdout).splitlines() if line.strip()]
    assert lines == [lines[0]] and lines[0].startswith(f"tracking store error: {uri}: "), lines
    assert fragment in lines[0]


CASES = {
    "dead server": (lambda tmp: f"http://127.0.0.1:{_dead_port()}", "connection refused"),
    "unwritable sqlite": (_not_a_folder, "not a folder"),
    "wrong scheme": (lambda tmp: "htp://127.0.0.1:5000", "unknown scheme"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("mode", ["run", "sweep"])
def test_unusable_store_stops_before_any_job_in_one_line(case, mode, tmp_path):
    make_uri, fragment = CASES[case]
    uri = make_uri(tmp_path)
    sweep = ["-m", "model.depth=8,14", "model.residual=true,false"] if mode == "sweep" else []
    result = run_train(*sweep, *TINY, env={"MLFLOW_TRACKING_URI": uri}, cwd=tmp_path)
    _assert_one_store_line(result, uri, fragment)
    assert not list(tmp_path.rglob("*.log"))  # no job started (Hydra writes a log per job)


@pytest.mark.slow
def test_a_server_that_dies_mid_run_ends_the_run_in_one_line(tmp_path):
    from mlflow.tracking import MlflowClient
    from tracking_server import start_server

    port = _dead_port()
    uri = f"http://127.0.0.1:{port}"
    with open(tmp_path / "server.log", "w") as log:
        server = start_server(tmp_path / "server", port, log=log)
    # one HTTP retry instead of MLflow's seven (about 4 min): the path is the same
    env = {"MLFLOW_TRACKING_URI": uri, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "1"}
    process = start_long_run(tmp_path, env)
    try:
        wait_for_an_epoch(MlflowClient(uri), process)
    finally:
        server.terminate()
        server.wait(timeout=30)
    _, err = process.communicate(timeout=300)
    assert process.returncode == 1, err[-2000:]
    store_lines = [line for line in err.splitlines() if line.startswith("tracking store error")]
    assert len(store_lines) == 1 and "stopped" in store_lines[0], err[-2000:]
    assert "Traceback" not in err


@pytest.mark.slow  # two subprocess runs that train (11 s)
def test_tracking_uri_on_the_command_line_beats_the_environment(tmp_path):
    """`tracking.uri=` typed on the command line wins over `MLFLOW_TRACKING_URI`: the run
    lands in the store the user named, and the environment's (dead) server is never asked."""
    from mlflow.tracking import MlflowClient

    named = f"sqlite:///{tmp_path / 'named.db'}"
    env = {"MLFLOW_TRACKING_URI": f"http://127.0.0.1:{_dead_port()}"}
    result = run_train(*TINY, f"tracking.uri={named}", env=env, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-2000:]
    runs = MlflowClient(named).search_runs(
        [MlflowClient(named).get_experiment_by_name("resnet-exp").experiment_id]
    )
    assert [run.info.status for run in runs] == ["FINISHED"]
