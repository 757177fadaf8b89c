"""The life of one job: check the store, skip if already done, open (or reopen) a run, train,
close the run.

Whatever happens inside, the MLflow run ends FINISHED, FAILED or KILLED, never
RUNNING, unless the store itself dies mid-run (then nothing more can be written) or
the process is killed outright (SIGKILL). In a multirun a failed job reports FAILED
and returns, so the sweep goes on; the sweeper counts failures and sets the exit
code. What the run writes goes through `tracking.run_log.RunLog`.

Stopped runs continue (`tracking.checkpoint`, on by default): the state at every
epoch's end is kept in a checkpoint (`training.checkpoint`). SIGTERM, Ctrl-C or the
pre-emption warning (SIGUSR2; `training.interrupt`) ends the run KILLED, "checkpoint
at epoch N kept". A later job of the same configuration (same config hash, same
sweep id) that finds such a run, KILLED or RUNNING with its process gone, and its
checkpoint, reopens that run (tags `resumed_from_epoch`, `restarts`) and trains the
epochs after N, logged at their own steps. A FINISHED run is still skipped; without a
checkpoint a new run starts, as before.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from mlflow.entities import Run, RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from resnet_exp.config.schema import flatten
from resnet_exp.console import say
from resnet_exp.contract import (
    CONFIG_HASH,
    DIVERGED,
    DIVERGED_EPOCH,
    GIT_COMMIT,
    NOTE,
    OVERRIDES,
    PARENT,
    RESTARTS,
    RESUMED_FROM_EPOCH,
    RUN_KIND,
    SWEEP_ID,
    TRAIN,
)
from resnet_exp.data.files import DatasetUnavailable
from resnet_exp.run import progress, quiet
from resnet_exp.tracking.describe import (
    applicable_params,
    describe_experiment,
    provenance_tags,
    run_description,
)
from resnet_exp.tracking.naming import comparison_tags, run_name
from resnet_exp.tracking.preflight import (
    StoreGone,
    check_store,
    check_store_once,
    say_store_error,
)
from resnet_exp.tracking.store import (
    config_hash,
    ensure_experiment,
    resolve_tracking_uri,
    with_retry,
)
from resnet_exp.tracking.summaries import log_run_summary
from resnet_exp.training.checkpoint import Checkpoint, checkpoint_root, writer_gone
from resnet_exp.training.interrupt import Terminated, stopping_signals

__all__ = ["JobOutcome", "Terminated", "find_finished_run", "find_resumable_run", "run_job"]

log = logging.getLogger(__name__)


@dataclass
class JobOutcome:
    status: str  # FINISHED, FAILED, KILLED or SKIPPED
    run_id: str | None
    diverged: bool = False
    error: str | None = None


def find_finished_run(client: MlflowClient, experiment_id: str, digest: str) -> str | None:
    runs = with_retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.config_hash = '{digest}' and attributes.status = 'FINISHED'",
        max_results=1,
    )
    return runs[0].info.run_id if runs else None


def find_resumable_run(
    client: MlflowClient,
    experiment_id: str,
    digest: str,
    sweep_id: str | None,
    root,
) -> tuple[Run, Checkpoint, dict] | None:
    """The newest run of this config (and sweep) that stopped with a checkpoint: KILLED, or
    RUNNING with the process that wrote its checkpoint gone (a requeued Slurm job's earlier
    self, a process killed outright). Returns it, its checkpoint and the checkpoint's state."""
    runs = with_retry(
        client.search_runs,
        [experiment_id],
        filter_string=f"tags.config_hash = '{digest}'",
        order_by=["attributes.start_time DESC"],
        max_results=50,
    )
    for run in runs:
        if run.info.status not in ("KILLED", "RUNNING"):
            continue
        if run.data.tags.get(SWEEP_ID) != (sweep_id or None):
            continue
        checkpoint = Checkpoint.of_run(root, digest, run.info.run_id)
        state = checkpoint.read_state() if checkpoint.exists() else None
        if state is None:
            continue
        if run.info.status == "RUNNING" and not writer_gone(state.get("owner", {})):
            log.warning(
                "run %s of the same config is RUNNING and may still be training: not resumed",
                run.info.run_id,
            )
            continue
        return run, checkpoint, state
    return None


def run_job(cfg: DictConfig, overrides: list[str] | None = None, raise_errors: bool = True):
    """Run one configured job end to end; see the module docstring for the guarantees.

    `cfg` has been checked (`check_config`) by whoever composed it: the entry point's
    command-line check, or the sweeper, which checks every job before any starts.
    """
    flat = flatten(cfg)
    digest = config_hash(flat)
    uri = resolve_tracking_uri(cfg.tracking.uri)
    problem = check_store_once(uri)
    if problem:  # a dead store fails in a second, not after MLflow's minutes of retries
        return _store_failed(uri, problem, None, 2, raise_errors)
    client = MlflowClient(uri)
    experiment_id = ensure_experiment(client, cfg.tracking.experiment)
    if not cfg.tracking.parent_run_id:  # in a sweep, the parent process did it once
        describe_experiment(client, experiment_id, cfg.tracking.experiment)

    if cfg.tracking.resume:
        done = find_finished_run(client, experiment_id, digest)
        if done:
            if cfg.tracking.parent_run_id:  # in a sweep the launching process has said so
                log.debug("skipping %s: FINISHED run %s has the same config", run_name(cfg), done)
            else:
                say(progress.skip_line(run_name(cfg), done))
            return JobOutcome("SKIPPED", done)
    root = checkpoint_root(cfg.tracking.checkpoint_dir, uri)
    stopped = None
    if cfg.tracking.resume and cfg.tracking.checkpoint:
        stopped = find_resumable_run(client, experiment_id, digest, cfg.tracking.sweep_id, root)

    # TensorFlow loads only once the config is valid and the job is not skipped, and
    # before the run opens: the run's duration is its training, not an import.
    quiet.import_tensorflow()
    from resnet_exp.tracking.run_log import RunLog

    tags = {
        RUN_KIND: TRAIN,
        CONFIG_HASH: digest,
        OVERRIDES: " ".join(overrides or []),
        DIVERGED: "false",
        **comparison_tags(cfg),
        **provenance_tags(),
        NOTE: run_description(cfg),
    }
    if "mlflow.source.git.commit" in tags:  # also under the name the analysis reads
        tags[GIT_COMMIT] = tags["mlflow.source.git.commit"]
    if cfg.tracking.parent_run_id:
        tags[PARENT] = cfg.tracking.parent_run_id
    if cfg.tracking.sweep_id:
        tags[SWEEP_ID] = cfg.tracking.sweep_id
    with stopping_signals():  # from here on SIGTERM and SIGUSR2 raise Terminated
        if stopped is not None:
            run, checkpoint = _reopen(client, *stopped, label=run_name(cfg))
        else:
            run = RunLog.open(client, experiment_id, run_name(cfg), tags)
            checkpoint = Checkpoint.of_run(root, digest, run.run_id)
        return _train_and_close(
            cfg,
            client,
            uri,
            run,
            checkpoint if cfg.tracking.checkpoint else None,
            resume=stopped is not None,
            flat=flat,
            raise_errors=raise_errors,
        )


def _reopen(
    client: MlflowClient, run: Run, checkpoint: Checkpoint, state: dict, label: str
) -> tuple[Any, Checkpoint]:
    """Reopen a stopped run to continue it from its checkpoint; say so in one line."""
    from resnet_exp.tracking.run_log import RunLog

    epoch = int(state["epoch"])
    restarts = int(run.data.tags.get(RESTARTS, "0") or 0) + 1
    reopened = RunLog.reopen(
        client,
        run.info.run_id,
        {RESUMED_FROM_EPOCH: str(epoch), RESTARTS: str(restarts)},
    )
    checkpoint.saved_epoch = epoch  # on disk already, should the run stop before restoring it
    say(f"{label}: continuing run {run.info.run_id} ({run.info.status}) after epoch {epoch}")
    return reopened, checkpoint


def _train_and_close(
    cfg: DictConfig,
    client: MlflowClient,
    uri: str,
    run: Any,
    checkpoint: Checkpoint | None,
    *,
    resume: bool,
    flat: dict,
    raise_errors: bool,
) -> JobOutcome:
    from resnet_exp.training import fit as training

    run_id = run.run_id
    closed = False
    try:
        if not resume:  # a reopened run has them from its first process
            run.params(applicable_params(flat))
            run.config(cfg)
        result = training.train(cfg, client, run_id, checkpoint=checkpoint, resume=resume)
        end_tags = {DIVERGED: str(result.diverged).lower()}
        if result.diverged:
            end_tags[DIVERGED_EPOCH] = str(result.diverged_epoch)
            log.warning("%s diverged at epoch %s", run_name(cfg), result.diverged_epoch)
        run.tags(end_tags)
        log_run_summary(client, run_id)  # after the diverged tag, which it reads
        run.end(RunStatus.FINISHED)
        closed = True
        if checkpoint is not None:
            checkpoint.delete()
        if not cfg.tracking.parent_run_id:  # a sweep's launching process reports its jobs
            progress.report_run(client, uri, run_id)
        return JobOutcome("FINISHED", run_id, diverged=result.diverged)
    except (KeyboardInterrupt, Terminated) as err:
        if not closed:
            run.end(RunStatus.KILLED, _killed_reason(err, checkpoint))
        if isinstance(err, Terminated) and err.then is not None:
            raise err.then from None  # submitit's own ending: requeued (SystemExit) or not
        raise
    except Exception as err:
        if closed:
            raise
        problem = check_store(uri)
        if problem:  # the store died mid-run: nothing more can be logged, say so once
            if checkpoint is not None:
                checkpoint.flush()  # kept: a relaunch on this host continues the run
            stopped = f"{run_name(cfg)} (run {run_id}) stopped"
            kept = "what it logged before is kept, its status stays RUNNING"
            return _store_failed(uri, f"{problem}; {stopped}: {kept}", run_id, 1, raise_errors)
        message = f"{type(err).__name__}: {err}"
        run.end(RunStatus.FAILED, message)
        if checkpoint is not None:  # a failed run is retried afresh, not continued
            checkpoint.delete()
        if raise_errors:
            raise
        if isinstance(err, DatasetUnavailable):  # a one-line reason; a traceback adds nothing
            log.error("job %s failed: %s", run_name(cfg), err)
        else:
            log.exception("job %s failed", run_name(cfg))
        return JobOutcome("FAILED", run_id, error=message)


def _killed_reason(err: BaseException, checkpoint: Checkpoint | None) -> str:
    """The `error` tag of a stopped run: the signal, and the checkpoint it continues from."""
    interrupted = "killed by signal SIGINT (Ctrl-C)"
    reason = err.reason() if isinstance(err, Terminated) else interrupted
    if checkpoint is None:
        return reason
    checkpoint.flush()  # the epoch being written is on disk before the run closes
    if checkpoint.saved_epoch is None:
        return f"{reason}; no checkpoint yet (stopped in the first epoch)"
    return f"{reason}; checkpoint at epoch {checkpoint.saved_epoch} kept"


def _store_failed(
    uri: str, problem: str, run_id: str | None, code: int, raise_errors: bool
) -> JobOutcome:
    """Say in one line that the store cannot be used; exit `code`, or report the job FAILED."""
    line = say_store_error(uri, problem)
    if raise_errors:
        raise StoreGone(code) from None
    return JobOutcome("FAILED", run_id, error=line)


def raise_on_sigterm(error: type[BaseException]) -> Any:
    """Make SIGTERM raise `error` wherever the process is (the job here, the sweep in
    `run.sweep`), so that what is open can close; returns the handler it replaces."""

    def handler(signum: int, frame: Any) -> None:
        raise error(f"signal {signum}")

    previous = signal.getsignal(signal.SIGTERM)
    with contextlib.suppress(ValueError):  # not the main thread: keep the handler
        signal.signal(signal.SIGTERM, handler)
    return previous
