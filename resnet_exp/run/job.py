"""The life of one job: check the store, skip if already done, open a run, train, close the run.

Whatever happens inside, the MLflow run ends FINISHED, FAILED or KILLED, never
RUNNING, unless the store itself dies mid-run (then nothing more can be written).
In a multirun a failed job reports FAILED and returns, so the sweep goes on; the
sweeper counts failures and sets the exit code. What the run writes goes through
`tracking.run_log.RunLog`.
"""

from __future__ import annotations

import contextlib
import logging
import signal
from dataclasses import dataclass
from typing import Any

from mlflow.entities import RunStatus
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

log = logging.getLogger(__name__)


class Terminated(BaseException):
    """SIGTERM (cluster pre-emption), raised where the job is so the run can close."""


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

    # TensorFlow loads only once the config is valid and the job is not skipped, and
    # before the run opens: the run's duration is its training, not an import.
    quiet.import_tensorflow()
    from resnet_exp.tracking.run_log import RunLog
    from resnet_exp.training import fit as training

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
    run = RunLog.open(client, experiment_id, run_name(cfg), tags)
    run_id = run.run_id
    previous = raise_on_sigterm(Terminated)
    try:
        run.params(applicable_params(flat))
        run.config(cfg)
        result = training.train(cfg, client, run_id)
        end_tags = {DIVERGED: str(result.diverged).lower()}
        if result.diverged:
            end_tags[DIVERGED_EPOCH] = str(result.diverged_epoch)
            log.warning("%s diverged at epoch %s", run_name(cfg), result.diverged_epoch)
        run.tags(end_tags)
        run.end(RunStatus.FINISHED)
        if not cfg.tracking.parent_run_id:  # a sweep's launching process reports its jobs
            progress.report_run(client, uri, run_id)
        return JobOutcome("FINISHED", run_id, diverged=result.diverged)
    except (KeyboardInterrupt, Terminated):
        run.end(RunStatus.KILLED, "killed by signal")
        raise
    except Exception as err:
        problem = check_store(uri)
        if problem:  # the store died mid-run: nothing more can be logged, say so once
            stopped = f"{run_name(cfg)} (run {run_id}) stopped"
            kept = "what it logged before is kept, its status stays RUNNING"
            return _store_failed(uri, f"{problem}; {stopped}: {kept}", run_id, 1, raise_errors)
        message = f"{type(err).__name__}: {err}"
        run.end(RunStatus.FAILED, message)
        if raise_errors:
            raise
        if isinstance(err, DatasetUnavailable):  # a one-line reason; a traceback adds nothing
            log.error("job %s failed: %s", run_name(cfg), err)
        else:
            log.exception("job %s failed", run_name(cfg))
        return JobOutcome("FAILED", run_id, error=message)
    finally:
        with contextlib.suppress(ValueError, TypeError):
            signal.signal(signal.SIGTERM, previous or signal.SIG_DFL)


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
