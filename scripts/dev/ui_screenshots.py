"""Screenshots of a study in MLflow's UI, taken by headless Chromium: rerunnable, not by hand.

    python scripts/dev/ui_screenshots.py --experiment depth_sweep [--tracking-uri URI]
                                     [--out docs/ui] [--chromium chromium]

Starts `mlflow ui` on a free loopback port over the store (default: the
project's `mlflow.db`), then captures, in Model training mode: the latest sweep's
finding (its saved view, as charts and as the table: `make ui`'s links; the view and
the runs' summaries are added first where missing, as `scripts/ui_links.py` does), the
runs table, the sweep's parent run (its description holds the findings), the parent's
report (markdown and HTML) in the artifact viewer, and one training run's page,
charts and picture of every epoch's gradient profile. Needs Chromium
(Debian: `apt-get install chromium`). The screenshots docs/ui.md shows come from the
browser test instead (`RESNET_EXP_UPDATE_SCREENSHOTS=1 pytest tests/test_ui_browser.py`),
over a small study made for them; this script takes the same views of a real study.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

from mlflow.tracking import MlflowClient

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/: tracking_server
from tracking_server import wait_until_ready  # noqa: E402

from resnet_exp import contract
from resnet_exp.tracking.store import resolve_tracking_uri
from resnet_exp.tracking.ui import (
    MODEL_TRAINING,
    experiment_url,
    prepare_study,
    run_url,
    saved_view_keys,
    study_view_key,
    view_url,
)

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def pages(client: MlflowClient, base: str, experiment: str) -> dict[str, str]:
    """File name -> UI URL for the study's views."""
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"ui_screenshots: no experiment {experiment!r} in the store")
    eid = exp.experiment_id
    out = {}

    def latest_run(kind: str):
        order = ["attributes.start_time DESC"]
        runs = client.search_runs([eid], f"tags.run_kind = '{kind}'", order_by=order, max_results=1)
        return runs[0] if runs else None

    def latest(kind: str) -> str | None:
        run = latest_run(kind)
        return run.info.run_id if run else None

    sweep = latest_run("sweep")
    sweep_id = sweep.data.tags.get(contract.SWEEP_ID) if sweep else None
    prepare_study(client, eid, sweep_id)
    key = study_view_key(sweep_id)
    if key in saved_view_keys(client, eid):
        out["0_finding_charts"] = view_url(base, eid, key)
        out["0_finding_table"] = view_url(base, eid, key, charts=False)
    out["1_runs_table"] = experiment_url(base, eid)
    if parent := latest("sweep"):
        out["2_sweep_parent"] = run_url(base, eid, parent)
        report = f"{base}/#/experiments/{eid}/runs/{parent}/artifacts/report/report"
        out["3_report_md_in_artifacts"] = f"{report}.md?{MODEL_TRAINING}"
        out["3_report_html_in_artifacts"] = f"{report}.html?{MODEL_TRAINING}"
    if run := latest("train"):
        out["4_training_run"] = run_url(base, eid, run)
        out["5_training_run_charts"] = (
            f"{base}/#/experiments/{eid}/runs/{run}/model-metrics?{MODEL_TRAINING}"
        )
        picture = f"artifacts/{contract.PROFILE_ALL_EPOCHS_IMAGE}"
        out["6_training_run_profile_all_epochs"] = (
            f"{base}/#/experiments/{eid}/runs/{run}/{picture}?{MODEL_TRAINING}"
        )
    return out


def shoot(chromium: str, url: str, path: Path, size: str, wait_ms: int) -> None:
    with tempfile.TemporaryDirectory() as profile:
        command = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={profile}"]
        command += [f"--window-size={size}", f"--virtual-time-budget={wait_ms}"]
        command += [f"--screenshot={path}", url]
        subprocess.run(command, check=True, capture_output=True, timeout=180)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--experiment", default="depth_sweep")
    parser.add_argument("--tracking-uri", help="default: $MLFLOW_TRACKING_URI, else ./mlflow.db")
    parser.add_argument("--out", type=Path, default=Path("docs/ui"))
    parser.add_argument("--chromium", default=shutil.which("chromium") or "chromium")
    parser.add_argument("--size", default="1400,900", help="window width,height in pixels")
    parser.add_argument("--wait-ms", type=int, default=20000, help="page time before the shot")
    parser.add_argument("--only", nargs="*", help="take only the views whose names contain these")
    args = parser.parse_args()
    uri = resolve_tracking_uri(args.tracking_uri)
    port = _free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true"}
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    command += ["--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    ui = subprocess.Popen(command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_until_ready(base)
        args.out.mkdir(parents=True, exist_ok=True)
        for name, url in pages(MlflowClient(uri), base, args.experiment).items():
            if args.only and not any(word in name for word in args.only):
                continue
            path = args.out / f"{name}.png"
            shoot(args.chromium, url, path, args.size, args.wait_ms)
            print(f"{path}  <- {url.replace(base, '')}")
    finally:
        ui.terminate()
        ui.wait(timeout=30)


if __name__ == "__main__":
    main()
