"""What a newcomer sees: a result at the end of a run, progress in a sweep, no chatter."""

from __future__ import annotations

import re
import time

import pytest
from conftest import TINY, run_train, runs_of

CHATTER = ("oneDNN", "absl::InitializeLog", "retracing", "Retrying", "cpu_feature_guard")


def test_eta_appears_after_a_few_jobs_and_counts_down():
    from resnet_exp.run.progress import SweepProgress

    progress = SweepProgress(client=None, experiment_id="0", parent_id="p", total=10)
    progress.started = time.time() - 120
    progress.reported = {"a"}
    assert progress._eta() == ""  # one job says little about the rest
    progress.reported = {"a", "b"}
    assert progress._count() == "[2/10]"
    assert "about 8 min left" in progress._eta()  # 60 s a job, 8 to go


def test_epoch_line_is_one_line_with_errors_and_ratio():
    from resnet_exp.console import epoch_line

    logs = {"loss": 1.5, "accuracy": 0.6, "val_accuracy": 0.5, "grad_first_last_ratio": 3.2}
    line = epoch_line("d8-plain", 2, 10, {**logs, "epoch_time_s": 1.25})
    assert line == (
        "d8-plain epoch 2/10: loss 1.5, train error 40.0%, val error 50.0%, "
        "first/last gradient 3.2, 1.2 s"
    )


@pytest.mark.slow
def test_a_single_run_says_what_it_did_and_where_to_look(tracking_uri, client, tmp_path):
    result = run_train(*TINY, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stderr + result.stdout
    (run,) = runs_of(client)
    epochs = [line for line in out.splitlines() if re.search(r" epoch \d+/2: ", line)]
    assert len(epochs) == 2
    lines = [line for line in out.splitlines() if run.info.run_id[:8] in line]
    assert any("train error" in line and "at init" in line for line in lines), out
    assert any(line.startswith("[resnet-exp] browse: ") for line in lines), out
    assert not [c for c in CHATTER if c in out], out


@pytest.mark.slow
def test_a_sweep_reports_each_job_and_a_resume_says_what_it_skipped(tracking_uri, client, tmp_path):
    first = run_train("-m", *TINY, "model.residual=true,false", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "2 of 2 jobs to run" in first.stderr
    for count in ("[1/2] ", "[2/2] "):
        assert count in first.stderr, first.stderr
    assert re.search(r"first/last init\s+first/last end", first.stderr)  # the final table
    assert not [c for c in CHATTER if c in first.stderr + first.stdout]

    again = run_train("-m", *TINY, "model.residual=true,false", "seed=0,1", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    skipped = [line for line in again.stderr.splitlines() if "skipped " in line]
    assert len(skipped) == 2 and all("finished earlier in run" in s for s in skipped)
    assert "2 of 4 jobs to run" in again.stderr
    assert "[2/2] " in again.stderr and "[3/" not in again.stderr


@pytest.mark.slow
def test_a_preset_without_m_runs_as_a_sweep(tmp_path, monkeypatch):
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    # the command line narrows the preset's sweep to one configuration: still a sweep
    result = run_train("experiment=depth_sweep", *TINY, "model.residual=false", cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    runs = runs_of(MlflowClient(uri), "depth_sweep")
    kinds = sorted(r.data.tags.get("run_kind") for r in runs)
    assert kinds == ["sweep", "train"]
    child = next(r for r in runs if r.data.tags["run_kind"] == "train")
    parent = next(r for r in runs if r.data.tags["run_kind"] == "sweep")
    assert child.data.tags["mlflow.parentRunId"] == parent.info.run_id


def test_the_final_sweep_table_is_ordered_by_depth_not_by_name(client):
    from resnet_exp.run.progress import children, results_table

    experiment_id = client.create_experiment("order")
    parent = client.create_run(experiment_id, run_name="sweep").info.run_id
    for depth in (56, 8, 14):
        for arch in ("residual", "plain"):
            tags = {"mlflow.parentRunId": parent, "depth": str(depth), "arch": arch}
            run = client.create_run(experiment_id, run_name=f"d{depth}-{arch}", tags=tags)
            client.log_metric(run.info.run_id, "train_accuracy", depth / 100, step=1)
    table = results_table(client, children(client, experiment_id, parent))
    names = [line.split()[0] for line in table.splitlines()[1:]]
    assert names == [
        "d8-plain", "d8-residual", "d14-plain", "d14-residual", "d56-plain", "d56-residual"
    ]  # fmt: skip
    assert table.splitlines()[1].split()[2] == "92.0%"  # d8: 1 - 0.08 training error
