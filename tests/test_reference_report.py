"""A he2016_cifar10 study's report: test error in the table, Table 6 beside it, "not run" cells."""

from __future__ import annotations

import pandas as pd
from fake_study import log_fake_study
from mlflow.tracking import MlflowClient

from resnet_exp.analysis import load_study
from resnet_exp.analysis.reference import HE2016_TABLE6_TEST_ERROR
from resnet_exp.analysis.report import write_report
from resnet_exp.analysis.summary import run_finals, summarise


def test_he2016_report_sets_table6_beside_our_test_error(tmp_path):
    uri = f"sqlite:///{tmp_path}/mlflow.db"
    client = MlflowClient(uri)
    study = log_fake_study(
        client,
        "he2016_cifar10",
        depths=(20, 32),
        seeds=(0, 1),
        epochs=3,
        diverge=False,
        fail=False,
        profiles=False,
        artifact_location=f"{tmp_path}/artifacts",
    )
    logged: dict[tuple[int, str], list[float]] = {}
    runs = client.search_runs([study.experiment_id], "tags.run_kind = 'train'")
    for i, run in enumerate(runs):
        depth, arch = int(run.data.params["model.depth"]), run.data.params["model.residual"]
        accuracy = 0.9 - 0.01 * i  # any distinct values: the report must quote their mean
        client.log_metric(run.info.run_id, "test_accuracy", accuracy, step=3)
        logged.setdefault((depth, arch), []).append(1 - accuracy)
    out = tmp_path / "report"
    loaded = load_study("he2016_cifar10", None, uri)
    table = summarise(loaded)
    write_report(loaded, table, run_finals(loaded), {}, out, notes=[])  # no figures: faster
    text = (out / "report.md").read_text()
    section = text.split("## Beside He et al. 2016, Table 6")[1].split("\n## ")[0]
    rows = {
        int(cells[1]): [c.strip() for c in cells[2:5]]
        for cells in (line.split("|") for line in section.splitlines())
        if len(cells) > 4 and cells[1].strip().isdigit()
    }
    for depth, paper in HE2016_TABLE6_TEST_ERROR.items():
        assert rows[depth][0] == f"{paper:.2f}"
    for depth in (44, 56, 110):
        assert rows[depth][1:] == ["not run", "not run"]
    for depth in (20, 32):
        mean = 100 * pd.Series(logged[(depth, "True")]).mean()
        assert rows[depth][1].startswith(f"{mean:.2f} ± ")
    summary = pd.read_csv(out / "summary.csv")
    assert summary["test_error_mean"].notna().all()
    assert "| test % |" in text  # the summary table's column


def test_other_studies_get_no_reference_section(tmp_path):
    from resnet_exp.analysis.reference import reference_section

    table = pd.DataFrame({"depth": [20], "arch": ["residual"], "test_error_mean": [0.1]})
    assert reference_section("depth_sweep", table) == []
