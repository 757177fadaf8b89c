"""The analysis side: MLflow -> tidy frames -> figures and report.md.

A temporary SQLite MLflow store is filled with fake runs that follow the
training side's contract (`tests/fake_study.py`), so these tests need
neither TensorFlow nor a training run. The report's table is checked against
numbers recomputed here straight from MLflow's client API, not through the
analysis code.
"""

from __future__ import annotations

import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from fake_study import log_fake_study, log_run
from mlflow.tracking import MlflowClient

from resnet_exp.analysis import StudyError, load_grad_profiles, load_study, resolve_tracking_uri
from resnet_exp.analysis.command import main
from resnet_exp.analysis.figures import FIGURES

os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")  # no usage pings from tests
ROOT = Path(__file__).resolve().parents[1]
DEPTHS = (8, 14, 20)
SEEDS = (0, 1)
EPOCHS = 4


@pytest.fixture(scope="module")
def store(new_store):
    """A store with one experiment per situation; returns (uri, tmp folder, facts)."""
    tmp, uri, client = new_store("mlflow")
    art = str(tmp / "artifacts")
    facts = {}
    # The main study: a sweep over depth x plain/residual x batch norm x 2 seeds,
    # with one diverged, two failed and one still-running child.
    study = log_fake_study(
        client,
        "study",
        depths=DEPTHS,
        batch_norm=(True, False),
        seeds=SEEDS,
        epochs=EPOCHS,
        artifact_location=f"{art}/study",
    )
    facts["running"] = log_run(
        client,
        study.experiment_id,
        depth=8,
        residual=False,
        batch_norm=True,
        seed=7,
        epochs=EPOCHS,
        parent_run_id=study.parent_run_id,
        status="RUNNING",
    )
    facts["study"] = study
    # Two sweeps in one experiment, to pick one by its parent run.
    first = log_fake_study(
        client,
        "two-sweeps",
        depths=(8, 14),
        residual=(True,),
        seeds=(0,),
        epochs=2,
        diverge=False,
        fail=False,
        artifact_location=f"{art}/two",
    )
    second = log_fake_study(
        client,
        "two-sweeps",
        depths=(20, 26),
        residual=(True,),
        seeds=(0,),
        epochs=2,
        diverge=False,
        fail=False,
    )
    facts["sweeps"] = (first, second)
    client.create_experiment("empty", artifact_location=f"{art}/empty")
    only_running = client.create_experiment("in-progress", artifact_location=f"{art}/run")
    for depth in (8, 14):
        log_run(client, only_running, depth=depth, residual=True, epochs=3, status="RUNNING")
    log_fake_study(
        client,
        "no-gradients",
        depths=(8, 14),
        seeds=(0,),
        epochs=3,
        with_parent=False,
        gradients=False,
        diverge=False,
        fail=False,
        artifact_location=f"{art}/nograd",
    )
    log_fake_study(
        client,
        "flat",
        depths=(20,),
        residual=(True,),
        seeds=(0, 1),
        epochs=3,
        diverge=False,
        fail=False,
        artifact_location=f"{art}/flat",
    )
    return uri, tmp, facts


@pytest.fixture(scope="module")
def report(store):
    """make_figures on the main study, logging to MLflow; returns (out dir, exit code)."""
    uri, tmp, _ = store
    out = tmp / "report-study"
    code = main(["--experiment", "study", "--out", str(out), "--tracking-uri", uri])
    return out, code


# ---------------------------------------------------------------- loading


def test_loader_types_columns_and_one_row_per_run_and_epoch(store):
    uri, _, facts = store
    study = load_study("study", tracking_uri=uri)
    runs, epochs = study.runs, study.epochs
    assert len(runs) == len(facts["study"].run_ids) + 1  # + the running one
    assert runs["depth"].dtype == np.int64 and runs["seed"].dtype == np.int64
    assert runs["residual"].dtype == bool and runs["batch_norm"].dtype == bool
    assert runs["lr"].dtype == np.float64 and set(runs["model"]) == {"resnet_cifar"}
    assert set(runs["dataset"]) == {"digits"} and set(runs["arch"]) == {"plain", "residual"}
    assert runs["diverged"].sum() == 1 and (runs["status"] == "FAILED").sum() == 2
    assert (runs["status"] == "RUNNING").sum() == 1
    assert runs.loc[runs["diverged"], "diverged_epoch"].tolist() == [3]
    # A row per (run, epoch) the run logged: 0..E, fewer when diverged or failed.
    client = MlflowClient(uri)
    expected = sum(
        len({m.step for m in client.get_metric_history(run_id, "grad_first_norm")})
        for run_id in runs["run_id"]
    )
    assert len(epochs) == expected
    assert not epochs.duplicated(["run_id", "epoch"]).any()
    assert {"train_loss", "val_accuracy", "epoch_lr", "grad_first_last_ratio"} <= set(epochs)
    both = epochs.dropna(subset=["train_accuracy"])
    assert np.allclose(both["train_error"], 1 - both["train_accuracy"])
    init = epochs[epochs["epoch"] == 0]
    assert init["train_loss"].isna().all() and init["grad_first_norm"].notna().all()


def test_batched_sql_path_returns_what_the_per_metric_client_path_returns(store):
    uri, _, _ = store
    fast = load_study("study", tracking_uri=uri, method="sql")
    slow = load_study("study", tracking_uri=uri, method="client")
    assert (fast.method, slow.method) == ("sql", "client")
    cols = sorted(c for c in fast.epochs.columns if c != "start_time")
    a = fast.epochs[cols].sort_values(["run_id", "epoch"]).reset_index(drop=True)
    b = slow.epochs[cols].sort_values(["run_id", "epoch"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)
    diverged = a[a["diverged"] & (a["epoch"] == 3)]
    assert diverged["train_loss"].isna().all()  # NaN survives the SQL path
    assert np.isinf(diverged["grad_first_norm"]).all()  # so does inf


def test_parent_run_selects_one_sweep(store):
    uri, _, facts = store
    first, second = facts["sweeps"]
    whole = load_study("two-sweeps", tracking_uri=uri)
    assert len(whole.runs) == 4 and sorted(whole.sweep_parents) == sorted(
        [first.parent_run_id, second.parent_run_id]
    )
    one = load_study("two-sweeps", parent_run_id=first.parent_run_id, tracking_uri=uri)
    assert sorted(one.runs["run_id"]) == sorted(first.run_ids)
    assert set(one.runs["depth"]) == {8, 14}
    assert one.parent_run_name == "depth-sweep"


def test_grad_profiles_load_per_layer_and_name_runs_without_them(store):
    uri, _, facts = store
    study = load_study("study", tracking_uri=uri)
    profiles = load_grad_profiles(study)
    assert {"epoch", "layer_index", "layer_name", "grad_norm", "depth", "arch"} <= set(profiles)
    one = profiles[profiles["run_id"] == facts["study"].run_ids[0]]
    assert sorted(one.loc[one["epoch"] == 0, "layer_index"]) == list(range(one["depth"].iloc[0]))
    bare = load_study("no-gradients", tracking_uri=uri)
    assert load_grad_profiles(bare).empty
    assert any("grad_profile.csv" in note for note in bare.notes)


def test_tracking_uri_rule(monkeypatch):
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://example:5000")
    assert resolve_tracking_uri(None) == "http://example:5000"
    assert resolve_tracking_uri("sqlite:////x/y.db") == "sqlite:////x/y.db"  # explicit wins
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert resolve_tracking_uri(None) == f"sqlite:///{ROOT / 'mlflow.db'}"


# ---------------------------------------------------------------- figures and report


def test_every_file_is_written_and_not_empty(report):
    out, code = report
    assert code == 0
    for name in FIGURES:
        for suffix in (".png", ".svg"):
            path = out / f"{name}{suffix}"
            assert path.is_file() and path.stat().st_size > 1000, path
        assert (out / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"]({name}.png)" in text
    assert (out / "summary.csv").stat().st_size > 0


def test_report_names_the_study_and_states_computed_findings(report, store):
    out, _ = report
    _, _, facts = store
    text = (out / "report.md").read_text()
    assert "| experiment | study" in text and "`0123456789abcdef" in text
    assert "1 run diverged" in text and "2 runs did not finish" in text
    assert "still running" in text
    # The fake plain nets lose first-layer gradient without BN and gain it with BN.
    assert "(a vanishing trend)" in text
    assert "(an exploding trend)" in text


def _parse_table(text: str) -> pd.DataFrame:
    summary = text.split("## Summary")[1].splitlines()
    start = next(i for i, line in enumerate(summary) if line.startswith("| "))
    rows = []
    for line in summary[start:]:
        if not line.startswith("|"):
            break
        rows.append([c.strip() for c in line.strip("|").split("|")])
    return pd.DataFrame(rows[2:], columns=rows[0])


def _finite(v: float) -> bool:
    return math.isfinite(v) and abs(v) < 1.7e308  # SQL stores keep inf as float max


def _last_finite(history, min_step=1):
    points = sorted((m.step, m.timestamp, m.value) for m in history if m.step >= min_step)
    finite = [(s, v) for s, _, v in points if _finite(v)]
    return finite[-1] if finite else (None, math.nan)


def _store_table(uri: str, experiment: str) -> dict:
    """Each configuration's numbers, recomputed from MLflow's client API alone."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    groups: dict = {}
    for run in client.search_runs([exp.experiment_id], max_results=1000):
        if run.data.tags.get("run_kind") != "train":
            continue
        p, status = run.data.params, run.info.status
        diverged = run.data.tags.get("diverged") == "true"
        key = (
            "yes" if p["model.batch_norm"] == "True" else "no",
            int(p["model.depth"]),
            "residual" if p["model.residual"] == "True" else "plain",
        )
        g = groups.setdefault(key, {"runs": 0, "diverged": 0, "failed": 0, "running": 0, "v": []})
        g["runs"] += 1
        g["diverged"] += diverged
        g["failed"] += status in ("FAILED", "KILLED") and not diverged
        g["running"] += status == "RUNNING"
        if status != "FINISHED" and not diverged:
            continue
        h = {
            k: client.get_metric_history(run.info.run_id, k)
            for k in (
                "train_accuracy",
                "val_accuracy",
                "grad_first_norm",
                "grad_last_norm",
                "grad_first_last_ratio",
            )
        }
        at0 = {k: [m.value for m in v if m.step == 0][0] for k, v in h.items() if k[0] == "g"}
        end, first_end = _last_finite(h["grad_first_norm"])
        at_end = {k: [m.value for m in v if m.step == end][0] for k, v in h.items() if k[0] == "g"}
        g["v"].append(
            {
                "train": 1 - _last_finite(h["train_accuracy"])[1],
                "val": 1 - _last_finite(h["val_accuracy"])[1],
                "first_init": at0["grad_first_norm"],
                "last_init": at0["grad_last_norm"],
                "ratio_init": at0["grad_first_last_ratio"],
                "first_end": first_end,
                "last_end": at_end["grad_last_norm"],
                "ratio_end": at_end["grad_first_last_ratio"],
            }
        )
    return groups


RUNS_CELL = re.compile(r"(\d+)(?: \((\d+) div\.\))?(?: \+(\d+) failed)?(?: \+(\d+) running)?")


def _cell(text: str) -> tuple[float, float]:
    if text == "–":
        return math.nan, math.nan
    mean, _, sd = text.partition(" ± ")
    return float(mean), float(sd) if sd else math.nan


def test_report_table_matches_what_mlflow_holds(report, store):
    out, _ = report
    uri, _, _ = store
    table = _parse_table((out / "report.md").read_text())
    truth = _store_table(uri, "study")
    assert len(table) == len(truth) == len(DEPTHS) * 2 * 2
    for _, row in table.iterrows():
        g = truth[(row["BN"], int(row["depth"]), row["net"])]
        counts = RUNS_CELL.fullmatch(row["runs"])  # '3', '3 (1 div.)', '2 +1 failed', ...
        seeds, diverged, failed, running = (int(n or 0) for n in counts.groups())
        assert (diverged, failed, running) == (g["diverged"], g["failed"], g["running"]), row
        assert seeds + failed + running == g["runs"], row.to_dict()
        assert seeds == len(g["v"])
        values = pd.DataFrame(g["v"])
        for column, name in (("train %", "train"), ("val %", "val")):
            mean, sd = _cell(row[column])
            assert mean == pytest.approx(100 * values[name].mean(), abs=0.051)
            if len(values) > 1:
                assert sd == pytest.approx(100 * values[name].std(ddof=1), abs=0.051)
        for column, name in (
            ("first, init", "first_init"),
            ("last, init", "last_init"),
            ("ratio, init", "ratio_init"),
            ("first, end", "first_end"),
            ("last, end", "last_end"),
            ("ratio, end", "ratio_end"),
        ):
            geo = math.exp(np.log(values[name]).mean())  # geometric mean over seeds
            assert float(row[column]) == pytest.approx(geo, rel=6e-3), (column, row.to_dict())


def test_report_is_logged_to_the_sweep_parent_run(report, store):
    uri, _, facts = store
    client = MlflowClient(uri)
    logged = {
        Path(f.path).name for f in client.list_artifacts(facts["study"].parent_run_id, "report")
    }
    assert {"report.md", "summary.csv", *(f"{n}.png" for n in FIGURES)} <= logged


# ---------------------------------------------------------------- bad input


def _one_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and "Traceback" not in text, text
    return lines[0]


@pytest.mark.parametrize(
    ("experiment", "message"),
    [
        ("nope", "no experiment named 'nope'"),
        ("empty", "holds nothing to analyse"),
        ("in-progress", "nothing to draw yet"),
    ],
)
def test_bad_experiment_gets_one_line_and_exit_1(store, capsys, experiment, message):
    uri, tmp, _ = store
    code = main(["--experiment", experiment, "--tracking-uri", uri, "--out", str(tmp / "x")])
    err = capsys.readouterr().err
    assert code == 1 and message in _one_line(err)
    assert not (tmp / "x").exists()


def test_unknown_parent_and_missing_store(store, capsys):
    uri, tmp, _ = store
    assert main(["--experiment", "study", "--parent", "0" * 32, "--tracking-uri", uri]) == 1
    assert "no run with id" in _one_line(capsys.readouterr().err)
    missing = f"sqlite:///{tmp}/absent/mlflow.db"
    assert main(["--experiment", "study", "--tracking-uri", missing]) == 1
    assert "no MLflow store" in _one_line(capsys.readouterr().err)
    assert not (tmp / "absent").exists()
    with pytest.raises(StudyError, match="no experiment named"):
        load_study("nope", tracking_uri=uri)


def test_runs_without_gradients_still_get_error_figures_and_a_report_run(store, capsys):
    uri, tmp, _ = store
    out = tmp / "report-nograd"
    assert main(["--experiment", "no-gradients", "--out", str(out), "--tracking-uri", uri]) == 0
    printed = capsys.readouterr().out
    assert "no gradient metrics" in printed and "depth_vs_gradient.png not drawn" in printed
    assert (out / "depth_vs_accuracy.png").stat().st_size > 0
    assert (out / "training_curves.png").stat().st_size > 0
    assert not (out / "depth_vs_gradient.png").exists()
    assert "_Not drawn" in (out / "report.md").read_text()
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("no-gradients")
    reports = client.search_runs([exp.experiment_id], "tags.run_kind = 'report'")
    assert len(reports) == 1 and "a new report run" in printed
    logged = {Path(f.path).name for f in client.list_artifacts(reports[0].info.run_id, "report")}
    assert "report.md" in logged


def test_a_study_that_varies_nothing_is_said_and_drawn(store, capsys):
    uri, tmp, _ = store
    out = tmp / "report-flat"
    code = main(["--experiment", "flat", "--out", str(out), "--tracking-uri", uri, "--no-log"])
    printed = capsys.readouterr().out
    assert code == 0 and "varies nothing" in printed
    assert all((out / f"{name}.png").exists() for name in FIGURES)
    assert "single depth (20)" in (out / "report.md").read_text()


def test_script_prints_one_line_for_an_unknown_experiment(store):
    uri, _, _ = store
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [
            sys.executable,
            str(ROOT / "scripts" / "make_figures.py"),
            "--experiment",
            "nope",
            "--tracking-uri",
            uri,
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 1
    assert re.search(r"no experiment named 'nope'", _one_line(done.stderr))
