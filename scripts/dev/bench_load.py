"""How long does loading a study from MLflow take? Batched paths vs the per-metric one.

    python scripts/dev/bench_load.py [--runs 200] [--epochs 50] [--server]

Logs RUNS fake training runs of EPOCHS epochs (12 metrics each, the project's
contract, one `MlflowClient.log_batch` per run) to a temporary SQLite store,
then times `load_study` and its metric-history step with each path:

* sql:    one SELECT over MLflow's metrics table (what sqlite:// URIs use);
* client: `MlflowClient.get_metric_history`, one call per metric per run.

With --server it also starts `mlflow server` on that store and times the REST
bulk endpoints (what http:// URIs use) against the per-metric path over HTTP.
"histories" is the metric-history step alone; "load_study" is the whole load
(client start-up, run search with params and tags, histories, reshaping).
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchkit import stopwatch
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the fake-study fixture
from fake_study import EPOCH_METRICS, GRADIENT_METRICS, log_run  # noqa: E402

from resnet_exp.analysis.load import fetch_histories, load_study

METRICS = [*EPOCH_METRICS, *GRADIENT_METRICS]


def log_study(uri: str, runs: int, epochs: int, artifacts: str) -> None:
    client = MlflowClient(uri)
    experiment_id = client.create_experiment("bench", artifact_location=artifacts)
    depths = (8, 14, 20, 26, 32, 44, 56, 110)
    for i in range(runs):
        log_run(
            client,
            experiment_id,
            depth=depths[i % len(depths)],
            residual=bool((i // len(depths)) % 2),
            seed=i,
            epochs=epochs,
            profile=False,
            history=False,
        )


def time_paths(uri: str, methods: list[str]) -> list[tuple[str, int, int, float, float]]:
    rows = []
    for method in methods:
        with stopwatch() as total:
            study = load_study("bench", tracking_uri=uri, method=method)
        client = MlflowClient(uri)
        run_keys = {run_id: METRICS for run_id in study.runs["run_id"]}
        with stopwatch() as histories:
            long, used = fetch_histories(client, uri, run_keys, method=method)
        assert used == method, f"{method} fell back to {used}"
        rows.append((method, len(study.runs), len(long), histories(), total()))
    return rows


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(backend: str, artifacts: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [
            str(mlflow),
            "server",
            "--backend-store-uri",
            backend,
            "--default-artifact-root",
            artifacts,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 90
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                pass
        except OSError:
            time.sleep(0.5)
            continue
        MlflowClient(uri).search_experiments()  # the first request pays the server's warm-up
        return proc, uri
    proc.terminate()
    raise SystemExit("mlflow server did not start within 90 s")


def main() -> int:
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # time MLflow, not its pings
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--server", action="store_true", help="also time a tracking server")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/mlflow.db"
        artifacts = os.path.join(tmp, "artifacts")
        with stopwatch() as logged:
            log_study(uri, args.runs, args.epochs, artifacts)
        print(
            f"logged {args.runs} runs x {args.epochs} epochs x 12 metrics to a temporary "
            f"SQLite store in {logged():.1f} s"
        )
        results = [("sqlite", *row) for row in time_paths(uri, ["sql", "client"])]
        if args.server:
            proc, http = _start_server(uri, artifacts)
            try:
                results += [("server", *row) for row in time_paths(http, ["rest", "client"])]
            finally:
                proc.terminate()
                proc.wait(timeout=30)
    print()
    print(f"{'store':8} {'path':8} {'runs':>5} {'points':>8} {'histories':>10} {'load_study':>11}")
    for store, method, runs, points, histories, total in results:
        print(f"{store:8} {method:8} {runs:5d} {points:8d} {histories:9.2f}s {total:10.2f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
