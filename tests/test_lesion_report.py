"""The lesion section of the report: verdicts from the numbers, and figures from a real store."""

from __future__ import annotations

import pandas as pd
import pytest
from conftest import TINY

from resnet_exp.analysis.lesion_report import LesionData, lesion_findings, lesion_table


def _single(drops: dict[str, list[float]], intact: float = 0.98) -> pd.DataFrame:
    rows = []
    for arch, values in drops.items():
        for i, drop in enumerate(values, start=1):
            rows.append(
                {
                    "run_id": arch,
                    "run_name": arch,
                    "model": "resnet_cifar",
                    "depth": 14,
                    "arch": arch,
                    "seed": 0,
                    "condition": "",
                    "block_index": i,
                    "block": f"stage1_block{i}",
                    "stage": 1,
                    "downsampling": False,
                    "accuracy": intact - drop,
                    "drop": drop,
                    "intact_accuracy": intact,
                }
            )
    return pd.DataFrame(rows)


def _findings(drops: dict[str, list[float]]) -> str:
    data = LesionData(_single(drops), pd.DataFrame(), pd.DataFrame(), [""], 10)
    return "\n".join(lesion_findings(data, lesion_table(data)))


def test_the_report_confirms_veit_only_when_the_numbers_do():
    text = _findings({"plain": [0.88, 0.85], "residual": [0.01, 0.03]})
    assert "as Veit et al. (2016) found" in text
    assert "86.5 points" in text and "2.0 points" in text  # the means, quoted


def test_the_report_says_plainly_when_the_data_disagree():
    text = _findings({"plain": [0.02, 0.01], "residual": [0.40, 0.30]})
    assert "as Veit et al. (2016) found" not in text
    assert "do not show the clean split" in text
    assert "the residual nets lose more than 25 points" in text
    assert "the plain nets lose less than 5 points" in text


@pytest.mark.slow
def test_lesion_figures_and_report_regenerate_from_a_store(make_cfg, client, tmp_path):
    from resnet_exp.analysis.command import main
    from resnet_exp.run.job import run_job

    lesion = ["lesion.enabled=true", "branches.enabled=true", "lesion.k=[1,2]", "lesion.draws=2"]
    for residual in ("true", "false"):
        outcome = run_job(make_cfg(*TINY, "model.depth=14", f"model.residual={residual}", *lesion))
        assert outcome.status == "FINISHED"
    out = tmp_path / "report"
    assert main(["--experiment", "resnet-exp", "--out", str(out), "--no-log"]) == 0
    for name in ("lesion_single", "lesion_k", "branch_magnitude"):
        for suffix in (".png", ".svg"):
            assert (out / f"{name}{suffix}").stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "## Block lesions" in report
    assert "lesion_single.png" in report and "branch_magnitude.png" in report
    # the section's numbers are the runs' numbers
    for run in client.search_runs([client.get_experiment_by_name("resnet-exp").experiment_id]):
        drop = run.data.metrics["lesion_mean_drop"]
        assert f"{100 * drop:.1f}" in report
