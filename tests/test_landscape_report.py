"""The curvature and landscape section: verdicts from the numbers, contours that draw any
surface, and figures and section regenerated from a real store."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from conftest import assert_tables_fit_mlflows_viewer
from fake_study import log_fake_study
from matplotlib.contour import ContourSet
from matplotlib.figure import Figure

from resnet_exp import contract
from resnet_exp.analysis.landscape_data import LandscapeData, landscape_table
from resnet_exp.analysis.landscape_report import compare, landscape_findings
from resnet_exp.recording.landscape_image import LEVELS_PER_DECADE, contour_levels, draw_contour

# ---------------------------------------------------------------- verdicts on hand-built runs


def _data(numbers: dict[tuple[str, int], dict[str, float]], seeds: int = 1) -> LandscapeData:
    """One run per seed of each (arch, depth), with the given per-run numbers (seeds vary
    them by ±2%)."""
    rows = []
    for (arch, depth), values in numbers.items():
        for seed in range(seeds):
            jitter = 1 + 0.02 * (seed - (seeds - 1) / 2)
            rows.append(
                {
                    "run_id": f"{arch}-{depth}-{seed}",
                    "run_name": f"{arch}-{depth}-{seed}",
                    "model": "resnet_cifar",
                    "depth": depth,
                    "arch": arch,
                    "seed": seed,
                    "condition": "",
                    "batch_norm": True,
                    "top_eig_init": 5.0,
                    "trace_init": 100.0,
                    "trace_stderr_end": values.get("trace_stderr_end", 1.0),
                    "centre_loss": 0.01,
                    **{k: v * jitter for k, v in values.items() if k != "trace_stderr_end"},
                }
            )
    return LandscapeData(pd.DataFrame(), pd.DataFrame(rows), pd.DataFrame(), pd.DataFrame(), [""])


def _findings(numbers: dict[tuple[str, int], dict[str, float]], seeds: int = 1) -> str:
    data = _data(numbers, seeds)
    return "\n".join(landscape_findings(data, landscape_table(data)))


def _net(sharpness: float, nonconvexity: float, top_eig: float, trace: float) -> dict:
    return {
        "sharpness": sharpness,
        "nonconvexity": nonconvexity,
        "top_eig_end": top_eig,
        "trace_end": trace,
    }


def test_plain_nets_that_sharpen_with_depth_agree_with_li_and_yao():
    text = _findings(
        {
            ("plain", 8): _net(0.1, 0.02, 10, 200),
            ("plain", 56): _net(2.0, 0.45, 300, 6000),
            ("residual", 8): _net(0.1, 0.0, 9, 190),
            ("residual", 56): _net(0.12, 0.01, 11, 210),
        },
        seeds=2,
    )
    assert (
        "As Li et al. (2018) found, with depth the plain nets' sharpness and non-convex "
        "fraction rise" in text
    )
    assert "disagree" not in text
    assert "rises x20 from depth 8 to 56" in text  # the plain nets' sharpness, quoted
    assert "rises +43 points" in text  # their non-convex fraction
    # at depth 8 the residual nets are within the factor: smoother for the deep nets only
    assert "As Yao et al. (2020) found, the skip gives the deepest nets a smoother Hessian" in text
    assert "top eigenvalue after training 11 vs 300" in text


def test_the_reverse_says_the_data_disagree_with_li_and_yao():
    text = _findings(
        {
            ("plain", 8): _net(0.5, 0.1, 50, 900),
            ("plain", 56): _net(0.5, 0.1, 50, 900),
            ("residual", 8): _net(0.1, 0.0, 10, 200),
            ("residual", 56): _net(2.0, 0.5, 400, 8000),
        }
    )
    assert "As Li et al." not in text and "As Yao et al." not in text
    assert "Here the data disagree with Li et al. (2018)" in text
    assert "with depth the plain nets' sharpness and non-convex fraction do not rise" in text
    assert "with depth the residual nets' sharpness and non-convex fraction rise too" in text
    assert "Here the data disagree with Yao et al. (2020)" in text
    assert "one seed, spread unknown" in text  # one seed: the trend is said with its caveat


def test_saddles_at_initialisation_and_nets_that_did_not_train_are_named():
    """A negative dominant eigenvalue at init is called a saddle, with its growth per kind;
    a net whose loss after training stays above half its initial loss is named."""
    stuck = {"centre_loss": 7.7, "batch_loss_init": 2.7}
    text = _findings(
        {
            ("plain", 8): {**_net(0.3, 0.0, 0.4, 2), "top_eig_init": -10.0, "batch_loss_init": 2.5},
            ("plain", 56): {**_net(9e3, 0.06, 300, -190), "top_eig_init": -1e6, **stuck},
            ("residual", 8): {
                **_net(0.2, 0.0, 0.3, 1),
                "top_eig_init": -10.0,
                "batch_loss_init": 3,
            },
            ("residual", 56): {
                **_net(3, 0.02, 4, 20),
                "top_eig_init": -300.0,
                "batch_loss_init": 6,
            },
        }
    )
    assert "negative in 4 of 4 nets (the loss curves down: a saddle)" in text
    assert "x1e+05 for plain nets from depth 8 to 56, x30 for residual nets" in text
    assert "Not trained: plain-56-0 (loss 7.7 after training, 2.7 at init)" in text
    assert "residual-56-0 (" not in text


def test_one_depth_reads_no_trend():
    text = _findings(
        {("plain", 20): _net(2.0, 0.4, 300, 6000), ("residual", 20): _net(0.1, 0.0, 10, 200)}
    )
    assert "With one depth (20) no depth trend can be read" in text
    assert "rises" not in text and "As Li et al." not in text
    assert "whether the gap is for deep nets only" in text and "cannot be read" in text


def test_a_trace_change_within_its_standard_error_is_not_a_trend():
    noisy = {"trace_stderr_end": 60.0}
    text = _findings(
        {
            ("plain", 8): {**_net(0.1, 0.0, 10, 100), **noisy},
            ("plain", 56): {**_net(0.1, 0.0, 10, 200), **noisy},
        }
    )
    # x2 is past the factor, but 2 x sqrt(60² + 60²) = 170 > 100
    assert "trace after training 100 / 200 (no change beyond the trace's standard error" in text


@pytest.mark.parametrize(
    ("a", "b", "measure", "noise", "expected"),
    [
        (10, 16, "top_eig_end", math.nan, "higher"),
        (10, 14, "top_eig_end", math.nan, "similar"),
        (10, 6, "top_eig_end", math.nan, "lower"),
        (10, 16, "top_eig_end", 7.0, "noise"),
        (-1, 1, "trace_end", math.nan, "higher"),  # a sign change is no ratio, still a change
        (0.0, 0.0, "sharpness", 0.0, "similar"),
        (0.05, 0.12, "nonconvexity", math.nan, "similar"),  # 7 points: under NONCONVEX_POINTS
        (0.05, 0.20, "nonconvexity", math.nan, "higher"),
    ],
)
def test_compare_thresholds(a, b, measure, noise, expected):
    assert compare(a, b, measure, noise) == expected


# ---------------------------------------------------------------- contours


def _surface(fn, grid: int = 21) -> pd.DataFrame:
    values = np.linspace(-1.0, 1.0, grid)
    alpha, beta = (v.ravel() for v in np.meshgrid(values, values, indexing="ij"))
    return pd.DataFrame({"alpha": alpha, "beta": beta, "loss": fn(alpha, beta), "accuracy": 0.5})


def _contours(ax) -> list[ContourSet]:
    return [c for c in ax.collections if isinstance(c, ContourSet)]


def test_draw_contour_draws_log_spaced_levels_and_marks_the_centre():
    ax = Figure().subplots()
    draw_contour(ax, _surface(lambda a, b: 1e-3 + a**2 + b**2), title="bowl")
    (contour,) = _contours(ax)
    levels = np.asarray(contour.levels)
    assert len(levels) == round(LEVELS_PER_DECADE * np.log10(2.001 / 1e-3))  # 3.3 decades
    assert np.allclose(np.diff(np.log(levels)), np.log(levels[1] / levels[0]))  # geometric
    assert levels[0] > 1e-3 and levels[-1] < 2.001  # strictly inside the surface's range
    assert [line.get_gid() for line in ax.lines] == ["centre"]
    assert ax.get_title() == "bowl"


def test_shared_levels_keep_lines_in_a_shallow_panel_beside_a_wild_one():
    """The grid shares one scheme: a panel spanning 1e-3..10 beside one reaching 1e7 still
    draws its levels per decade (a fixed count over 10 decades would leave it blank)."""
    shallow = _surface(lambda a, b: 1e-3 + 10 * (a**2 + b**2) / 2)
    wild = _surface(lambda a, b: 10 ** (1 + 6 * (a**2 + b**2) / 2))
    levels = contour_levels(pd.concat([shallow, wild])["loss"])
    inside = levels[(levels > 1e-3) & (levels < 10)]
    assert len(inside) >= 2 * LEVELS_PER_DECADE


def test_draw_contour_survives_zero_negative_and_missing_losses():
    ax = Figure().subplots()
    draw_contour(ax, _surface(lambda a, b: a**2 + b**2 - 0.5))  # 0 and below inside the plane
    (contour,) = _contours(ax)
    assert (np.asarray(contour.levels) > 0).all()

    ax = Figure().subplots()
    draw_contour(ax, _surface(lambda a, b: np.where(a > 0.8, np.nan, -1.0 - a**2)))  # no loss > 0
    assert not _contours(ax) and [line.get_gid() for line in ax.lines] == ["centre"]

    ax = Figure().subplots()
    draw_contour(ax, _surface(lambda a, b: np.where(a > 0.8, np.inf, 0.1 + a**2 + b**2)))
    assert len(_contours(ax)) == 1


# ---------------------------------------------------------------- through a real store


def _log_lesions(client, run_ids: list[str]) -> None:
    """Lesion metrics and lesion.csv for each run, as `lesion.enabled` logs them."""
    header = ",".join(contract.LESION_COLUMNS)
    for run_id in run_ids:
        client.log_metric(run_id, contract.LESION_INTACT_ACCURACY, 0.9, step=2)
        client.log_metric(run_id, contract.LESION_MEAN_DROP, 0.1, step=2)
        rows = [f"{i},stage1_block{i},1,False,0.8,0.1" for i in (1, 2)]
        client.log_text(run_id, "\n".join([header, *rows]) + "\n", contract.LESION_ARTIFACT)


def test_figures_and_section_regenerate_from_a_store(client, tmp_path):
    from resnet_exp.analysis.command import main

    study = log_fake_study(
        client,
        "landscape",
        depths=(8, 20),
        seeds=(0,),
        epochs=2,
        diverge=False,
        fail=False,
        profiles=False,
        curvature=True,
        landscape=True,
    )
    _log_lesions(client, study.run_ids)  # both lenses in one study: both sections
    out = tmp_path / "report"
    assert main(["--experiment", "landscape", "--out", str(out), "--no-log"]) == 0
    for name in ("landscape_contours", "landscape_slices", "curvature_depth", "lesion_single"):
        for suffix in (".png", ".svg"):
            assert (out / f"{name}{suffix}").stat().st_size > 1000, name
    report = (out / "report.md").read_text()
    assert "## Block lesions" in report
    # the summary, lesion and landscape tables all fit MLflow's markdown viewer
    assert assert_tables_fit_mlflows_viewer(report) == 3
    section = report[report.index("## Curvature and loss landscape") :]
    for name in ("landscape_contours", "landscape_slices", "curvature_depth"):
        assert f"({name}.png)" in section
    assert "As Li et al. (2018) found" in section  # the fake plain nets sharpen with depth
    # one seed: the section's numbers are the runs' own metrics
    for run_id in study.run_ids:
        metrics = client.get_run(run_id).data.metrics
        for metric in (contract.LANDSCAPE_SHARPNESS, contract.HESSIAN_TOP_EIG):
            assert f"{metrics[metric]:.3g}" in section, metric
