"""Bookkeeping that turns measurements into logged numbers: lesion drops and block indices,
the store check on server errors, and the sweep summary's count of attempts.

Each check is against a number made obvious by construction: a net whose labels are
its own predictions (intact accuracy exactly 1, so every drop is 1 - accuracy >= 0),
block indices read off the block names, a server that answers a chosen status, and
runs whose start times say which attempt is the latest.
"""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Iterator

import keras
import numpy as np
import pytest
from specs import build

from resnet_exp.data.splits import synthetic_arrays
from resnet_exp.models.anatomy import block_specs
from resnet_exp.recording.lesions import accuracy, lesion_study, lesioned_model
from resnet_exp.run.progress import children
from resnet_exp.run.sweep import summarise_children
from resnet_exp.tracking.preflight import check_store

IMAGE = (8, 8, 1)
BASIC = {"shortcut": "B", "base_filters": 64}  # conf/model/resnet_basic.yaml

# ---------------------------------------------------------------- lesion drops


def _build(skip: frozenset[str], residual: bool):
    return build(
        "resnet_cifar", 14, input_shape=IMAGE, num_classes=5, residual=residual, seed=3,
        skip_blocks=skip,
    )  # fmt: skip


@pytest.fixture(scope="module", params=[False, True], ids=["plain", "residual"])
def self_labelled(request) -> tuple:
    """(builder, model, x, y) where y is the model's own prediction: intact accuracy is 1."""
    residual = request.param
    keras.utils.set_random_seed(3)
    model = _build(frozenset(), residual)
    x, classes = synthetic_arrays(IMAGE, 5, 160, seed=3)
    # real training (weights and BN moving statistics), so its predictions are not one class
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    model.fit(x, classes, batch_size=8, epochs=8, verbose=0)
    y = np.argmax(keras.ops.convert_to_numpy(model(x, training=False)), axis=-1)
    assert len(set(y.tolist())) > 1, "the labels must not be one class, or drops could hide"
    return (lambda skip: _build(skip, residual)), model, x, y


def test_every_drop_is_intact_minus_lesioned_accuracy_and_never_negative(self_labelled):
    build, model, x, y = self_labelled
    result = lesion_study(build, model, x, y, k_values=[1, 2], draws=2, seed=1)
    assert result.intact_accuracy == 1.0
    for row in result.single.itertuples():
        by_hand = float(np.mean(np.argmax(lesioned_model(build, model, [row.block])(x), -1) == y))
        assert row.accuracy == pytest.approx(by_hand)
        assert row.drop == pytest.approx(1.0 - by_hand)  # drop = intact - lesioned, >= 0
    for row in result.multi.itertuples():
        by_hand = accuracy(lesioned_model(build, model, row.blocks.split(";")), x, y)
        assert row.drop == pytest.approx(1.0 - by_hand)
    assert (result.single["drop"] >= 0).all() and (result.multi["drop"] >= 0).all()
    assert result.single["drop"].max() > 0, "some deletion must cost accuracy, or signs hide"


def test_lesion_metrics_summarise_the_same_shape_blocks(self_labelled):
    build, model, x, y = self_labelled
    result = lesion_study(build, model, x, y, k_values=[1], draws=1, seed=1)
    rows = result.single.to_dict("records")
    same = [r["drop"] for r in rows if not r["downsampling"]]
    down = [r["drop"] for r in rows if r["downsampling"]]
    metrics = result.metrics()
    assert metrics["lesion_intact_accuracy"] == 1.0
    assert metrics["lesion_mean_drop"] == pytest.approx(sum(same) / len(same))
    assert metrics["lesion_max_drop"] == pytest.approx(max(same))
    assert metrics["lesion_downsampling_mean_drop"] == pytest.approx(sum(down) / len(down))


@pytest.mark.parametrize(
    ("family", "depth", "kw", "per_stage"),
    [
        ("resnet_cifar", 20, {}, [3, 3, 3]),
        ("resnet_basic", 10, {"blocks_per_stage": [1, 1, 1, 1], **BASIC}, [1, 1, 1, 1]),
        ("resnet_basic", 14, {"blocks_per_stage": [2, 1, 2, 1], **BASIC}, [2, 1, 2, 1]),
    ],
)
def test_block_indices_count_blocks_in_forward_order_from_one(family, depth, kw, per_stage):
    model = build(family, depth, input_shape=IMAGE, num_classes=5, seed=0, **kw)
    specs = block_specs(model)
    assert len(specs) == sum(per_stage)
    for spec in specs:
        stage, block = map(int, re.fullmatch(r"stage(\d+)_block(\d+)", spec.name).groups())
        assert spec.stage == stage
        assert spec.index == sum(per_stage[: stage - 1]) + block  # from 1, forward order
        assert spec.downsampling == (block == 1 and stage > 1)


# ---------------------------------------------------------------- the store check


class _Answer(http.server.BaseHTTPRequestHandler):
    code = 200

    def do_GET(self) -> None:  # noqa: N802 - the name http.server calls
        body = b'{"experiments": []}' if self.code == 200 else b"error"
        self.send_response(self.code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def answering() -> Iterator:
    """`answering(code)` is the URI of a live loopback server that answers `code`."""
    servers = []

    def serve(code: int) -> str:
        handler = type("Handler", (_Answer,), {"code": code})
        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield serve
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.mark.parametrize("code", [500, 502, 503, 504])
def test_a_server_error_is_not_a_usable_store(answering, code):
    problem = check_store(answering(code))
    assert problem is not None and str(code) in problem


def test_a_working_server_passes(answering):
    assert check_store(answering(200)) is None


@pytest.mark.parametrize(
    "code, creds, said",
    [
        (401, {}, "needs credentials (HTTP 401)"),
        (401, {"MLFLOW_TRACKING_USERNAME": "u", "MLFLOW_TRACKING_PASSWORD": "p"}, "refused"),
        (403, {"MLFLOW_TRACKING_TOKEN": "t"}, "no access (HTTP 403)"),
    ],
)
def test_a_server_that_refuses_the_credentials_names_the_variables(
    answering, monkeypatch, tmp_path, code, creds, said
):
    """The check sends what MLflow's client would send; a refusal is the store's problem, said
    now with the variables to set, not a 401 traceback at the first logging call."""
    monkeypatch.setenv("HOME", str(tmp_path))  # no ~/.mlflow/credentials
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    for key, value in creds.items():
        monkeypatch.setenv(key, value)
    problem = check_store(answering(code))
    assert problem is not None and said in problem and "MLFLOW_TRACKING_PASSWORD" in problem


def test_the_credentials_file_is_read_as_mlflow_reads_it(answering, monkeypatch, tmp_path):
    monkeypatch.setenv("HOME", str(tmp_path))
    for key in ("MLFLOW_TRACKING_USERNAME", "MLFLOW_TRACKING_PASSWORD", "MLFLOW_TRACKING_TOKEN"):
        monkeypatch.delenv(key, raising=False)
    (tmp_path / ".mlflow").mkdir()
    (tmp_path / ".mlflow" / "credentials").write_text(
        "[mlflow]\nmlflow_tracking_username = u\nmlflow_tracking_password = p\n"
    )
    assert "refused the credentials given" in check_store(answering(401))


# ---------------------------------------------------------------- the sweep summary


def _attempt(client, experiment_id, parent, config, start, status, **tags) -> str:
    run = client.create_run(
        experiment_id,
        start_time=start,
        run_name=f"{config}-{start}",
        tags={"mlflow.parentRunId": parent, "config_hash": config, **tags},
    )
    client.set_terminated(run.info.run_id, status, end_time=start + 500)
    return run.info.run_name


def test_the_sweep_summary_reports_each_configuration_by_its_latest_attempt(client):
    experiment_id = client.create_experiment("summary")
    parent = client.create_run(experiment_id, tags={"run_kind": "sweep"}).info.run_id
    t = 1_700_000_000_000
    # (config, start time, status, tags), created in an order unlike their start times
    attempts = [
        ("a", t + 2000, "FINISHED", {"diverged": "false"}),
        ("a", t + 1000, "FAILED", {"error": "old crash"}),  # retried: now finished
        ("b", t + 1000, "FINISHED", {"diverged": "false"}),
        ("b", t + 3000, "FAILED", {"error": "new crash"}),  # resume=false rerun failed
        ("c", t + 3000, "KILLED", {"error": "killed by signal"}),
        ("c", t + 1000, "FAILED", {"error": "older crash"}),
        ("d", t + 1000, "FINISHED", {"diverged": "true"}),
        ("d", t + 2000, "FINISHED", {"diverged": "false"}),  # the rerun did not diverge
        ("e", t + 1000, "FINISHED", {"diverged": "true"}),
    ]
    names = {}
    for config, start, status, tags in attempts:
        names[(config, start)] = _attempt(
            client, experiment_id, parent, config, start, status, **tags
        )
    summary = summarise_children(children(client, experiment_id, parent))
    assert summary["counts"] == {
        "finished": 3,  # a, d, e
        "diverged": 1,  # e (d's latest attempt did not diverge)
        "failed": 1,  # b
        "killed": 1,  # c
        "running": 0,
        "configs": 5,
    }
    failed = "\n".join(summary["failed"])
    assert len(summary["failed"]) == 2
    assert names[("b", t + 3000)] in failed and "new crash" in failed
    assert names[("c", t + 3000)] in failed and "killed by signal" in failed
    for old in ("old crash", "older crash", names[("a", t + 1000)], names[("c", t + 1000)]):
        assert old not in failed
