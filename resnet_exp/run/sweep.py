"""A sweep is one MLflow parent run with a child run per job.

`StudySweeper` is the project's Hydra sweeper (`hydra.sweeper` in conf/config.yaml). It
expands the command line and a preset's `hydra.sweeper.params` into jobs exactly as
the command-line check does (`run.command_line.job_overrides`), composes and checks
every job before any starts, then hands the launcher each job's overrides plus the
explicit ones it adds (`tracking.parent_run_id`, `tracking.sweep_id`, the run-name
keys, a thread share for parallel launchers): jobs in other processes or on other
hosts know their parent without shared state. `SweepParent` is the parent run's life:
opened (or reopened, when the same sweep is relaunched) before the first job, closed
with the children's counts after the last, KILLED if the launcher dies in between.
"""

from __future__ import annotations

import atexit
import hashlib
import json
import logging
import os
import sys
import time
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from hydra.core.plugins import Plugins
from hydra.core.utils import JobStatus
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from mlflow.exceptions import MlflowException
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from resnet_exp import contract
from resnet_exp.config.schema import INJECTED_OVERRIDES, check_config, flatten
from resnet_exp.console import say
from resnet_exp.contract import LAUNCHES, NOTE, RUN_KIND, SWEEP, SWEEP_ID, WORK_S
from resnet_exp.data.check import check_jobs_data_or_exit
from resnet_exp.run import progress, quiet
from resnet_exp.run.command_line import (
    CommandLineError,
    job_overrides,
    one_line_errors,
    without_hydra,
)
from resnet_exp.run.job import raise_on_sigterm
from resnet_exp.tracking.describe import describe_experiment, provenance_tags, sweep_description
from resnet_exp.tracking.naming import run_name, sweep_name, varying_keys
from resnet_exp.tracking.preflight import check_store, say_store_error, store_or_exit
from resnet_exp.tracking.store import (
    config_hash,
    ensure_experiment,
    log_batch,
    resolve_tracking_uri,
    with_retry,
)
from resnet_exp.tracking.ui import save_study_view

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


def summarise_children(runs: list, lost: dict[str, str] | None = None) -> dict[str, Any]:
    """Count a sweep's configurations (`runs`: its `progress.children`) by the outcome of
    their latest attempt (by start time).

    A configuration is tried again when a relaunch retrains it (an earlier FAILED or
    KILLED run, or `tracking.resume=false`): what this sweep reports is what its last
    attempt did, whatever the earlier ones did. `lost` (`lost_jobs`: config hash -> line)
    are the jobs the launcher saw end without a result: one that never opened a run counts
    as failed, one whose run was left RUNNING as killed, with the launcher's reason.
    """
    lost = lost or {}
    by_config: dict[str, list] = defaultdict(list)
    for run in runs:
        by_config[run.data.tags.get(contract.CONFIG_HASH, run.info.run_id)].append(run)
    counts = {"finished": 0, "diverged": 0, "failed": 0, "killed": 0, "running": 0}
    failed: list[str] = [line for config, line in lost.items() if config not in by_config]
    counts["failed"] = len(failed)
    for config, config_runs in by_config.items():
        latest = max(config_runs, key=lambda r: r.info.start_time or 0)
        status = latest.info.status
        key = status.lower() if status in progress.ENDED else "running"
        if key == "running" and config in lost:  # killed outright: its run could not close
            counts["killed"] += 1
            failed.append(lost[config])
            continue
        counts[key] += 1
        if key == "finished":
            counts["diverged"] += latest.data.tags.get(contract.DIVERGED) == "true"
        elif key != "running":
            reason = latest.data.tags.get(contract.ERROR, status)
            overrides = latest.data.tags.get(contract.OVERRIDES, "")
            failed.append(f"{latest.info.run_name} ({overrides}): {reason}")
    counts["configs"] = len(by_config) + len(lost.keys() - by_config.keys())
    return {"counts": counts, "failed": failed}


def lost_jobs(
    planned: list[DictConfig], overrides: list[list[str]], returns: Sequence[Any]
) -> dict[str, str]:
    """config hash -> `name (overrides): reason`, for each launched job (`planned`, its
    `overrides`, and the launcher's `returns`, in launch order) that the launcher returned
    FAILED with a reason (the SLURM launcher's lost, cancelled or never-started jobs): the
    MLflow store may hold no run of it."""
    lost = {}
    for cfg, job, ret in zip(planned, overrides, returns, strict=False):
        error = _failure(ret)
        if error is not None:
            reason = str(error) or type(error).__name__
            lost[config_hash(flatten(cfg))] = f"{run_name(cfg)} ({' '.join(job)}): {reason}"
    return lost


def _failure(ret: Any) -> Exception | None:
    """The error a FAILED Hydra job return carries: its public `return_value` re-raises it."""
    if getattr(ret, "status", None) != JobStatus.FAILED:
        return None
    try:
        _ = ret.return_value
    except Exception as error:
        return error
    return None


class SweepParent:
    """The sweep's parent run: opened before any job, closed with the children's counts."""

    def __init__(
        self, config: DictConfig, overrides: list[str], planned: Sequence[DictConfig] = ()
    ) -> None:
        """Check the store, create the experiment (once, before parallel jobs race to), and
        open or reopen the parent run of this sweep (same experiment, same overrides)."""
        self.uri = resolve_tracking_uri(config.tracking.uri)
        store_or_exit(self.uri)  # a dead store must not fail every job
        self.client = MlflowClient(self.uri)
        experiment = str(config.tracking.experiment)
        self.experiment_id = ensure_experiment(self.client, experiment)
        describe_experiment(self.client, self.experiment_id, experiment)
        self.key = sweep_key(experiment, overrides)
        name = sweep_name(experiment, planned) if planned else f"sweep-{self.key[:6]}"
        self.run_id: str | None = self._open(overrides, config, name)
        self.injected = [f"tracking.parent_run_id={self.run_id}", f"tracking.sweep_id={self.key}"]
        varying = varying_keys(overrides)
        if varying:  # run names show what the sweep varies besides depth and plain/residual
            self.injected.append(f"tracking.varying=[{','.join(varying)}]")
        threads = job_threads(config)
        if threads:
            self.injected.append(f"trainer.threads={threads}")
        self.progress: progress.SweepProgress | None = None
        where = f"in experiment '{experiment}' at {self.uri}"
        say(f"sweep {self.key}: parent run {self.run_id} {where}")

    def _open(self, overrides: list[str], config: DictConfig, name: str) -> str:
        found = with_retry(
            self.client.search_runs,
            [self.experiment_id],
            filter_string=f"tags.{SWEEP_ID} = '{self.key}' and tags.{RUN_KIND} = '{SWEEP}'",
            max_results=1,
        )
        self.launched_ms = int(time.time() * 1000)
        self.start_ms, self.work_s, self.launches = self.launched_ms, 0.0, 1
        if found:
            run = found[0]
            tags = run.data.tags
            self.start_ms = run.info.start_time or self.launched_ms
            # the work of earlier launches: their recorded sum, else the first one's duration
            earlier = (run.info.end_time or self.start_ms) - self.start_ms
            self.work_s = float(tags.get(WORK_S, earlier / 1000))
            self.launches = int(tags.get(LAUNCHES, 1)) + 1
            with_retry(self.client.update_run, run.info.run_id, status="RUNNING")
            log_batch(self.client, run.info.run_id, tags={"resumed": "true"})
            return run.info.run_id
        launcher = str(OmegaConf.select(config, "hydra.launcher._target_") or "")
        run = with_retry(
            self.client.create_run,
            self.experiment_id,
            run_name=name,
            tags={
                RUN_KIND: SWEEP,
                SWEEP_ID: self.key,
                "overrides": " ".join(overrides),
                "launcher": launcher.rsplit(".", 1)[-1],
                NOTE: sweep_description(config.tracking.experiment, overrides),
                **provenance_tags(),
            },
        )
        params = {f"sweep.{o.split('=', 1)[0]}": o.split("=", 1)[-1] for o in overrides}
        log_batch(self.client, run.info.run_id, params=params)
        return run.info.run_id

    def follow(self, planned: list[DictConfig]) -> list[int]:
        """Say what a resume skips, then print a line as each job ends; returns the indices
        of the `planned` jobs to launch (the others finished earlier)."""
        self.progress = progress.start_sweep(
            self.client, self.experiment_id, str(self.run_id), planned
        )
        return list(self.progress.to_run or [])

    def finish(self, lost: dict[str, str] | None = None) -> None:
        """Count the children by outcome, close the parent, print the summary; exit 1 if any
        configuration failed. `lost` (`lost_jobs`) are jobs the launcher saw end without a
        result: failed, and a run of theirs left RUNNING is closed KILLED."""
        assert self.run_id is not None
        problem = check_store(self.uri)
        if problem:
            say_store_error(self.uri, f"{problem}; the sweep's results cannot be read")
            self.run_id = None
            sys.exit(1)
        if self.progress is not None:
            self.progress.stop()
        runs = with_retry(progress.children, self.client, self.experiment_id, self.run_id)
        if lost and self._close_lost_runs(runs, lost):
            runs = with_retry(progress.children, self.client, self.experiment_id, self.run_id)
        table = progress.results_table(self.client, runs)
        if table:
            print(table, file=sys.stderr)
        summary = summarise_children(runs, lost)
        counts, failed = summary["counts"], summary["failed"]
        # tags, not metrics: the chart view then opens on the children's training metrics
        log_batch(self.client, self.run_id, tags={f"jobs_{k}": v for k, v in counts.items()})
        view = self._save_view()
        self._end("FAILED" if failed else "FINISHED")
        run_id, self.run_id = self.run_id, None
        say(
            f"sweep done: {counts['configs']} configurations, "
            f"{counts['finished']} finished ({counts['diverged']} diverged), "
            f"{counts['failed']} failed, {counts['killed']} killed; browse: "
            + progress.where_to_look(self.uri, self.experiment_id, run_id, view_key=view)
        )
        if failed:
            say("failed jobs:")
            for line in failed:
                print(f"  - {line}", file=sys.stderr)
            sys.exit(1)

    def _save_view(self) -> str | None:
        """The study's saved view in MLflow's UI (its runs in depth order, the finding's
        columns and charts first); None where the user may not edit the experiment."""
        try:
            return save_study_view(self.client, self.experiment_id, self.key)
        except MlflowException as err:
            log.warning("no saved view for sweep %s: %s", self.key, err)
            return None

    def _close_lost_runs(self, runs: list, lost: dict[str, str]) -> int:
        """Close KILLED the RUNNING runs of lost jobs (killed outright, without a chance to
        close; KILLED, so that a relaunch continues them from a checkpoint); returns how many."""
        closed = 0
        for run in runs:
            line = lost.get(run.data.tags.get(contract.CONFIG_HASH, ""))
            if line and run.info.status == "RUNNING":
                reason = line.rsplit("): ", 1)[-1]
                log_batch(self.client, run.info.run_id, tags={contract.ERROR: reason})
                with_retry(self.client.set_terminated, run.info.run_id, "KILLED")
                closed += 1
        return closed

    def close_if_interrupted(self) -> None:
        """KILLED, not left RUNNING, when the sweep ends before `finish` (atexit, a signal)."""
        if self.run_id is not None and not check_store(self.uri):
            self._end("KILLED")
            self.run_id = None

    def _end(self, status: str) -> None:
        """Close the parent with the duration of the work, summed over launches: a sweep
        resumed a day later would otherwise read a day long in MLflow's Duration column (its
        end time is then the start plus the work; `launches` and `work_s` say so)."""
        work_s = self.work_s + (time.time() * 1000 - self.launched_ms) / 1000
        tags = {WORK_S: f"{work_s:.1f}", LAUNCHES: str(self.launches)}
        log_batch(self.client, str(self.run_id), tags=tags)
        end_ms = self.start_ms + int(work_s * 1000) if self.launches > 1 else None
        with_retry(self.client.set_terminated, str(self.run_id), status, end_time=end_ms)


class StudySweeper(Sweeper):
    """Hydra's sweep expansion, every job checked first, one MLflow parent run per sweep."""

    def __init__(
        self,
        max_batch_size: int | None = None,
        params: dict | None = None,
        exclude: list | None = None,
    ) -> None:
        # max_batch_size: kept from Hydra's basic sweeper's schema; every job is one batch
        self.params = {str(k): str(v) for k, v in (params or {}).items()}
        # combinations of the product to leave out (`command_line.job_overrides`)
        if OmegaConf.is_config(exclude):
            exclude = OmegaConf.to_container(exclude)
        self.exclude = [dict(rule) for rule in (exclude or [])]
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher: Any = None

    def setup(
        self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig
    ) -> None:
        self.hydra_context, self.config = hydra_context, config
        self.launcher = Plugins.instance().instantiate_launcher(
            hydra_context=hydra_context, task_function=task_function, config=config
        )
        quiet.hide_injected_overrides(INJECTED_OVERRIDES)  # the user's overrides, not ours

    def sweep(self, arguments: list[str]) -> Any:
        assert self.config is not None and self.hydra_context is not None
        try:
            jobs = job_overrides(list(arguments), self.params, self.exclude)
        except CommandLineError as err:
            print(f"config error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        planned = [self._compose(job) for job in jobs]
        check_jobs_data_or_exit(planned)  # once per dataset, before the parent run opens
        sweep_dir = Path(self.config.hydra.sweep.dir)
        sweep_dir.mkdir(parents=True, exist_ok=True)
        OmegaConf.save(self.config, sweep_dir / "multirun.yaml")
        parent = SweepParent(self.config, sweep_overrides(self.config), planned)
        atexit.register(parent.close_if_interrupted)
        raise_on_sigterm(KeyboardInterrupt)  # the launcher stops; atexit closes the parent
        to_run = parent.follow(planned)  # a resume skips what finished earlier
        returns = self._launch([jobs[i] for i in to_run], parent.injected)
        # failures are counted from MLflow; jobs lost without a run, from the launcher's returns
        parent.finish(lost_jobs([planned[i] for i in to_run], [jobs[i] for i in to_run], returns))
        return [returns]

    def _launch(self, jobs: list[list[str]], injected: list[str]) -> Sequence[Any]:
        """Hand the launcher the jobs with the sweep's own overrides; nothing when none is left."""
        if not jobs:
            return []
        return self.launcher.launch([[*job, *injected] for job in jobs], initial_job_idx=0)

    def _compose(self, overrides: list[str]) -> DictConfig:
        """A job's config, checked; a problem is one line and exit 2, before any job runs."""
        try:
            with one_line_errors(overrides):
                cfg = self.hydra_context.config_loader.load_sweep_config(self.config, overrides)
                cfg = without_hydra(cfg)
                check_config(cfg)
        except CommandLineError as err:
            print(f"config error: {err}", file=sys.stderr, flush=True)
            sys.exit(2)
        return cfg
