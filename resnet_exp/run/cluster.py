"""The SLURM launcher: submits a sweep as one job array and waits for it with a bound.

`StudySlurmLauncher` is hydra-submitit-launcher's `SlurmLauncher` (it submits the same
array, and a job that times out is requeued the same way, through the launcher's
`checkpoint`) with its own wait. hydra-submitit waits for each job's result and learns
of a job's end only from `sacct`: without accounting it waits forever for a job that was
cancelled, and with accounting it raises on the first job that ended without a result,
leaving the rest of the array running with nobody to count it. Here a job is over when

- submitit has its result (the job's own Hydra `JobReturn`), or
- Slurm has let go of it (`squeue` no longer lists it, or lists it ended) and no result
  came within `lost_after_s`: it is *lost*, one line says so, and it counts as failed
  (what Slurm says of its end comes from `sacct` when accounting works), or
- it has been PENDING for `pending_after_s` for a reason that no wait can satisfy (it
  asks for more than the partition's nodes have: `PartitionConfig` and its kind): one
  line says so, the jobs are cancelled and count as failed.

Jobs pending longer than `pending_after_s` for any other reason (Resources, Priority,
...) are told in one line per reason, once. `launch` returns a `JobReturn` for every job,
in order, and never raises for a job's failure: a job that produced no result returns
FAILED with a `LostJob` holding its one-line reason, which the sweeper counts for the
configurations that never opened a run. If the launching process is interrupted
(Ctrl-C; the sweeper turns SIGTERM into KeyboardInterrupt), every job still queued or
running is cancelled, one line says so, and the interrupt goes on.

Hydra finds it as `hydra_plugins.resnet_exp_launcher.StudySlurmLauncher`
(`hydra/launcher=slurm`, conf/hydra/launcher/slurm.yaml).
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.singleton import Singleton
from hydra.core.utils import JobReturn, JobStatus, filter_overrides
from hydra_plugins.hydra_submitit_launcher.config import BaseQueueConf
from hydra_plugins.hydra_submitit_launcher.submitit_launcher import SlurmLauncher
from omegaconf import OmegaConf

from resnet_exp.console import say

log = logging.getLogger(__name__)

# Slurm's job states once a job is over (squeue lists them for MinJobAge seconds).
ENDED_STATES = {
    "BOOT_FAIL",
    "CANCELLED",
    "COMPLETED",
    "DEADLINE",
    "FAILED",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "PREEMPTED",
    "TIMEOUT",
}
# Pending reasons no wait can satisfy: the job asks for what the partition, its limits or
# the account's cannot give. Slurm keeps such jobs PENDING until someone changes them.
HOPELESS_REASONS = re.compile(
    r"^(PartitionConfig|PartitionNodeLimit|PartitionTimeLimit|BadConstraints|"
    r"DependencyNeverSatisfied|InvalidAccount|InvalidQOS|"
    r"(QOS|Assoc)Max\w*PerJob\w*)$"
)
# What the usual reasons mean, in the line that reports a long wait.
REASONS = {
    "PartitionConfig": "the job asks for more than the partition's nodes have "
    "(cpus_per_task, mem_gb, gpus_per_node) or its limits allow",
    "PartitionNodeLimit": "the job asks for more nodes than the partition allows",
    "PartitionTimeLimit": "timeout_min is above the partition's time limit",
    "BadConstraints": "no node matches the job's constraint",
    "Resources": "waiting for CPUs, memory or GPUs to free up",
    "Priority": "other jobs are ahead in the queue",
    "JobArrayTaskLimit": "array_parallelism jobs of the array already run",
    "ReqNodeNotAvail": "the nodes it needs are down, drained or reserved",
    "PartitionDown": "the partition is down",
    "QOSMaxJobsPerUserLimit": "your QOS's limit of running jobs is reached",
    "AssocGrpCpuLimit": "your account's CPU limit is reached",
}
# Reasons that are no news: the scheduler has not looked yet, or a requeued job waits.
QUIET_REASONS = {"None", "BeginTime", "Prolog"}


class LostJob(Exception):
    """The `JobReturn` value of a job that produced no result; `str()` is the reason."""


@dataclass
class _Watch:
    """What the launcher knows of one submitted job."""

    index: int
    job: Any  # submitit.SlurmJob
    overrides: list[str]
    result: JobReturn | None = None
    state: str = ""  # Slurm's state, as squeue (or sacct) last gave it
    reason: str = ""  # Slurm's pending reason
    pending_since: float | None = None
    gone_since: float | None = None  # when Slurm stopped listing it (or listed it ended)
    told: set[str] = field(default_factory=set)

    @property
    def job_id(self) -> str:
        return str(self.job.job_id)

    @property
    def label(self) -> str:
        shown = " ".join(_user_overrides(self.overrides)) or "no overrides"
        return f"job {self.job_id} (#{self.index}: {shown})"


def _user_overrides(overrides: Sequence[str]) -> list[str]:
    """A job's overrides without the ones the sweeper adds for every job."""
    from resnet_exp.config.schema import INJECTED_OVERRIDES

    return [o for o in filter_overrides(overrides) if not o.startswith(INJECTED_OVERRIDES)]


def _one_line(text: str, limit: int = 300) -> str:
    """The last informative line of an error text (a traceback's exception line)."""
    lines = [ln.strip() for ln in str(text).splitlines()]
    lines = [ln for ln in lines if ln and not set(ln) <= {"-"}]
    for line in reversed(lines):
        if re.match(r"^[\w.]+(Error|Exception|Exit|Interrupt)\b", line):
            return line[:limit]
    return (lines[-1] if lines else "no message")[:limit]


def _sbatch_error(text: str) -> str:
    """sbatch's error lines, in one: `Memory specification can not be satisfied; ...`."""
    errors = [m.strip() for m in re.findall(r"sbatch: error: (.*)", text)]
    return "; ".join(errors)[:300] if errors else _one_line(text)


def _slurm(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, check=False)


def squeue_states(array_ids: Sequence[str]) -> dict[str, tuple[str, str]] | None:
    """job id (`123_4` for an array task) -> (state, pending reason), for the jobs of
    `array_ids` that Slurm still lists (ended ones for MinJobAge seconds); None if squeue
    itself fails (the controller does not answer)."""
    try:
        done = _slurm(
            "squeue", "-h", "-r", "--states=all", "-j", ",".join(array_ids), "-o", "%i|%T|%r"
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if done.returncode != 0:
        if "Invalid job id" in done.stderr:  # all of them purged: Slurm lists none
            return {}
        return None
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 3:
            states[parts[0]] = (parts[1].split()[0].rstrip("+"), parts[2])
    return states


def sacct_states(job_ids: Sequence[str]) -> dict[str, str]:
    """job id -> Slurm's final state (`CANCELLED by 0`, `OUT_OF_MEMORY`, ...), from the
    accounting; empty when accounting is off (sacct fails) or knows nothing of them."""
    try:
        done = _slurm("sacct", "-n", "-P", "-X", "-j", ",".join(job_ids), "-o", "JobID,State")
    except (OSError, subprocess.TimeoutExpired):
        return {}
    if done.returncode != 0:
        return {}
    states = {}
    for line in done.stdout.splitlines():
        parts = line.strip().split("|")
        if len(parts) == 2:
            states[parts[0]] = parts[1]
    return states


def scancel(job_ids: Sequence[str]) -> bool:
    """Cancel Slurm jobs (array tasks `123_4`, or whole arrays `123`); True if scancel
    took them (it does not mind jobs that have ended meanwhile)."""
    if not job_ids:
        return True
    try:
        return _slurm("scancel", *job_ids).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _jobs(n: int) -> str:
    return f"{n} job" if n == 1 else f"{n} jobs"


def _id_list(watches: Sequence[_Watch]) -> str:
    """`12_0, 12_3` or, when there are many, `12_0, 12_1, 12_2 and 7 more`."""
    ids = [w.job_id for w in watches]
    return ", ".join(ids) if len(ids) <= 4 else f"{', '.join(ids[:3])} and {len(ids) - 3} more"


class StudySlurmLauncher(SlurmLauncher):
    """hydra-submitit's SlurmLauncher that bounds its wait; see the module docstring."""

    def __init__(
        self,
        lost_after_s: float = 60,
        pending_after_s: float = 60,
        poll_s: float = 5,
        **params: Any,
    ) -> None:
        super().__init__(**params)  # the submitit keys only: they become sbatch's options
        self.lost_after_s = float(lost_after_s)
        self.pending_after_s = float(pending_after_s)
        self.poll_s = float(poll_s)

    # -- submission (hydra-submitit's own, up to its wait) --------------------------------

    def _executor(self) -> Any:
        import submitit

        assert self.config is not None
        params = dict(self.params)
        executor = submitit.AutoExecutor(
            cluster=self._EXECUTOR,
            folder=params.pop("submitit_folder"),
            slurm_max_num_timeout=params.pop("max_num_timeout", 0),
        )
        base = set(OmegaConf.structured(BaseQueueConf).keys())
        executor.update_parameters(
            **{k if k in base else f"{self._EXECUTOR}_{k}": v for k, v in params.items()}
        )
        return executor

    def _submit(self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int) -> list:
        assert self.config is not None
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if "mode" in self.config.hydra.sweep:
            os.chmod(sweep_dir, mode=int(str(self.config.hydra.sweep.mode), 8))
        job_params = []
        for idx, overrides in enumerate(job_overrides, start=initial_job_idx):
            log.info(f"\t#{idx} : {' '.join(filter_overrides(overrides))}")
            state = Singleton.get_state()
            job_params.append((list(overrides), "hydra.sweep.dir", idx, f"job_id_for_{idx}", state))
        return self._executor().map_array(self, *zip(*job_params, strict=True))

    # -- the bounded wait -----------------------------------------------------------------

    def launch(
        self, job_overrides: Sequence[Sequence[str]], initial_job_idx: int
    ) -> Sequence[JobReturn]:
        from submitit.core.utils import FailedJobError, FailedSubmissionError

        assert len(job_overrides) > 0
        try:
            jobs = self._submit(job_overrides, initial_job_idx)
        except (FailedJobError, FailedSubmissionError, OSError) as err:
            reason = f"sbatch refused the array: {_sbatch_error(str(err))}"
            say(f"{_jobs(len(job_overrides))} not submitted: {reason}")
            return [_failed(list(o), reason) for o in job_overrides]
        watches = [
            _Watch(initial_job_idx + i, job, list(o))
            for i, (job, o) in enumerate(zip(jobs, job_overrides, strict=True))
        ]
        array_ids = sorted({w.job_id.split("_")[0] for w in watches})
        say(
            f"submitted {_jobs(len(watches))} to Slurm as job {', '.join(array_ids)}; "
            f"logs in {Path(str(jobs[0].paths.folder)).parent}"
        )
        try:
            self._wait(watches, array_ids)
        except KeyboardInterrupt:
            left = [w for w in watches if w.result is None]
            if left:
                cancelled = scancel(array_ids)
                did = "cancelled" if cancelled else "could not cancel (scancel failed)"
                say(f"interrupted: {did} {_jobs(len(left))} still queued or running in Slurm")
            raise
        return [w.result for w in watches if w.result is not None]

    def _wait(self, watches: list[_Watch], array_ids: list[str]) -> None:
        squeue_failing = False
        while True:
            open_ = [w for w in watches if w.result is None]
            for w in open_:  # results first: a job that has one is done, whatever Slurm says
                if w.job.paths.result_pickle.exists():
                    w.result = _job_return(w)
            open_ = [w for w in open_ if w.result is None]
            if not open_:
                return
            states = squeue_states(array_ids)
            if states is None:
                if not squeue_failing:
                    say("squeue does not answer (is slurmctld up?); still waiting for the jobs")
                squeue_failing = True
                time.sleep(self.poll_s)
                continue
            squeue_failing = False
            now = time.monotonic()
            for w in open_:
                self._update(w, states.get(w.job_id), now)
            self._end_lost([w for w in open_ if self._is_lost(w, now)])
            self._tell_pending([w for w in open_ if w.result is None], now)
            if all(w.result is not None for w in watches):
                return
            time.sleep(self.poll_s)

    def _update(self, w: _Watch, listed: tuple[str, str] | None, now: float) -> None:
        if listed is None or listed[0] in ENDED_STATES:
            w.state = listed[0] if listed else w.state
            w.gone_since = w.gone_since or now
            w.pending_since = None
            return
        w.state, w.reason = listed
        w.gone_since = None
        if w.state == "PENDING":
            w.pending_since = w.pending_since or now
        else:
            w.pending_since = None

    def _is_lost(self, w: _Watch, now: float) -> bool:
        if w.gone_since is None or now - w.gone_since < self.lost_after_s:
            return False
        return not w.job.paths.result_pickle.exists()  # a result that came late still counts

    def _end_lost(self, lost: list[_Watch]) -> None:
        if not lost:
            return
        accounted = sacct_states([w.job_id for w in lost])
        for w in lost:
            if w.job_id in accounted:
                said = f"Slurm ended it {accounted[w.job_id]}"
            elif w.state:
                said = f"Slurm ended it {w.state} (sacct: no record)"
            else:
                said = "Slurm no longer lists it (sacct: no record)"
            reason = f"lost: {said}, without a result after {self.lost_after_s:.0f} s"
            say(f"{w.label} {reason}; counted as failed; its log: {w.job.paths.stderr}")
            w.result = _failed(w.overrides, f"Slurm job {w.job_id} {reason}")

    def _tell_pending(self, open_: list[_Watch], now: float) -> None:
        by_reason: dict[str, list[_Watch]] = {}
        for w in open_:
            waited = w.pending_since is not None and now - w.pending_since >= self.pending_after_s
            if waited and w.reason not in QUIET_REASONS:
                by_reason.setdefault(w.reason, []).append(w)
        for reason, waiting in by_reason.items():
            meaning = REASONS.get(reason, "see `scontrol show job`")
            asked = self._asked()
            if HOPELESS_REASONS.match(reason):
                scancel([w.job_id for w in waiting])
                line = (
                    f"{_jobs(len(waiting))} cannot start: PENDING ({reason}: {meaning}; "
                    f"asked {asked}); cancelled, counted as failed"
                )
                say(f"{line}: {_id_list(waiting)}")
                for w in waiting:
                    w.result = _failed(w.overrides, f"Slurm job {w.job_id} cannot start: {reason}")
                continue
            fresh = [w for w in waiting if reason not in w.told]
            if fresh:
                waited_s = now - min(w.pending_since or now for w in fresh)
                took = f"{waited_s:.0f} s" if waited_s < 120 else f"{waited_s / 60:.0f} min"
                say(
                    f"{_jobs(len(fresh))} PENDING for {took}: {reason} ({meaning}): "
                    f"{_id_list(fresh)}"
                )
                for w in fresh:
                    w.told.add(reason)

    def _asked(self) -> str:
        keys = ("partition", "cpus_per_task", "mem_gb", "gpus_per_node", "timeout_min")
        return ", ".join(
            f"{k}={self.params.get(k)}" for k in keys if self.params.get(k) is not None
        )


def _failed(overrides: list[str], reason: str) -> JobReturn:
    failed = JobReturn(overrides=overrides, status=JobStatus.FAILED)
    failed.return_value = LostJob(reason)  # the public setter; reading it re-raises
    return failed


def _job_return(w: _Watch) -> JobReturn:
    """The job's own JobReturn, or FAILED with the error its submitit wrapper recorded."""
    try:
        return w.job.results()[0]
    except Exception as err:  # the job's process raised outside Hydra's run_job
        reason = f"Slurm job {w.job_id} failed: {_one_line(str(err))}"
        say(f"{w.label} failed outside the run: {_one_line(str(err))}")
        return _failed(w.overrides, reason)
