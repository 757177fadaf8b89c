"""Tell the user what is happening: epoch lines, a run's result, a sweep's progress.

Everything here reads what the MLflow store holds, so the line a user sees is
the number the figures will use. A sweep's jobs may run in other processes
(joblib) or on other hosts (SLURM), so the sweep's progress is told by the
launching process: a thread polls the store for children that have ended
since the launch and prints one line per job, with a count, an estimate of
the time left, and a table at the end. Kept free of TensorFlow.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from mlflow.tracking import MlflowClient

from resnet_exp import contract
from resnet_exp.config.schema import flatten
from resnet_exp.console import number, percent, say
from resnet_exp.tracking.naming import run_name
from resnet_exp.tracking.store import config_hash, project_root, with_retry
from resnet_exp.tracking.ui import experiment_url, run_url, view_url

ENDED = ("FINISHED", "FAILED", "KILLED")
UI_PORT = 5000


def _duration(seconds: float) -> str:
    seconds = max(0, round(seconds))
    if seconds < 90:
        return f"{seconds} s"
    if seconds < 5400:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


@dataclass
class RunResult:
    name: str
    run_id: str
    status: str
    train_error: float | None
    val_error: float | None
    test_error: float | None
    ratio_init: float | None
    ratio_end: float | None
    diverged: bool
    error: str | None = None

    def line(self) -> str:
        if self.status != "FINISHED":
            reason = f": {self.error}" if self.error else ""
            return f"{self.name} (run {self.run_id[:8]}) {self.status}{reason}"[:300]
        errors = f"train error {percent(self.train_error)}, val {percent(self.val_error)}"
        if self.test_error is not None:
            errors += f", test {percent(self.test_error)}"
        ratio = (
            f"first/last gradient {number(self.ratio_init)} at init, "
            f"{number(self.ratio_end)} at end"
        )
        diverged = " (diverged)" if self.diverged else ""
        return f"{self.name} (run {self.run_id[:8]}){diverged}: {errors}; {ratio}"


def read_result(client: MlflowClient, run) -> RunResult:
    """A run's final numbers, as the store holds them."""
    metrics = run.data.metrics

    def error(key: str) -> float | None:
        return 1 - metrics[key] if key in metrics else None

    history = with_retry(client.get_metric_history, run.info.run_id, contract.GRAD_RATIO)
    by_step = {m.step: m.value for m in history}
    return RunResult(
        name=run.info.run_name or run.info.run_id,
        run_id=run.info.run_id,
        status=run.info.status,
        train_error=error(contract.TRAIN_ACCURACY),
        val_error=error(contract.VAL_ACCURACY),
        test_error=error(contract.TEST_ACCURACY),
        ratio_init=by_step.get(0),
        ratio_end=by_step[max(by_step)] if by_step else None,
        diverged=run.data.tags.get(contract.DIVERGED) == "true",
        error=run.data.tags.get(contract.ERROR),
    )


def where_to_look(
    uri: str, experiment_id: str, run_id: str | None = None, view_key: str | None = None
) -> str:
    """The MLflow UI address of a study's saved view (`view_key`), else of a run (or the
    experiment), and how to start the UI if needed."""
    server = uri.startswith(("http://", "https://"))
    base = uri if server else f"http://127.0.0.1:{UI_PORT}"
    if view_key:
        url = view_url(base, experiment_id, view_key)
    elif run_id:
        url = run_url(base, experiment_id, run_id)
    else:
        url = experiment_url(base, experiment_id)
    if server:
        return url
    if uri == f"sqlite:///{project_root() / 'mlflow.db'}":
        return f"`make ui`, then {url}"
    return f"`mlflow ui --backend-store-uri {uri} --port {UI_PORT}`, then {url}"


def report_run(client: MlflowClient, uri: str, run_id: str) -> None:
    """The two lines a single run ends with."""
    run = with_retry(client.get_run, run_id)
    say(read_result(client, run).line())
    say(f"browse: {where_to_look(uri, run.info.experiment_id, run_id)}")


def skip_line(name: str, run_id: str) -> str:
    return (
        f"skipped {name}: finished earlier in run {run_id} "
        "(same configuration; tracking.resume=false trains it again)"
    )


def children(
    client: MlflowClient, experiment_id: str, parent_id: str, since_ms: int | None = None
) -> list:
    """The runs whose parent is `parent_id` (only those started since `since_ms`, if given)."""
    query = f"tags.{contract.PARENT} = '{parent_id}'"
    if since_ms is not None:
        query += f" and attributes.start_time >= {since_ms}"
    return client.search_runs([experiment_id], filter_string=query, max_results=50000)


def finished_configs(client: MlflowClient, experiment_id: str) -> dict[str, str]:
    """config_hash -> run id of a FINISHED training run, for the whole experiment."""
    query = f"attributes.status = 'FINISHED' and tags.{contract.RUN_KIND} = '{contract.TRAIN}'"
    runs = with_retry(client.search_runs, [experiment_id], filter_string=query, max_results=50000)
    tags = [(r.data.tags.get(contract.CONFIG_HASH), r.info.run_id) for r in runs]
    return {config: run_id for config, run_id in tags if config}


def finished_earlier(
    client: MlflowClient, experiment_id: str, planned_jobs: list[Any]
) -> list[str | None]:
    """For each of `planned_jobs` (composed configs), the id of a FINISHED run of the same
    configuration that a resume skips it for, or None: it runs (as `run.job` decides)."""
    done = finished_configs(client, experiment_id)
    return [
        done.get(config_hash(flatten(cfg))) if cfg.tracking.resume else None for cfg in planned_jobs
    ]


def start_sweep(
    client: MlflowClient, experiment_id: str, parent_id: str, planned_jobs: list[Any]
) -> SweepProgress:
    """Say what a resume skips among `planned_jobs` (composed configs), then follow the
    sweep's jobs as they end; the progress's `to_run` are the indices of the jobs to launch."""
    earlier = finished_earlier(client, experiment_id, planned_jobs)
    skipped = [
        skip_line(run_name(cfg), run_id)
        for cfg, run_id in zip(planned_jobs, earlier, strict=True)
        if run_id
    ]
    for line in skipped[:10]:
        say(line)
    if len(skipped) > 10:
        say(f"... and {len(skipped) - 10} more configurations finished earlier: skipped")
    to_run = [i for i, run_id in enumerate(earlier) if not run_id]
    if to_run:
        say(f"{len(to_run)} of {len(planned_jobs)} jobs to run; a line as each one ends")
    else:
        say(
            f"nothing to run: all {len(planned_jobs)} configurations finished earlier, "
            "no job is launched (tracking.resume=false trains them again)"
        )
    progress = SweepProgress(client, experiment_id, parent_id, len(to_run), to_run=to_run)
    progress.start()
    return progress


class SweepProgress:
    """Poll the store for the sweep's children and print a line as each one ends."""

    def __init__(
        self,
        client: MlflowClient,
        experiment_id: str,
        parent_id: str,
        total: int | None,
        interval_s: float = 5.0,
        to_run: list[int] | None = None,
    ) -> None:
        self.client, self.experiment_id, self.parent_id = client, experiment_id, parent_id
        self.total, self.interval_s = total, interval_s
        self.to_run = to_run  # the planned jobs to launch (indices), when a sweep said so
        self.started = time.time()
        self.reported: set[str] = set()
        # run id -> the end time last told: a run stopped for a requeue (KILLED, "checkpoint
        # kept") and reopened by its requeued job ends again, and is told again, counted once
        self._told_end: dict[str, int | None] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="sweep-progress", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.poll()

    def poll(self) -> None:
        with self._lock:
            try:
                since_ms = int(self.started * 1000)
                runs = children(self.client, self.experiment_id, self.parent_id, since_ms)
                for run in sorted(runs, key=lambda r: r.info.end_time or 0):  # in order of ending
                    run_id, ended = run.info.run_id, run.info.end_time
                    if run.info.status in ENDED and self._told_end.get(run_id, -1) != ended:
                        self.reported.add(run_id)
                        self._told_end[run_id] = ended
                        line = read_result(self.client, run).line()
                        say(f"{self._count()} {line}{self._eta()}")
            except Exception:  # a busy or vanished store: try again next time, never crash
                return

    def _count(self) -> str:
        total = f"/{self.total}" if self.total else ""
        return f"[{len(self.reported)}{total}]"

    def _eta(self) -> str:
        done = len(self.reported)
        if not self.total or done < 2 or done >= self.total:
            return ""
        left = (time.time() - self.started) / done * (self.total - done)
        return f" | about {_duration(left)} left"

    def stop(self) -> None:
        """Stop polling, and report what ended since the last poll."""
        self._stop.set()
        self._thread.join(timeout=self.interval_s + 30)
        self.poll()


def _table_order(run) -> tuple[int, str]:
    """By depth (the `depth` tag; `d8` before `d14`), then by name."""
    depth = run.data.tags.get(contract.DEPTH, "")
    return (int(depth) if depth.isdigit() else 1 << 30, run.info.run_name or "")


def results_table(client: MlflowClient, runs: list) -> str:
    """A row per child of the sweep (`children`: this launch's and earlier ones')."""
    import pandas as pd

    rows = []
    for run in sorted(runs, key=_table_order):
        r = read_result(client, run)
        row = {
            "run": r.name,
            "status": "DIVERGED" if r.diverged else r.status,
            "train err": percent(r.train_error),
            "val err": percent(r.val_error),
        }
        if r.test_error is not None:
            row["test err"] = percent(r.test_error)
        row["first/last init"] = number(r.ratio_init)
        row["first/last end"] = number(r.ratio_end)
        rows.append(row)
    if not rows:
        return ""
    return pd.DataFrame(rows).fillna("-").to_string(index=False)
