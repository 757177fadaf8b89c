"""Curvature and loss landscapes in a real run (issue 18): what reaches MLflow, when, and
that a run without them logs none of it."""

from __future__ import annotations

import io

import mlflow
import numpy as np
import pandas as pd
import pytest
from conftest import TINY, run_make_figures, run_train, runs_of

from resnet_exp import contract
from resnet_exp.config.schema import ConfigError, check_config
from resnet_exp.run.job import run_job

GEOMETRY = [
    "curvature.enabled=true",
    "curvature.examples=24",
    "curvature.iterations=6",
    "curvature.samples=4",
    "curvature.top_k=2",
    "curvature.density_runs=1",
    "curvature.lanczos_steps=5",
    "landscape.enabled=true",
    "landscape.examples=24",
    "landscape.grid=5",
    "landscape.batch_size=10",
]


def _csv(client, run_id: str, name: str) -> pd.DataFrame:
    uri = f"{client.get_run(run_id).info.artifact_uri}/{name}"
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(uri)))


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


def test_a_run_logs_curvature_at_init_every_epoch_and_the_landscape_at_the_end(make_cfg, client):
    cfg = make_cfg(*TINY, "trainer.epochs=3", "curvature.every=2", *GEOMETRY)
    outcome = run_job(cfg)
    assert outcome.status == "FINISHED"
    run_id = outcome.run_id
    # step 0, the every-2 epoch, and after training (epoch 3)
    for key in contract.CURVATURE_METRICS:
        assert _steps(client, run_id, key) == [0, 2, 3], key
    for key in (
        contract.LANDSCAPE_SHARPNESS,
        contract.LANDSCAPE_NONCONVEXITY,
        contract.LANDSCAPE_CENTRE_LOSS,
        contract.LANDSCAPE_TIME,
    ):
        assert _steps(client, run_id, key) == [3], key

    table = _csv(client, run_id, contract.CURVATURE_ARTIFACT)
    assert list(table.columns) == [*contract.CURVATURE_COLUMNS, "eig_2"]
    assert table["epoch"].tolist() == [0, 2, 3]
    # bn_mode=auto: the initialisation as training sees it, later epochs as evaluated
    assert table["bn_mode"].tolist() == ["training", "inference", "inference"]
    assert (table["examples"] == 24).all() and (table["parameters"] > 0).all()
    assert (table["top_eig"].abs() >= table["eig_2"].abs() - 1e-6).all()
    history = client.get_metric_history(run_id, contract.HESSIAN_TOP_EIG)
    logged = {m.step: m.value for m in history}
    assert np.allclose([logged[s] for s in (0, 2, 3)], table["top_eig"], rtol=1e-6)

    density = _csv(client, run_id, contract.DENSITY_ARTIFACT)
    assert list(density.columns) == contract.DENSITY_COLUMNS
    for _, nodes in density.groupby("epoch"):
        assert nodes["weight"].sum() == pytest.approx(1.0, abs=1e-6)

    line = _csv(client, run_id, contract.LANDSCAPE_1D_ARTIFACT)
    plane = _csv(client, run_id, contract.LANDSCAPE_2D_ARTIFACT)
    assert list(line.columns) == contract.LANDSCAPE_1D_COLUMNS and len(line) == 5
    assert list(plane.columns) == contract.LANDSCAPE_2D_COLUMNS and len(plane) == 25
    centre = plane[(plane["alpha"] == 0) & (plane["beta"] == 0)]["loss"].item()
    (centre_metric,) = client.get_metric_history(run_id, contract.LANDSCAPE_CENTRE_LOSS)
    assert centre_metric.value == pytest.approx(centre, rel=1e-6)
    assert contract.LANDSCAPE_IMAGE in {a.path for a in client.list_artifacts(run_id)}


def test_a_run_without_them_logs_none_of_it(make_cfg, client):
    outcome = run_job(make_cfg(*TINY, "trainer.epochs=1"))
    run = client.get_run(outcome.run_id)
    names = set(run.data.metrics)
    assert not names & {*contract.CURVATURE_METRICS, contract.LANDSCAPE_SHARPNESS}
    artifacts = {a.path for a in client.list_artifacts(outcome.run_id)}
    assert contract.CURVATURE_ARTIFACT not in artifacts
    assert contract.LANDSCAPE_2D_ARTIFACT not in artifacts


@pytest.mark.parametrize(
    "family",
    [
        ["model=mlp", "model.depth=6", "model.width=16"],
        pytest.param(["model=vgg", "model.depth=11"], marks=pytest.mark.slow),  # 25 s
        ["model.residual_init=fixup", "model.batch_norm=false"],
    ],
    ids=["mlp", "vgg-11", "resnet-fixup-no-bn"],
)
def test_the_same_switches_work_for_every_family_and_normalisation(make_cfg, client, family):
    """A net without batch norm has one mode (bn_mode is then moot); an MLP has Dense
    filters; VGG pools. Each logs both lenses, with finite numbers."""
    light = [o for o in GEOMETRY if "density" not in o and "lanczos" not in o]
    outcome = run_job(make_cfg(*TINY, *family, "trainer.epochs=1", *light))
    assert outcome.status == "FINISHED"
    metrics = client.get_run(outcome.run_id).data.metrics
    for key in (contract.HESSIAN_TOP_EIG, contract.HESSIAN_TRACE, contract.LANDSCAPE_SHARPNESS):
        assert np.isfinite(metrics[key]), key
    assert len(_csv(client, outcome.run_id, contract.LANDSCAPE_2D_ARTIFACT)) == 25


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("landscape.grid=4", "landscape.grid=4: must be odd"),
        ("landscape.span=0", "landscape.span=0.0: must be > 0"),
        ("curvature.samples=1", "curvature.samples=1: must be >= 2"),
        ("curvature.every=-1", "curvature.every=-1: must be >= 0"),
        ("curvature.examples=0", "curvature.examples=0: must be > 0"),
    ],
)
def test_bad_settings_are_refused_in_one_line(make_cfg, override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        check_config(make_cfg(*TINY, override))


@pytest.mark.slow
def test_the_preset_then_make_figures_answers_from_the_store(tracking_uri, client, tmp_path):
    """`experiment=landscape_study`, shrunk, as a user runs it; then the figures script."""
    tiny = [o for o in TINY if not o.startswith("model.depth")]
    sweep = run_train(
        "-m",
        "experiment=landscape_study",
        *tiny,
        "model.depth=8,14",
        "curvature.examples=24",
        "curvature.iterations=5",
        "curvature.samples=3",
        "landscape.examples=24",
        "landscape.grid=5",
        cwd=tmp_path,
    )
    assert sweep.returncode == 0, sweep.stderr[-3000:]
    out = tmp_path / "report"
    result = run_make_figures("--experiment", "landscape_study", "--out", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    for name in ("landscape_contours", "landscape_slices", "curvature_depth"):
        assert (out / f"{name}.png").stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "## Curvature and loss landscape: does the skip keep the surface smooth" in report
    assert "Li et al. (2018)" in report and "Yao et al. (2020)" in report
    runs = [r for r in runs_of(client, "landscape_study") if r.data.tags["run_kind"] == "train"]
    assert len(runs) == 4
    for run in runs:  # the report's table quotes each run's logged sharpness
        assert f"{run.data.metrics[contract.LANDSCAPE_SHARPNESS]:.3g}" in report


def test_a_run_with_the_slice_only_logs_no_surface(make_cfg, client):
    """landscape.surface=false: the 1D slice and its sharpness, and none of the surface (its
    table, non-convexity or picture)."""
    landscape = [o for o in GEOMETRY if o.startswith("landscape.")]
    outcome = run_job(make_cfg(*TINY, "trainer.epochs=1", *landscape, "landscape.surface=false"))
    assert outcome.status == "FINISHED"
    run_id = outcome.run_id
    assert _steps(client, run_id, contract.LANDSCAPE_SHARPNESS) == [1]
    assert contract.LANDSCAPE_NONCONVEXITY not in client.get_run(run_id).data.metrics
    artifacts = {a.path for a in client.list_artifacts(run_id)}
    assert contract.LANDSCAPE_1D_ARTIFACT in artifacts
    assert not artifacts & {contract.LANDSCAPE_2D_ARTIFACT, contract.LANDSCAPE_IMAGE}
    assert len(_csv(client, run_id, contract.LANDSCAPE_1D_ARTIFACT)) == 5


def test_an_unconverged_top_eigenvalue_is_marked_in_the_report_table(make_cfg, client):
    """One power iteration cannot converge: curvature.csv says so, and the report's table marks
    that run's eigenvalues at initialisation and after training as not converged."""
    from resnet_exp.analysis.landscape_data import landscape_table, load_landscape
    from resnet_exp.analysis.landscape_report import UNCONVERGED, landscape_markdown_table
    from resnet_exp.analysis.load import load_study

    curvature = [o for o in GEOMETRY if o.startswith("curvature.")]
    cfg = make_cfg(*TINY, "trainer.epochs=1", *curvature, "curvature.iterations=1")
    outcome = run_job(cfg)
    assert outcome.status == "FINISHED"
    table = _csv(client, outcome.run_id, contract.CURVATURE_ARTIFACT)
    assert table["epoch"].tolist() == [0, 1] and not table["top_eig_converged"].any()
    study = load_study(cfg.tracking.experiment, tracking_uri=client.tracking_uri)
    lines = landscape_markdown_table(landscape_table(load_landscape(study)))
    (row,) = [line for line in lines[2:] if line.startswith("|")]  # the run's row
    assert row.count(UNCONVERGED) == 2  # its eigenvalue at initialisation and after training
