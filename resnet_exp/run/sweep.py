"""A Hydra callback that makes a multirun one MLflow parent run with children.

`on_multirun_start` runs once, in the launching process, before any job: it
creates the store's schema and the experiment (so parallel jobs never race to
create them), opens or reopens the sweep's parent run, and appends explicit
overrides (`tracking.parent_run_id`, `tracking.sweep_id`, and a thread share
for parallel launchers) to every job's config, so jobs on other processes or
hosts know their parent without shared state. `on_multirun_end` counts the
children by outcome, closes the parent, prints a summary and makes the
command exit non-zero if any configuration failed.
"""

from __future__ import annotations

import atexit
import contextlib
import hashlib
import json
import logging
import os
import signal
import sys
from collections import defaultdict
from typing import Any

from hydra.experimental.callback import Callback
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf, open_dict, read_write

from resnet_exp.config.schema import INJECTED_OVERRIDES
from resnet_exp.run import progress
from resnet_exp.tracking.describe import (
    NOTE,
    describe_experiment,
    provenance_tags,
    sweep_description,
)
from resnet_exp.tracking.naming import varying_keys
from resnet_exp.tracking.preflight import check_store, store_error_line, store_or_exit
from resnet_exp.tracking.store import ensure_experiment, log_batch, resolve_tracking_uri, with_retry

log = logging.getLogger(__name__)


def sweep_overrides(config: DictConfig) -> list[str]:
    """The study's own overrides: the preset's sweep params, then the command line."""
    params = OmegaConf.select(config, "hydra.sweeper.params") or {}
    preset = [f"{k}={v}" for k, v in params.items()]
    task = [str(o) for o in config.hydra.overrides.task]
    return [o for o in preset + task if not o.startswith(INJECTED_OVERRIDES)]


def sweep_key(experiment: str, overrides: list[str]) -> str:
    """Same experiment and same overrides: the same sweep, so a relaunch resumes it."""
    text = json.dumps([experiment, sorted(overrides)])
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def launcher_parallelism(config: DictConfig) -> int:
    """How many jobs the configured launcher runs at once on this machine."""
    launcher = OmegaConf.select(config, "hydra.launcher") or {}
    target = str(launcher.get("_target_", ""))
    cores = os.cpu_count() or 1
    if "joblib" in target.lower():
        n_jobs = int(launcher.get("n_jobs") or -1)
        return cores if n_jobs < 0 else max(1, n_jobs)
    if "LocalLauncher" in target:
        return max(1, int(launcher.get("tasks_per_node") or 1))
    return 1


def thread_share(parallel_jobs: int, cores: int | None = None) -> int:
    """Threads per job so that jobs x threads does not exceed the cores."""
    return max(1, (cores or os.cpu_count() or 1) // max(1, parallel_jobs))


def job_threads(config: DictConfig) -> int | None:
    """The thread count each job should use, or None to leave TensorFlow's default.

    Local parallel launchers share this machine's cores; a SLURM job gets the
    CPUs it asked for, which TensorFlow cannot see (it counts the whole node).
    """
    if int(config.trainer.threads) != 0:
        return None  # the user chose
    target = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
    if "SlurmLauncher" in target:
        return int(OmegaConf.select(config, "hydra.launcher.cpus_per_task") or 1)
    parallel = launcher_parallelism(config)
    return thread_share(parallel) if parallel > 1 else None


def summarise_children(client: MlflowClient, experiment_id: str, parent_id: str) -> dict[str, Any]:
    """Count configurations by the outcome of their latest attempt (by start time).

    A configuration is tried again when a relaunch retrains it (an earlier FAILED or
    KILLED run, or `tracking.resume=false`): what this sweep reports is what its last
    attempt did, whatever the earlier ones did.
    """
    runs = with_retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent_id}'",
        max_results=50000,
    )
    by_config: dict[str, list] = defaultdict(list)
    for run in runs:
        by_config[run.data.tags.get("config_hash", run.info.run_id)].append(run)
    counts = {"finished": 0, "diverged": 0, "failed": 0, "killed": 0, "running": 0}
    failed: list[str] = []
    for config_runs in by_config.values():
        latest = max(config_runs, key=lambda r: r.info.start_time or 0)
        status = latest.info.status
        key = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}.get(
            status, "running"
        )
        counts[key] += 1
        if key == "finished":
            counts["diverged"] += latest.data.tags.get("diverged") == "true"
        elif key != "running":
            reason = latest.data.tags.get("error", status)
            failed.append(
                f"{latest.info.run_name} ({latest.data.tags.get('overrides', '')}): {reason}"
            )
    counts["configs"] = len(by_config)
    return {"counts": counts, "failed": failed}


class MlflowSweepCallback(Callback):
    """Parent run per sweep; see the module docstring."""

    def __init__(self) -> None:
        self.client: MlflowClient | None = None
        self.parent_id: str | None = None
        self.experiment_id: str | None = None
        self.uri: str | None = None
        self.progress: progress.SweepProgress | None = None

    def __getstate__(self) -> dict[str, Any]:
        """Parallel launchers pickle the callbacks into each job: leave the progress thread."""
        return {**self.__dict__, "progress": None}

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        uri = resolve_tracking_uri(config.tracking.uri)
        store_or_exit(uri)  # once, before any job: a dead store must not fail every job
        self.uri = uri
        self.client = MlflowClient(uri)
        self.experiment_id = ensure_experiment(self.client, config.tracking.experiment)
        describe_experiment(self.client, self.experiment_id, config.tracking.experiment)
        overrides = sweep_overrides(config)
        key = sweep_key(config.tracking.experiment, overrides)
        self.parent_id = self._open_parent(key, overrides, config)
        injected = [f"tracking.parent_run_id={self.parent_id}", f"tracking.sweep_id={key}"]
        varying = varying_keys(overrides)
        if varying:  # run names show what the sweep varies besides depth and plain/residual
            injected.append(f"tracking.varying=[{','.join(varying)}]")
        threads = job_threads(config)
        if threads:
            injected.append(f"trainer.threads={threads}")
        with read_write(config.hydra.overrides), open_dict(config.hydra.overrides):
            config.hydra.overrides.task.extend(injected)
        atexit.register(self._close_if_interrupted)
        _raise_on_sigterm()
        print(
            f"[resnet-exp] sweep {key}: parent run {self.parent_id} in experiment "
            f"'{config.tracking.experiment}' at {uri}",
            file=sys.stderr,
        )
        self.progress = progress.start_sweep(self.client, self.experiment_id, self.parent_id)

    def _open_parent(self, key: str, overrides: list[str], config: DictConfig) -> str:
        assert self.client is not None and self.experiment_id is not None
        found = with_retry(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.sweep_id = '{key}' and tags.run_kind = 'sweep'",
            max_results=1,
        )
        if found:
            run_id = found[0].info.run_id
            with_retry(self.client.update_run, run_id, status="RUNNING")
            log_batch(self.client, run_id, tags={"resumed": "true"})
            return run_id
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        run = with_retry(
            self.client.create_run,
            self.experiment_id,
            run_name=f"sweep-{key[:6]}",  # short: the runs table shows it whole
            tags={
                "run_kind": "sweep",
                "sweep_id": key,
                "overrides": " ".join(overrides),
                "launcher": launcher.rsplit(".", 1)[-1],
                NOTE: sweep_description(config.tracking.experiment, overrides),
                **provenance_tags(),
            },
        )
        log_batch(
            self.client,
            run.info.run_id,
            params={f"sweep.{o.split('=', 1)[0]}": o.split("=", 1)[-1] for o in overrides},
        )
        return run.info.run_id

    def on_multirun_end(self, config: DictConfig, **kwargs: Any) -> None:
        assert self.client is not None and self.parent_id is not None
        problem = check_store(self.uri)
        if problem:
            print(
                store_error_line(self.uri, f"{problem}; the sweep's results cannot be read"),
                file=sys.stderr,
            )
            self.parent_id = None
            sys.exit(1)
        if self.progress is not None:
            self.progress.stop()
        table = progress.results_table(self.client, self.experiment_id, self.parent_id)
        if table:
            print(table, file=sys.stderr)
        summary = summarise_children(self.client, self.experiment_id, self.parent_id)
        counts, failed = summary["counts"], summary["failed"]
        # tags, not metrics: the chart view then opens on the children's training metrics
        log_batch(self.client, self.parent_id, tags={f"jobs_{k}": v for k, v in counts.items()})
        status = "FAILED" if failed else "FINISHED"
        with_retry(self.client.set_terminated, self.parent_id, status)
        parent_id, self.parent_id = self.parent_id, None
        print(
            f"[resnet-exp] sweep done: {counts['configs']} configurations, "
            f"{counts['finished']} finished ({counts['diverged']} diverged), "
            f"{counts['failed']} failed, {counts['killed']} killed; browse: "
            + progress.where_to_look(self.uri, self.experiment_id, parent_id),
            file=sys.stderr,
        )
        if failed:
            print("[resnet-exp] failed jobs:", file=sys.stderr)
            for line in failed:
                print(f"  - {line}", file=sys.stderr)
            sys.exit(1)

    def _close_if_interrupted(self) -> None:
        if self.client is not None and self.parent_id is not None and not check_store(self.uri):
            with_retry(
                self.client.set_terminated,
                self.parent_id,
                RunStatus.to_string(RunStatus.KILLED),
            )


def _raise_on_sigterm() -> None:
    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt(f"signal {signum}")

    with contextlib.suppress(ValueError):  # not the main thread
        signal.signal(signal.SIGTERM, handler)
