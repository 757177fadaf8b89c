"""Sweeps on a real Slurm: the `slurm` launcher (resnet_exp/run/cluster.py) on the single-node
cluster of scripts/slurm_local.sh, started once per session (as root; skipped otherwise).

    .venv/bin/pytest -m slurm tests/test_slurm.py

Each sweep is tiny (synthetic data, depth 8, a few epochs), logs to a SQLite file in the
test's folder (one node: no shared filesystem needed) and asks 1 CPU and 2 GB a job.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, TRAIN, run_train, runs_of

pytestmark = [pytest.mark.slurm, pytest.mark.slow, pytest.mark.xdist_group("slurm")]

SCRIPT = ROOT / "scripts" / "slurm_local.sh"
SMALL = ["hydra/launcher=slurm", "hydra.launcher.cpus_per_task=1", "hydra.launcher.mem_gb=2"]


@pytest.fixture(scope="session")
def slurm(tmp_path_factory):
    """A running single-node Slurm (started here, and stopped after, if it was not up)."""
    if os.name != "posix" or os.geteuid() != 0:
        pytest.skip("Slurm tests start slurmctld/slurmd/munged: they need root")
    if shutil.which("apt-get") is None and shutil.which("slurmctld") is None:
        pytest.skip("no Slurm installed and no apt-get to install it")
    state = Path(os.environ.get("SLURM_LOCAL_DIR", "/tmp/resnet-exp-slurm"))
    was_up = subprocess.run([SCRIPT, "status"], capture_output=True).returncode == 0
    started = subprocess.run([SCRIPT, "start"], capture_output=True, text=True, timeout=600)
    if started.returncode != 0:
        pytest.skip(f"could not start Slurm: {started.stderr.strip().splitlines()[-1:]}")
    previous = os.environ.get("SLURM_CONF")
    os.environ["SLURM_CONF"] = str(state / "slurm.conf")  # for sbatch/squeue in the sweeps
    yield state
    if previous is None:
        os.environ.pop("SLURM_CONF", None)
    else:
        os.environ["SLURM_CONF"] = previous
    if not was_up:
        subprocess.run([SCRIPT, "stop"], capture_output=True, timeout=120)


def _squeue(*args: str) -> list[str]:
    done = subprocess.run(["squeue", "-h", "-r", *args], capture_output=True, text=True)
    return done.stdout.split()


def _job_folders(root: Path) -> list[Path]:
    """submitit's folder of each Slurm job of the sweeps run in `root`."""
    return sorted(p for p in root.glob("multirun/*/*/.submitit/*_*") if p.is_dir())


def _sweep_parent(client):
    (parent,) = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "sweep"]
    return parent


def test_a_sweep_runs_as_slurm_jobs_and_a_relaunch_submits_nothing(slurm, client, tmp_path):
    result = run_train("-m", *TINY, "model.residual=true,false", *SMALL, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert re.search(r"submitted 2 jobs to Slurm as job \d+", result.stderr)
    parent = _sweep_parent(client)
    children = [r for r in runs_of(client) if r.data.tags.get("run_kind") != "sweep"]
    assert len(children) == 2
    for child in children:
        assert child.info.status == "FINISHED"
        assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert child.data.params["trainer.threads"] == "1"  # the CPUs the job asked for
    assert parent.data.tags["jobs_finished"] == "2"
    assert parent.data.tags["jobs_failed"] == "0"
    folders = _job_folders(tmp_path)
    assert len(folders) == 2
    for folder in folders:  # each ran as an array task under Slurm, and returned a result
        assert list(folder.glob("*_result.pkl"))
        log = next(folder.glob("*_log.out")).read_text()
        assert f"job_id={folder.name}" in log  # submitit's JobEnvironment, from SLURM_* vars

    again = run_train("-m", *TINY, "model.residual=true,false", *SMALL, cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert "nothing to run: all 2 configurations finished earlier" in again.stderr
    assert "submitted" not in again.stderr
    assert len(_job_folders(tmp_path)) == 2  # no job reached Slurm
    assert _sweep_parent(client).data.tags["jobs_finished"] == "2"


@pytest.mark.parametrize("how", ["scancel", "sigkill"])
def test_a_cancelled_job_ends_the_sweep_with_a_line_not_a_hang(slurm, client, tmp_path, how):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", *TINY, "trainer.epochs=2,400", *SMALL]
        + ["hydra.launcher.lost_after_s=10", "hydra.launcher.poll_s=2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    try:
        victim = _wait_for_one_finished_one_training(client, tmp_path, process)
        cancelled_at = time.monotonic()
        if how == "scancel":
            subprocess.run(["scancel", victim], check=True)
        else:  # killed outright (as by the OOM killer): the run cannot close itself
            os.kill(_task_pid(victim), signal.SIGKILL)
        _, stderr = process.communicate(timeout=240)
        took = time.monotonic() - cancelled_at
    finally:
        if process.poll() is None:  # the test failed: leave no job of it behind
            process.kill()
            arrays = {f.name.split("_")[0] for f in _job_folders(tmp_path)}
            subprocess.run(["scancel", *arrays], capture_output=True)
    assert process.returncode == 1, stderr[-3000:]
    assert took < 90, took  # lost_after_s=10, then the summary: not a wait for ever
    lost = [line for line in stderr.splitlines() if line.startswith(f"[resnet-exp] job {victim} ")]
    assert len(lost) == 1, stderr[-3000:]
    assert "counted as failed" in lost[0]
    assert ("CANCELLED" if how == "scancel" else "Slurm ended it") in lost[0]
    assert "sweep done: 2 configurations, 1 finished" in stderr
    assert "failed jobs:" in stderr
    array = victim.split("_")[0]
    assert not _squeue("-j", array), "a job of the sweep is still queued"
    parent = _sweep_parent(client)
    assert parent.info.status == "FAILED"
    assert parent.data.tags["jobs_finished"] == "1"
    killed = int(parent.data.tags["jobs_killed"]) + int(parent.data.tags["jobs_failed"])
    assert killed == 1
    assert all(r.info.status != "RUNNING" for r in runs_of(client))
    if how == "sigkill":  # the run could not close itself: the sweep closed it, with the reason
        (killed,) = [r for r in runs_of(client) if r.info.status == "KILLED"]
        assert f"Slurm job {victim} lost" in killed.data.tags["error"]


def _task_pid(job_id: str) -> int:
    """The PID of the Python process of a running Slurm job (its step 0, task 0)."""
    (raw,) = _squeue("-j", job_id, "-o", "%A")  # an array task's own job id
    listed = subprocess.run(["scontrol", "listpids", raw], capture_output=True, text=True)
    for line in listed.stdout.splitlines()[1:]:
        pid, _, step, local = (line.split() + ["", "", "", ""])[:4]
        if step == "0" and local == "0":
            return int(pid)
    pytest.fail(f"no task of Slurm job {job_id}: {listed.stdout} {listed.stderr}")


def _wait_for_one_finished_one_training(client, root: Path, process, timeout_s: float = 300):
    """The Slurm id of the sweep's job still training, once the other has finished and this
    one has logged an epoch."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        runs = [r for r in runs_of(client) if r.data.tags.get("run_kind") != "sweep"]
        finished = [r for r in runs if r.info.status == "FINISHED"]
        training = [
            r
            for r in runs
            if r.info.status == "RUNNING" and client.get_metric_history(r.info.run_id, "train_loss")
        ]
        running = [f.name for f in _job_folders(root) if not list(f.glob("*_result.pkl"))]
        if finished and training and len(running) == 1:
            return running[0]
        time.sleep(2)
    pytest.fail("the sweep never had one job finished and one training")


def test_jobs_that_can_never_start_are_cancelled_and_counted(slurm, client, tmp_path):
    too_many = 2 * (os.cpu_count() or 1)  # more CPUs than the node has: PENDING PartitionConfig
    started = time.monotonic()
    result = run_train(
        "-m",
        *TINY,
        "model.residual=true,false",
        *SMALL,
        f"hydra.launcher.cpus_per_task={too_many}",
        "hydra.launcher.pending_after_s=5",
        "hydra.launcher.poll_s=2",
        cwd=tmp_path,
        timeout=300,
    )
    assert result.returncode == 1, result.stderr[-3000:]
    assert time.monotonic() - started < 120
    assert "2 jobs cannot start: PENDING (PartitionConfig" in result.stderr
    assert "sweep done: 2 configurations, 0 finished (0 diverged), 2 failed" in result.stderr
    parent = _sweep_parent(client)
    assert parent.data.tags["jobs_failed"] == "2"
    assert len(runs_of(client)) == 1  # no job opened a run: the parent counted them itself
    array = re.search(r"as job (\d+)", result.stderr).group(1)
    assert not _squeue("-j", array)


def test_an_array_sbatch_refuses_is_one_line_and_counted(slurm, client, tmp_path):
    result = run_train(
        "-m", *TINY, "model.residual=true,false", *SMALL, "hydra.launcher.mem_gb=100000",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 1, result.stderr[-3000:]
    assert "2 jobs not submitted: sbatch refused the array: Memory specification" in result.stderr
    assert "sweep done: 2 configurations, 0 finished (0 diverged), 2 failed" in result.stderr
    assert _sweep_parent(client).data.tags["jobs_failed"] == "2"


def test_a_job_warned_of_its_time_limit_is_requeued_and_continues_its_run(slurm, client, tmp_path):
    """Slurm's warning before the time limit (USR2, as `signal_delay_s` asks; sent here with
    `scancel --signal=USR2` rather than by waiting out a limit): submitit requeues the job,
    the run closes KILLED with its checkpoint, and the requeued job reopens the same run and
    trains only the epochs left. Every epoch's metric is logged exactly once."""
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    epochs = 100  # of 1,024 examples: long enough to be warned in the middle
    process = subprocess.Popen(
        [sys.executable, str(TRAIN), "-m", *TINY, f"trainer.epochs={epochs}", *SMALL]
        + ["data.num_samples=1024"]
        + ["hydra.launcher.poll_s=2"],
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    job_id = ""
    try:
        job_id = _wait_for_epochs(client, tmp_path, process, at_least=3)
        subprocess.run(["scancel", "--signal=USR2", job_id], check=True)
        released = _release_when_requeued(job_id, process)
        _, stderr = process.communicate(timeout=420)
    finally:
        if process.poll() is None:
            process.kill()
            subprocess.run(["scancel", job_id], capture_output=True)
    assert released, "the job was never requeued"
    assert process.returncode == 0, stderr[-3000:]
    (run,) = [r for r in runs_of(client) if r.data.tags.get("run_kind") != "sweep"]
    assert run.info.status == "FINISHED"
    assert run.data.tags["restarts"] == "1"
    reached = int(run.data.tags["resumed_from_epoch"])
    assert 3 <= reached < epochs
    steps = [m.step for m in client.get_metric_history(run.info.run_id, "train_loss")]
    assert sorted(steps) == list(range(1, epochs + 1))  # continuous, nothing twice
    log = next(Path(tmp_path).glob(f"multirun/*/*/.submitit/{job_id}/*_log.err")).read_text()
    assert "Requeued" in log or "requeue" in log.lower(), log[-2000:]
    assert _sweep_parent(client).data.tags["jobs_finished"] == "1"


def _release_when_requeued(job_id: str, process, timeout_s: float = 120) -> bool:
    """Wait until the requeued job is PENDING again, then let it start now, as an admin can
    (`scontrol update StartTime=now`): slurmctld holds a requeued batch job before it may
    start again (the whole test took 200 s without this, 85 s with it); True once done."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and process.poll() is None:
        state = _squeue("-j", job_id, "-o", "%T:%r")
        if state and state[0].startswith("PENDING"):
            subprocess.run(
                ["scontrol", "update", f"JobId={job_id}", "StartTime=now"], capture_output=True
            )
            return True
        time.sleep(0.5)
    return False


def _wait_for_epochs(client, root: Path, process, at_least: int, timeout_s: float = 300) -> str:
    """The Slurm id of the sweep's one job, once its run has logged `at_least` epochs."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        assert process.poll() is None, process.stderr.read()[-3000:]
        runs = [r for r in runs_of(client) if r.data.tags.get("run_kind") != "sweep"]
        # one job is submitted as a plain job (folder `70`), not an array task (`70_0`)
        folders = sorted(p for p in root.glob("multirun/*/*/.submitit/*") if p.is_dir())
        if runs and folders:
            history = client.get_metric_history(runs[0].info.run_id, "train_loss")
            if len(history) >= at_least:
                return folders[0].name
        time.sleep(1)
    pytest.fail(f"the job never logged {at_least} epochs")
