"""Each private MLflow item in `resnet_exp.compat` still does, in the installed MLflow, what
the analysis relies on. These fail loudly when a release moves or changes one of them
(the loader itself would only fall back to the slower public client, with a note)."""

from __future__ import annotations

import inspect
import math
import socket

import numpy as np
import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow.entities import Metric

from resnet_exp import compat

FLOAT_MAX = np.finfo(float).max


def _logged(client, experiment: str) -> list[str]:
    """Two runs with NaN, +/-inf, a re-logged step and a metric only one run has."""
    experiment_id = client.create_experiment(experiment)
    run_ids = []
    for i in range(2):
        run_id = client.create_run(experiment_id).info.run_id
        metrics = [Metric("loss", 1.0 / (step + 1 + i), 1000 + step, step) for step in range(4)]
        metrics += [
            Metric("grad", math.inf, 2000, 0),
            Metric("grad", -math.inf, 2001, 1),
            Metric("grad", math.nan, 2002, 2),
            Metric("loss", 9.0, 3000, 3),  # step 3 logged again, later
        ]
        if i:
            metrics.append(Metric("only_second", 0.5, 4000, 0))
        client.log_batch(run_id, metrics=metrics)
        run_ids.append(run_id)
    return run_ids


def _through_the_client(client, run_ids: list[str]) -> pd.DataFrame:
    rows = [
        (run_id, m.key, m.step, m.value, m.timestamp)
        for run_id in run_ids
        for key in client.get_run(run_id).data.metrics
        for m in client.get_metric_history(run_id, key)
    ]
    return pd.DataFrame(rows, columns=["run_id", "key", "step", "value", "timestamp"])


def _same(a: pd.DataFrame, b: pd.DataFrame) -> None:
    order = ["run_id", "key", "step", "timestamp"]
    a = a.sort_values(order).reset_index(drop=True)
    b = b.sort_values(order).reset_index(drop=True)
    assert list(a.columns) == list(b.columns)
    pd.testing.assert_frame_equal(a[order], b[order], check_dtype=False)
    assert np.array_equal(a["value"].to_numpy(float), b["value"].to_numpy(float), equal_nan=True)


def test_mlflow_keeps_metric_points_in_the_table_metric_histories_sql_reads(new_store):
    _, uri, client = new_store("compat-table")
    _logged(client, "schema")
    engine = sa.create_engine(uri)
    try:
        inspector = sa.inspect(engine)
        assert compat.METRICS_TABLE in inspector.get_table_names(), (
            f"MLflow's SQL store has no {compat.METRICS_TABLE!r} table any more: "
            "compat.metric_histories_sql is stale"
        )
        columns = {c["name"] for c in inspector.get_columns(compat.METRICS_TABLE)}
    finally:
        engine.dispose()
    missing = set(compat.METRICS_TABLE_COLUMNS) - columns
    assert not missing, f"MLflow's metrics table lost {sorted(missing)}: compat is stale"


def test_metric_histories_sql_returns_what_the_public_client_returns(new_store):
    _, uri, client = new_store("compat-sql")
    run_ids = _logged(client, "sql")
    got = compat.metric_histories_sql(uri, run_ids)
    want = _through_the_client(client, run_ids)
    _same(got, want)
    grad = got[got["key"] == "grad"].sort_values(["run_id", "step"])
    # NaN comes back as NaN; +/-inf as MLflow's SQL stores keep it (the loader maps it back)
    assert grad["value"].tolist()[:2] == [FLOAT_MAX, -FLOAT_MAX]
    assert math.isnan(grad["value"].tolist()[2])
    assert len(got[got["key"] == "only_second"]) == 1


def test_mlflow_server_still_serves_the_endpoints_metric_histories_server_calls():
    from mlflow.server import app

    rules = {rule.rule for rule in app.url_map.iter_rules()}
    for endpoint in (compat._BULK_ENDPOINT, compat._INTERVAL_ENDPOINT):
        assert endpoint in rules, (
            f"MLflow's server has no {endpoint} any more: compat.metric_histories_server is stale"
        )


def test_the_client_still_lends_its_credentials_to_mlflows_rest_helper():
    from mlflow.tracking import MlflowClient
    from mlflow.utils.rest_utils import MlflowHostCreds, http_request, verify_rest_response

    creds = MlflowClient("http://127.0.0.1:1")._tracking_client.store.get_host_creds()
    assert isinstance(creds, MlflowHostCreds) and creds.host == "http://127.0.0.1:1"
    params = inspect.signature(http_request).parameters
    assert list(params)[:3] == ["host_creds", "endpoint", "method"]
    assert any(p.kind is p.VAR_KEYWORD for p in params.values())  # params= reaches requests
    assert list(inspect.signature(verify_rest_response).parameters)[:2] == ["response", "endpoint"]


@pytest.mark.slow
def test_metric_histories_server_returns_what_the_public_client_returns(tmp_path):
    from mlflow.tracking import MlflowClient
    from tracking_server import start_server

    port = _free_port()
    with open(tmp_path / "server.log", "w") as log:
        server = start_server(tmp_path / "server", port, log=log)
    try:
        client = MlflowClient(f"http://127.0.0.1:{port}")
        run_ids = _logged(client, "server")
        keys = ["grad", "loss", "only_second"]
        for steps in (4, 20_000):  # 100 runs a request; one run a request
            got = compat.metric_histories_server(client, run_ids, keys, steps, workers=2)
            _same(got, _through_the_client(client, run_ids))
    finally:
        server.terminate()
        server.wait(timeout=30)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]
