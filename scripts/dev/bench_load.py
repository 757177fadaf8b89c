"""Reading a study's metric histories from MLflow: each batched path against the public client.

    python scripts/dev/bench_load.py [--runs 500] [--epochs 100] [--repeats 2] [--server]
                                     [--store DIR]

Logs RUNS fake training runs of EPOCHS epochs (12 metrics each, the project's
contract, `tests/fake_study.py`) to an SQLite store: a temporary one, or
DIR/mlflow.db, kept and reused while it holds a study of that size. Then it times
the metric-history step of `load_study` (`fetch_histories`), alternating the paths
REPEATS times (A B, B A, ...):

* client: `MlflowClient.get_metric_history`, one call per metric per run, 8 at a
  time: the public path, the one every store without a kept batched path uses;
* sql:    `compat.metric_histories_sql`, one SELECT over MLflow's `metrics` table
  (what sqlite:// and other SQL URIs use).

With --server it also starts `mlflow server` on that store (its default 4
workers) and times `compat.metric_histories_server` (rest: the server's bulk
endpoints, what http:// URIs use) against the client path over HTTP.

Every batched path's frame is checked equal to the client path's. The table gives
the median seconds of each and the ratio client / batched, side by side: issue 19
keeps a non-public path in `compat` only while it is at least 3x faster on 500
runs x 100 epochs.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
from benchkit import interleaved, markdown, ratio_row, stopwatch
from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # the fake-study fixture
from fake_study import EPOCH_METRICS, GRADIENT_METRICS, log_run  # noqa: E402

from resnet_exp.analysis.load import HISTORY_WORKERS, fetch_histories  # noqa: E402

METRICS = [*EPOCH_METRICS, *GRADIENT_METRICS]
EXPERIMENT = "bench"


def log_study(uri: str, runs: int, epochs: int, artifacts: str) -> None:
    """`runs` fake training runs of `epochs` epochs in experiment "bench" of `uri`."""
    client = MlflowClient(uri)
    experiment_id = client.create_experiment(EXPERIMENT, artifact_location=artifacts)
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


def _runs(uri: str) -> list | None:
    """The runs of the "bench" study in `uri`; None if there is no such experiment."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(EXPERIMENT)
    return None if exp is None else client.search_runs([exp.experiment_id], max_results=50_000)


def _sorted(long: pd.DataFrame) -> pd.DataFrame:
    return long.sort_values(["run_id", "key", "step", "timestamp"]).reset_index(drop=True)


def time_paths(uri: str, fast: str, repeats: int) -> tuple[dict[str, list[float]], int]:
    """Seconds of each repeat of the `fast` path and of the client path; points read."""
    client = MlflowClient(uri)
    run_keys = {run.info.run_id: METRICS for run in _runs(uri)}
    frames: dict[str, pd.DataFrame] = {}

    def timed(method: str) -> float:
        with stopwatch() as elapsed:
            long, used = fetch_histories(client, uri, run_keys, method=method)
        assert used == method, f"{method} fell back to {used}"
        frames[method] = long
        return elapsed()

    times = interleaved({method: partial(timed, method) for method in (fast, "client")}, repeats)
    a, b = _sorted(frames[fast]), _sorted(frames["client"])
    pd.testing.assert_frame_equal(a[["run_id", "key", "step"]], b[["run_id", "key", "step"]])
    assert np.array_equal(a["value"].to_numpy(), b["value"].to_numpy(), equal_nan=True)
    return times, len(a)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start_server(backend: str, artifacts: str) -> tuple[subprocess.Popen, str]:
    port = _free_port()
    mlflow = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen(
        [str(mlflow), "server", "--backend-store-uri", backend]
        + ["--default-artifact-root", artifacts, "--host", "127.0.0.1", "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    uri = f"http://127.0.0.1:{port}"
    deadline = time.time() + 180
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
        except OSError:
            time.sleep(0.5)
            continue
        MlflowClient(uri).search_experiments()  # the first request pays the server's warm-up
        return proc, uri
    proc.terminate()
    raise SystemExit("mlflow server did not start within 180 s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--server", action="store_true", help="also time a tracking server")
    parser.add_argument("--store", type=Path, help="keep (and reuse) the store in this folder")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.store or Path(tmp)
        folder.mkdir(parents=True, exist_ok=True)
        uri = f"sqlite:///{folder.resolve()}/mlflow.db"
        artifacts = str(folder.resolve() / "artifacts")
        runs = _runs(uri)
        if runs is None:
            with stopwatch() as logged:
                log_study(uri, args.runs, args.epochs, artifacts)
            print(f"logged {args.runs} runs x {args.epochs} epochs in {logged():.0f} s")
        else:
            epochs = int(runs[0].data.params["trainer.epochs"]) if runs else 0
            if (len(runs), epochs) != (args.runs, args.epochs):
                raise SystemExit(f"{folder} holds {len(runs)} runs x {epochs} epochs; use another")
        rows = []
        print(f"SQLite store {uri}")
        times, points = time_paths(uri, "sql", args.repeats)
        rows.append(ratio_row("sqlite", f"{points} points", times, "client", "sql"))
        if args.server:
            proc, http = _start_server(uri, artifacts)
            try:
                print(f"mlflow server {http} on that store")
                times, points = time_paths(http, "rest", args.repeats)
                rows.append(ratio_row("server", f"{points} points", times, "client", "rest"))
            finally:
                proc.terminate()
                proc.wait(timeout=60)
    print(
        f"\n{args.runs} runs x {args.epochs} epochs x {len(METRICS)} metrics; seconds are medians "
        f"of {args.repeats}; client: {HISTORY_WORKERS} calls at a time; "
        f"ratio: client / batched"
    )
    print(markdown(rows))
    return 0


if __name__ == "__main__":
    sys.exit(main())
