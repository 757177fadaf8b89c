"""Shared fixtures: a real SQLite MLflow store per test, and tiny composed configs."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from mlflow.tracking import MlflowClient

from resnet_exp.config.schema import register_configs

ROOT = Path(__file__).resolve().parents[1]
TRAIN = ROOT / "experiments" / "train.py"
sys.path.insert(0, str(ROOT / "scripts"))  # tests start servers with scripts/tracking_server.py
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from tests

# Settings that make any run tiny: a few epochs on small synthetic data.
TINY = [
    "data=synthetic",
    "data.num_samples=96",
    "trainer.epochs=2",
    "trainer.batch_size=32",
    "gradients.probe_size=16",
    "model.depth=8",
]


@pytest.fixture(scope="session")
def empty_store(tmp_path_factory) -> Path:
    """An SQLite store whose schema MLflow has created: once, since its migrations take seconds."""
    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


def copy_store(empty_store: Path, folder: Path) -> str:
    """A fresh store in `folder`, copied from the migrated empty one; returns its URI."""
    shutil.copyfile(empty_store, folder / "mlflow.db")
    return f"sqlite:///{folder / 'mlflow.db'}"


@pytest.fixture(scope="session")
def new_store(tmp_path_factory, empty_store) -> Callable[[str], tuple[Path, str, MlflowClient]]:
    """For module-scoped fixtures: `new_store(name)` is (a new temp folder, its store's URI,
    a client of it)."""

    def make(name: str) -> tuple[Path, str, MlflowClient]:
        folder = tmp_path_factory.mktemp(name)
        uri = copy_store(empty_store, folder)
        return folder, uri, MlflowClient(uri)

    return make


@pytest.fixture
def tracking_uri(tmp_path, monkeypatch, empty_store) -> str:
    """A fresh SQLite store in a temp dir, picked up by every run through the env.

    The test runs in that dir too, so the store's default artifact root
    (./mlruns) is there and not in the checkout.
    """
    uri = copy_store(empty_store, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)
    return uri


@pytest.fixture
def client(tracking_uri) -> MlflowClient:
    return MlflowClient(tracking_uri)


@pytest.fixture
def make_cfg():
    """Compose the project's config in-process, as Hydra would for a run.

    `hydra=True` keeps the `hydra` node, as Hydra hands the config to callbacks.
    """
    register_configs()

    def _make(*overrides: str, hydra: bool = False):
        GlobalHydra.instance().clear()
        with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
            return compose("config", overrides=list(overrides), return_hydra_config=hydra)

    yield _make
    GlobalHydra.instance().clear()


def run_train(*args: str, env: dict | None = None, cwd: Path | None = None, timeout: int = 600):
    """Run the entry point as a user would, in a subprocess."""
    full_env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})}
    return subprocess.run(
        [sys.executable, str(TRAIN), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def run_make_figures(*args: str, cwd: Path | None = None, timeout: int = 600):
    """Run `scripts/make_figures.py` as a user would, in a subprocess."""
    return subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_figures.py"), *args],
        capture_output=True,
        text=True,
        cwd=cwd or ROOT,
        timeout=timeout,
    )


def runs_of(client: MlflowClient, experiment: str = "resnet-exp"):
    exp = client.get_experiment_by_name(experiment)
    return [] if exp is None else client.search_runs([exp.experiment_id])


def start_long_run(cwd: Path, env: dict | None = None) -> subprocess.Popen:
    """A tiny run of 500 epochs in the background, to be stopped while it trains."""
    return subprocess.Popen(
        [sys.executable, str(TRAIN), *TINY, "trainer.epochs=500"],
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", **(env or {})},
    )


def wait_for_an_epoch(client: MlflowClient, process: subprocess.Popen, timeout_s: float = 240):
    """The run once it has logged an epoch; kill the process and fail if it never does."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        runs = runs_of(client)
        if runs and client.get_metric_history(runs[0].info.run_id, "train_loss"):
            return runs[0]
        time.sleep(1)
    process.kill()
    pytest.fail("the run never logged an epoch")


def assert_tables_fit_mlflows_viewer(markdown: str) -> int:
    """Every table of a report within `report.MAX_COLUMNS` and `MAX_HEADER` (MLflow's viewer
    cuts longer headers), each followed by a legend line; returns how many tables."""
    from resnet_exp.analysis.report import MAX_COLUMNS, MAX_HEADER

    lines = markdown.splitlines()
    heads = [i for i, line in enumerate(lines) if line.startswith("|") and i + 1 < len(lines)
             and set(lines[i + 1].replace("|", "").replace(":", "")) == {"-"}]  # fmt: skip
    checked = 0
    for i in heads:
        headers = [h.strip() for h in lines[i].strip().strip("|").split("|")]
        if headers == ["", ""]:  # the report's header block: a key-value list, not a table
            continue
        checked += 1
        assert len(headers) <= MAX_COLUMNS, headers
        assert max(map(len, headers)) <= MAX_HEADER, headers
        after = [line for line in lines[i + 2 :] if not line.startswith("|")]
        legend = next((line for line in after if line.strip()), "")
        assert legend.startswith("_"), (headers, legend)  # `_head_: meaning; ...`
    return checked
