"""A real tiny sweep, then the figures script, as a user runs them."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY, run_make_figures, run_train, runs_of

pytestmark = pytest.mark.slow

FIGURES = [
    "depth_vs_gradient",
    "depth_vs_accuracy",
    "training_curves",
    "gradient_profile",
    "gradient_dynamics",
]


def test_sweep_then_make_figures_writes_everything_and_logs_it(tracking_uri, client, tmp_path):
    sweep = run_train(
        "-m",
        *TINY,
        "model.depth=8,14",
        "model.residual=true,false",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    out = tmp_path / "report"
    result = run_make_figures("--experiment", "resnet-exp", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in FIGURES:
        for suffix in (".png", ".svg"):
            path = out / f"{name}{suffix}"
            assert path.exists() and path.stat().st_size > 1000, path
    report = (out / "report.md").read_text()
    for name in FIGURES:
        assert f"{name}.png" in report

    # the report's numbers are MLflow's numbers
    train_runs = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "train"]
    assert len(train_runs) == 4
    summary = pd.read_csv(out / "summary.csv")
    assert len(summary) == 4
    for run in train_runs:
        depth = int(run.data.params["model.depth"])
        residual = run.data.params["model.residual"] == "True"
        row = summary[(summary.depth == depth) & (summary.residual == residual)]
        assert len(row) == 1
        (row,) = row.to_dict("records")
        assert row["arch"] == ("residual" if residual else "plain")
        # One seed: the mean is the run's own last-epoch value, column for column.
        for column, metric in (
            ("train_error_mean", "train_accuracy"),
            ("val_error_mean", "val_accuracy"),
        ):
            expected = 1 - run.data.metrics[metric]
            assert row[column] == pytest.approx(expected, abs=1e-6), (column, row)

    # and the same files are in MLflow, beside the runs
    (parent,) = [r for r in runs_of(client) if r.data.tags.get("run_kind") == "sweep"]
    logged = {a.path for a in client.list_artifacts(parent.info.run_id, "report")}
    assert "report/report.md" in logged
    assert {f"report/{name}.png" for name in FIGURES} <= logged
