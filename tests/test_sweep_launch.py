"""What the sweeper launches and counts: configurations that finished earlier are not launched
at all, and jobs a launcher lost (no run in MLflow) are counted from its returns. The Slurm
side of both is in test_slurm.py."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
from conftest import TINY, run_train, runs_of
from hydra.core.utils import JobReturn, JobStatus

from resnet_exp.config.schema import flatten
from resnet_exp.run.cluster import LostJob, _one_line, _sbatch_error
from resnet_exp.run.sweep import lost_jobs, summarise_children
from resnet_exp.tracking.store import config_hash


def _run(config: str, status: str, start: int = 1, **tags: str):
    return SimpleNamespace(
        info=SimpleNamespace(run_id=f"{config}-{start}", run_name=config, status=status,
                             start_time=start),
        data=SimpleNamespace(tags={"config_hash": config, **tags}),
    )  # fmt: skip


def test_lost_jobs_without_a_run_or_left_running_count_as_failed():
    runs = [
        _run("a", "FINISHED", diverged="false"),
        _run("b", "KILLED", error="killed by signal"),  # lost after its run closed: killed
        _run("c", "RUNNING"),  # lost while its run was open (SIGKILL): killed
    ]
    lost = {
        "b": "b (x=1): Slurm job 7_1 lost",
        "c": "c (x=2): Slurm job 7_2 lost",
        "d": "d (x=3): Slurm job 7_3 cannot start: PartitionConfig",  # never opened a run
    }
    summary = summarise_children(runs, lost)
    assert summary["counts"] == {
        "finished": 1,
        "diverged": 0,
        "failed": 1,
        "killed": 2,
        "running": 0,
        "configs": 4,
    }
    failed = "\n".join(summary["failed"])
    assert "PartitionConfig" in failed and "7_2 lost" in failed and "killed by signal" in failed
    assert summarise_children(runs)["counts"]["running"] == 1  # without the launcher's word


def test_lost_jobs_takes_the_launchers_reasons_by_configuration(make_cfg):
    planned = [make_cfg(*TINY, "seed=0"), make_cfg(*TINY, "seed=1")]
    returns = [
        JobReturn(overrides=["seed=0"], status=JobStatus.COMPLETED),
        JobReturn(overrides=["seed=1"], status=JobStatus.FAILED),
    ]
    returns[1].return_value = LostJob("gone")
    lost = lost_jobs(planned, [["seed=0"], ["seed=1"]], returns)
    assert list(lost) == [config_hash(flatten(planned[1]))]
    assert lost[config_hash(flatten(planned[1]))].endswith("(seed=1): gone")


def test_one_line_is_the_exception_line_of_a_trace():
    trace = "Traceback (most recent call last):\n  File x\nValueError: bad\n----\nsee logs"
    assert _one_line(trace) == "ValueError: bad"
    sbatch = "sbatch: error: Memory specification can not be satisfied\nsbatch: error: Failed: x"
    assert _sbatch_error(sbatch) == "Memory specification can not be satisfied; Failed: x"


@pytest.mark.slow
def test_configurations_finished_earlier_are_not_launched(tracking_uri, client, tmp_path):
    first = run_train("-m", *TINY, "seed=0", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]

    again = run_train("-m", *TINY, "seed=0", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to run: all 1 configurations finished earlier" in again.stderr
    assert "sweep done: 1 configurations, 1 finished" in again.stderr
    assert len(runs_of(client)) == 2  # a parent and its one child: nothing trained again

    more = run_train("-m", *TINY, "seed=0,1", cwd=tmp_path)  # a new sweep: one of two is done
    assert more.returncode == 0, more.stderr[-3000:]
    assert "skipped d8-residual-seed0" in more.stderr or "skipped d8" in more.stderr
    assert "1 of 2 jobs to run" in more.stderr
    job_dirs = [p for p in Path(tmp_path, "multirun").glob("*/*/*") if p.name.isdigit()]
    assert len(job_dirs) == 2  # the first sweep's job and the third's new one: no other
