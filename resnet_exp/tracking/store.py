"""Where runs go in MLflow, and the retries that make SQLite safe to share.

Kept free of TensorFlow: the sweeper and the analysis scripts use
it too. Parallel jobs sharing one SQLite file contend for its write lock, so
every write goes through `with_retry`; the store's schema and the experiment
are created once, by the sweep's parent process, before any job starts.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

from mlflow.entities import Metric, Param, RunTag
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient

T = TypeVar("T")

# Keys that say where or how fast a run goes, not what it computes: left out of
# the configuration hash so that a resumed sweep recognises its finished runs.
_NOT_HASHED = ("tracking", "trainer.threads")

MAX_PARAM_LENGTH = 6000


def project_root() -> Path:
    return Path(__file__).resolve().parents[2]


def resolve_tracking_uri(uri: str | None = None) -> str:
    """The URI given (`tracking.uri=` on the command line, `--tracking-uri`), else
    `MLFLOW_TRACKING_URI`, else `<project>/mlflow.db`: the explicit choice wins, as a user
    who types it expects, and the environment still serves every run that names none."""
    default = f"sqlite:///{project_root() / 'mlflow.db'}"
    return uri or os.environ.get("MLFLOW_TRACKING_URI") or default


def _is_transient(err: Exception) -> bool:
    text = str(err).lower()
    return any(
        marker in text
        for marker in ("database is locked", "already exists", "unique constraint", "busy")
    )


def with_retry(fn: Callable[..., T], *args: Any, attempts: int = 12, **kwargs: Any) -> T:
    """Call `fn`, retrying with jittered back-off while SQLite reports a lock."""
    for attempt in range(attempts):
        try:
            return fn(*args, **kwargs)
        except Exception as err:  # sqlalchemy and MLflow wrap the lock differently
            if attempt == attempts - 1 or not _is_transient(err):
                raise
            time.sleep(min(5.0, 0.1 * 2**attempt) * (0.5 + random.random()))
    raise AssertionError("unreachable")


def artifact_location(uri: str) -> str | None:
    """Where a new experiment of a SQLite store keeps its artifacts: `mlruns/` beside the
    database file, so that they stay with their store whichever folder a run, a sweep or a
    benchmark is launched from (MLflow's default is `./mlruns` of the launching process).
    None for other stores: a tracking server says where its artifacts go."""
    if not uri.startswith("sqlite:///"):
        return None
    database = Path(uri.removeprefix("sqlite:///").split("?", 1)[0])
    return (database.resolve().parent / "mlruns").as_uri()


def ensure_experiment(client: MlflowClient, name: str) -> str:
    """The experiment's id, creating it (and the store's schema) if needed; a SQLite store's
    new experiment keeps its artifacts beside the database (`artifact_location`)."""

    def get_or_create() -> str:
        experiment = client.get_experiment_by_name(name)
        if experiment is not None:
            if experiment.lifecycle_stage == "deleted":
                client.restore_experiment(experiment.experiment_id)
            return experiment.experiment_id
        try:
            return client.create_experiment(
                name, artifact_location=artifact_location(client.tracking_uri)
            )
        except MlflowException as err:
            if "already exists" in str(err).lower():
                return client.get_experiment_by_name(name).experiment_id
            raise

    return with_retry(get_or_create)


def log_batch(
    client: MlflowClient,
    run_id: str,
    *,
    metrics: dict[str, float] | None = None,
    step: int = 0,
    params: dict[str, Any] | None = None,
    tags: dict[str, str] | None = None,
) -> None:
    """Many values in one call (MLflow's batch endpoint, which splits what exceeds its
    per-request limits itself), retried on lock."""
    now = int(time.time() * 1000)
    with_retry(
        client.log_batch,
        run_id,
        metrics=[Metric(k, float(v), now, step) for k, v in (metrics or {}).items()],
        params=[Param(k, str(v)[:MAX_PARAM_LENGTH]) for k, v in (params or {}).items()],
        tags=[RunTag(k, str(v)) for k, v in (tags or {}).items()],
    )


def config_hash(flat_config: dict[str, Any]) -> str:
    """A stable hash of what a run computes (seed included, tracking settings not)."""
    kept = {
        k: v
        for k, v in flat_config.items()
        if not any(k == p or k.startswith(p + ".") for p in _NOT_HASHED)
    }
    text = json.dumps(kept, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
