"""What MLflow's UI shows of a study, read through the REST API the UI reads, on a real server.

A real tiny sweep and `make_figures` against a real `mlflow server` on 127.0.0.1:
run names, comparison tags, descriptions, dataset inputs, provenance, the
parent's bookkeeping tags, the per-epoch profile images, and the report's links
resolving to existing artifacts. Then the basic-auth server: refused without
credentials, a sweep logs with them.
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import ROOT, TINY, run_train

pytestmark = pytest.mark.slow

LINK = re.compile(r"\]\((get-artifact\?[^)\s]+)\)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@contextmanager
def _server(root: Path, auth: bool = False):
    from tracking_server import start_server

    port = _free_port()
    with open(root.parent / "server.log", "w") as log:
        server = start_server(root, port, log=log, auth=auth)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        server.wait(timeout=30)


def _api(base: str, endpoint: str, auth=None, **body) -> dict:
    url = f"{base}/api/2.0/mlflow/{endpoint}"
    if endpoint.endswith("search"):
        response = requests.post(url, json=body, auth=auth, timeout=30)
    else:
        response = requests.get(url, params=body, auth=auth, timeout=30)
    response.raise_for_status()
    return response.json()


def _tags(entity: dict) -> dict[str, str]:
    return {t["key"]: t["value"] for t in entity.get("tags", [])}


def _resolves(base: str, link: str) -> bool:
    """A UI-relative link, fetched as the browser would from the UI's root page."""
    response = requests.get(f"{base}/{link}", timeout=30)
    return response.status_code == 200 and len(response.content) > 0


def test_a_study_reads_in_the_ui(tmp_path):
    with _server(tmp_path / "server") as base:
        env = {"MLFLOW_TRACKING_URI": base}
        sweep = run_train(
            "-m", *TINY, "model.depth=8,14", "model.residual=true,false", env=env, cwd=tmp_path
        )
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        figures = subprocess.run(
            [sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--experiment",
             "resnet-exp", "--out", str(tmp_path / "report")],
            capture_output=True, text=True, cwd=tmp_path, timeout=600,
            env={**__import__("os").environ, **env},
        )  # fmt: skip
        assert figures.returncode == 0, figures.stderr[-3000:]

        experiment = _api(base, "experiments/get-by-name", experiment_name="resnet-exp")
        experiment = experiment["experiment"]
        exp_tags = _tags(experiment)
        assert exp_tags["mlflow.experimentKind"] == "custom_model_development"
        assert "Model training" in exp_tags["mlflow.note.content"]
        runs = _api(base, "runs/search", experiment_ids=[experiment["experiment_id"]])["runs"]
        by_kind: dict[str, list] = {}
        for run in runs:
            by_kind.setdefault(_tags(run["data"]).get("run_kind"), []).append(run)
        (parent,) = by_kind["sweep"]
        children = by_kind["train"]

        # names say depth and kind in full; tags group and filter
        names = {r["info"]["run_name"] for r in children}
        assert names == {"d8-plain", "d8-residual", "d14-plain", "d14-residual"}
        for run in children:
            tags = _tags(run["data"])
            name = run["info"]["run_name"]
            assert (tags["arch"], f"d{tags['depth']}") == (name.split("-")[1], name.split("-")[0])
            assert tags["model"] == "resnet_cifar"
            assert tags["mlflow.parentRunId"] == parent["info"]["run_id"]
            assert tags["mlflow.note.content"].startswith(f"`{name}`: {tags['arch']} resnet_cifar")
            assert tags["mlflow.user"] and tags["mlflow.source.type"] == "LOCAL"
            assert tags["mlflow.source.name"] == "experiments/train.py"
            params = {p["key"] for p in run["data"]["params"]}
            assert {"model.depth", "model.residual", "model.batch_norm", "data.name"} <= params
            assert "model.width" not in params and not any(
                p.startswith("tracking.") for p in params
            )
            inputs = run["inputs"]["dataset_inputs"]
            contexts = {_tags(i)["mlflow.data.context"] for i in inputs}
            assert contexts == {"training", "validation"}
            for item in inputs:
                dataset = item["dataset"]
                assert dataset["name"] == "synthetic" and dataset["digest"]
                assert "shape" in dataset["profile"] and dataset["source_type"] == "code"
            images = _api(base, "artifacts/list", run_id=run["info"]["run_id"], path="images")
            steps = {
                int(m.group(1))
                for f in images.get("files", [])
                if (m := re.search(r"grad_profile\+step\+(\d+)\+", f["path"]))
            }
            assert steps == {0, 1, 2}  # initialisation and both epochs

        # the parent: bookkeeping as tags, findings as its description
        ptags = _tags(parent["data"])
        assert ptags["jobs_finished"] == "4" and ptags["jobs_failed"] == "0"
        assert not parent["data"].get("metrics")
        note = ptags["mlflow.note.content"]
        assert note.startswith("**Findings**")
        assert "plain nets" in note.lower() and "| model | depth | net |" in note
        note_links = LINK.findall(note)
        assert len(note_links) >= 3  # report.md, summary.csv, the main figure
        for link in note_links:
            assert _resolves(base, link), link

        # the report in the artifact viewer: names its parent, every link resolves
        parent_id = parent["info"]["run_id"]
        report = requests.get(
            f"{base}/get-artifact", params={"path": "report/report.md", "run_uuid": parent_id}
        ).text
        assert f"| parent run | `{parent_id}`" in report
        links = LINK.findall(report)
        assert len(links) == 6  # summary.csv and five figures
        for link in links:
            assert parent_id in link and _resolves(base, link), link
        # the HTML version shows the figures in the viewer's frame: embedded, nothing relative
        page = requests.get(
            f"{base}/get-artifact", params={"path": "report/report.html", "run_uuid": parent_id}
        ).text
        assert page.count('src="data:image/png;base64,') == 5
        assert not re.search(r'(src|href)="(?!data:|https?:|#)', page)


def test_a_lab_server_refuses_strangers_and_logs_a_sweep_with_credentials(tmp_path, monkeypatch):
    password = "a-long-test-password-0"
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_PASSWORD", password)
    monkeypatch.setenv("MLFLOW_AUTH_ADMIN_USERNAME", "labadmin")
    with _server(tmp_path / "server", auth=True) as base:
        refused = requests.post(f"{base}/api/2.0/mlflow/experiments/search", json={}, timeout=30)
        assert refused.status_code == 401
        wrong = requests.post(
            f"{base}/api/2.0/mlflow/experiments/search", json={}, auth=("labadmin", "x" * 12)
        )
        assert wrong.status_code == 401

        for user, secret, said in [
            (None, None, "needs credentials"),
            ("labadmin", "x" * 12, "refused"),
        ]:
            env = {"MLFLOW_TRACKING_URI": base, "HOME": str(tmp_path)}  # no ~/.mlflow/credentials
            if user:
                env |= {"MLFLOW_TRACKING_USERNAME": user, "MLFLOW_TRACKING_PASSWORD": secret}
            stranger = run_train(*TINY, env=env, cwd=tmp_path)  # one line, not a 401 traceback
            assert stranger.returncode == 2, stranger.stderr[-3000:]
            lines = [line for line in stranger.stderr.splitlines() if line.strip()]
            assert len(lines) == 1 and said in lines[0] and "MLFLOW_TRACKING_PASSWORD" in lines[0]
        env = {
            "MLFLOW_TRACKING_URI": base,
            "MLFLOW_TRACKING_USERNAME": "labadmin",
            "MLFLOW_TRACKING_PASSWORD": password,
        }
        sweep = run_train("-m", *TINY, "trainer.epochs=1", "seed=0,1", env=env, cwd=tmp_path)
        assert sweep.returncode == 0, sweep.stderr[-3000:]
        auth = ("labadmin", password)
        exp = _api(base, "experiments/get-by-name", auth=auth, experiment_name="resnet-exp")
        runs = _api(
            base, "runs/search", auth=auth, experiment_ids=[exp["experiment"]["experiment_id"]]
        )["runs"]
        children = [r for r in runs if _tags(r["data"]).get("run_kind") == "train"]
        assert {r["info"]["run_name"] for r in children} == {"d8-residual-s0", "d8-residual-s1"}
        for run in children:
            assert run["info"]["status"] == "FINISHED"
            assert _tags(run["data"])["mlflow.user"] == "labadmin"  # who logged it
            files = _api(base, "artifacts/list", auth=auth, run_id=run["info"]["run_id"])
            assert "grad_profile.csv" in {f["path"] for f in files["files"]}
    assert (tmp_path / "server" / "basic_auth.ini").stat().st_mode & 0o077 == 0
