"""What MLflow's UI shows of a study, read through the REST API the UI reads, on a real server.

A real tiny sweep and `make_figures` against a real `mlflow server` on 127.0.0.1:
run names, comparison tags, descriptions, dataset inputs, provenance, the
parent's bookkeeping tags, the per-epoch profile images, and the report's links
resolving to existing artifacts. Then the basic-auth server: refused without
credentials, a sweep logs with them.

Then the finding at a glance (issue 20): a run's one-number summaries and colour
(`tracking.summaries`), the study's saved view (`tracking.ui`, its format in
`compat`) and the experiment's first line; what Chromium shows of them is
`test_ui_browser.py`.
"""

from __future__ import annotations

import colorsys
import json
import re
import socket
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests
from conftest import ROOT, TINY, run_train
from mlflow.tracking import MlflowClient

from resnet_exp import compat, contract
from resnet_exp.tracking import ui
from resnet_exp.tracking.describe import EXPERIMENT_DESCRIPTION
from resnet_exp.tracking.summaries import log_run_summary, run_color

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


@pytest.mark.slow
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
        assert "plain nets" in note.lower() and "| depth | net | train % |" in note
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- the finding at a glance


def test_the_installed_ui_still_reads_shared_views():
    """The saved view's tag and URL key are the UI bundle's own (compat, MLflow UI)."""
    assert compat.ui_bundle_missing() == [], "MLflow's UI no longer reads saved views this way"


def _hls(color: str) -> tuple[float, float, float]:
    rgb = [int(color[i : i + 2], 16) / 255 for i in (1, 3, 5)]
    return colorsys.rgb_to_hls(*rgb)


def test_run_colours_say_the_kind_and_darken_with_depth():
    for arch, hue in [("plain", 0), ("residual", 215), ("skip@stage3_block1", 130)]:
        colors = [run_color(arch, depth) for depth in (8, 14, 20, 32, 44, 56, 110)]
        hls = [_hls(c) for c in colors]
        assert all(min(abs(h * 360 - hue), abs(h * 360 - hue - 360)) < 2 for h, _, _ in hls)
        lightness = [light for _, light, _ in hls]
        assert lightness == sorted(lightness, reverse=True) and len(set(colors)) == len(colors)
    assert _hls(run_color("residual-fixup", 20))[0] * 360 == pytest.approx(280, abs=2)
    assert run_color("plain", None).startswith("#") and len(run_color("plain", 1000)) == 7


def test_the_experiment_list_shows_a_plain_sentence():
    first = EXPERIMENT_DESCRIPTION.format(experiment="x").splitlines()[0]
    assert first.startswith("Plain vs residual by depth")  # the list shows ~26 characters
    assert not any(mark in first for mark in "*`_[#")


def _fake_run(client, eid, name, arch, depth, metrics, sweep="s1"):
    run = client.create_run(
        eid,
        run_name=name,
        tags={contract.RUN_KIND: contract.TRAIN, contract.SWEEP_ID: sweep, contract.ARCH: arch,
              contract.DEPTH: str(depth), contract.DIVERGED: "false"},
    )  # fmt: skip
    for key, by_step in metrics.items():
        for step, value in by_step.items():
            client.log_metric(run.info.run_id, key, value, step=step)
    client.set_terminated(run.info.run_id)
    return run.info.run_id


def _view_state(client, eid, key) -> tuple[dict, dict]:
    value = json.loads(client.get_experiment(eid).tags[compat.UI_VIEW_TAG_PREFIX + key])
    return value, json.loads(value["state"])


def test_a_study_view_holds_the_finding(client):
    eid = client.create_experiment("study")
    metrics = {contract.GRAD_RATIO: {0: 0.5, 1: 0.4}, contract.TRAIN_ACCURACY: {1: 0.9}}
    _fake_run(client, eid, "d8-plain", "plain", 8, metrics)
    key = ui.save_study_view(client, eid, "s1")
    assert key == "finding-s1" and ui.saved_view_keys(client, eid) == [key]
    value, state = _view_state(client, eid, key)
    assert value["name"] == "Finding, sweep-s1" and value["createdAt"] > 0
    assert state["searchFilter"] == "tags.run_kind = 'train' and tags.sweep_id = 's1'"
    assert (state["orderByKey"], state["orderByAsc"]) == ("metrics.`depth`", True)
    assert state["selectedColumns"] == state["columnOrder"] == [
        "metrics.`depth`", "tags.`arch`", "metrics.`init_grad_first_last_ratio`",
        "metrics.`final_train_error`", "metrics.`final_val_error`",
    ]  # fmt: skip
    assert state["runsHiddenMode"] == "SHOW_ALL"
    first, *others = state["compareRunSections"]
    assert first["name"] == "Finding" and others[0]["name"] == "Model metrics"
    *plots, scatter, image = state["compareRunCharts"]
    assert (scatter["type"], scatter["xaxis"]["key"], scatter["yaxis"]["key"]) == (
        "SCATTER", contract.DEPTH_METRIC, contract.INIT_GRAD_RATIO,
    )  # fmt: skip
    charts = [(c["type"], c["metricKey"], c.get("scaleType")) for c in plots]
    assert charts == [
        ("BAR", contract.INIT_GRAD_RATIO, None),
        ("BAR", contract.FINAL_TRAIN_ERROR, None),
        ("BAR", contract.FINAL_VAL_ERROR, None),
        ("LINE", contract.GRAD_RATIO, "log"),
    ]
    # the profile images, without the parameter lines MLflow prints over each by default
    assert (image["type"], image["imageKeys"], image["showRunParams"]) == (
        "IMAGE", [contract.PROFILE_IMAGE], False,
    )  # fmt: skip
    assert {c["metricSectionId"] for c in state["compareRunCharts"]} == {first["uuid"]}
    # a study with a test set gets its bar too; the whole experiment's view has no sweep
    test = {contract.TEST_ACCURACY: {1: 0.8}}
    log_run_summary(client, _fake_run(client, eid, "d8-residual", "residual", 8, test))
    assert ui.save_study_view(client, eid, None) == "finding"
    _, state = _view_state(client, eid, "finding")
    assert state["searchFilter"] == "tags.run_kind = 'train'"
    assert contract.FINAL_TEST_ERROR in [c.get("metricKey") for c in state["compareRunCharts"]]
    # the link carries the view and nothing else the UI would take instead of it
    assert ui.view_url("http://h:1/", eid, key) == (
        f"http://h:1/#/experiments/{eid}/runs?viewStateShareKey=finding-s1"
        "&compareRunsMode=CHART&workflowType=machine_learning"
    )
    assert "compareRunsMode=TABLE" in ui.view_url("http://h:1", eid, key, charts=False)


@pytest.mark.slow
def test_a_real_run_gets_its_summaries_once_and_the_links_show_its_view(tmp_path, tracking_uri):
    """A real tiny run (no sweep: the whole experiment's view), summarised by the links'
    backfill, then again by `log_run_summary`: every summary logged once, at step 0."""
    done = run_train(*TINY, "tracking.profile_images=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    client = MlflowClient(tracking_uri)
    eid = client.get_experiment_by_name("resnet-exp").experiment_id
    base = "http://127.0.0.1:5000"
    lines = ui.study_links(client, base, save_views=True)
    assert any(ui.view_url(base, eid, "finding") in line for line in lines), lines
    assert any(ui.view_url(base, eid, "finding", charts=False) in line for line in lines)
    (run,) = client.search_runs([eid])
    run_id = run.info.run_id
    again = log_run_summary(client, run_id)
    for key, value in again.items():
        assert [(m.step, m.value) for m in client.get_metric_history(run_id, key)] == [(0, value)]

    def history(key: str) -> dict[int, float]:
        return {m.step: m.value for m in client.get_metric_history(run_id, key)}

    gradients = (contract.GRAD_RATIO, contract.GRAD_FIRST, contract.GRAD_LAST)
    ratio, first, last = (history(key) for key in gradients)
    expected = {
        contract.INIT_GRAD_RATIO: ratio[0],
        contract.FINAL_GRAD_RATIO: ratio[2],
        contract.INIT_GRAD_FIRST: first[0],
        contract.FINAL_GRAD_FIRST: first[2],
        contract.INIT_GRAD_LAST: last[0],
        contract.FINAL_GRAD_LAST: last[2],
        contract.FINAL_TRAIN_ERROR: 1 - history(contract.TRAIN_ACCURACY)[2],
        contract.FINAL_VAL_ERROR: 1 - history(contract.VAL_ACCURACY)[2],
        contract.DEPTH_METRIC: 8.0,
        contract.DIVERGED_METRIC: 0.0,
    }
    assert set(again) == set(expected)  # synthetic data has no test set: no final_test_error
    for key, value in expected.items():
        assert again[key] == pytest.approx(value, rel=1e-3), key
    assert client.get_run(run_id).data.tags[contract.RUN_COLOR] == run_color("residual", 8)
