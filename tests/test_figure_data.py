"""What the figures draw and what the report says, checked against MLflow's numbers.

A fake study in a temporary SQLite store (`tests/fake_study.py`, the training
side's contract) is loaded the way `make_figures` loads it; each figure's
plotted data (read back from its Axes, by the `gid` each artist carries) is
compared with numbers recomputed here from MLflow's client API alone.
"""

from __future__ import annotations

import math
import os

import matplotlib
import numpy as np
import pandas as pd
import pytest
from fake_study import log_fake_study, log_run
from matplotlib.colors import to_rgb
from mlflow.tracking import MlflowClient

from resnet_exp.analysis import figures as fg
from resnet_exp.analysis import load_grad_profiles, load_study, run_finals, summarise
from resnet_exp.analysis.report import NOISE_SDS, ErrorChange, _error_sentence, findings

matplotlib.use("Agg")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
EPOCHS = 4


@pytest.fixture(scope="module")
def store(new_store):
    """One-seed and two-seed studies, and a bn_ablation-like one where no-BN nets diverge."""
    tmp, uri, client = new_store("figdata")
    common = dict(epochs=EPOCHS, diverge=False, fail=False)
    for name, seeds in (("one-seed", (0,)), ("two-seeds", (0, 1))):
        art = f"{tmp}/artifacts/{name}"
        log_fake_study(
            client, name, depths=(8, 20, 56), seeds=seeds, artifact_location=art, **common
        )
    bn = log_fake_study(
        client,
        "bn",
        depths=(8, 20),
        batch_norm=(True, False),
        seeds=(0,),
        artifact_location=f"{tmp}/artifacts/bn",
        **common,
    )
    for depth in (32, 56):  # deep residual nets without BN blow up in epoch 1, as measured
        for residual in (False, True):
            for batch_norm in (False, True):
                log_run(
                    client,
                    bn.experiment_id,
                    depth=depth,
                    residual=residual,
                    batch_norm=batch_norm,
                    epochs=EPOCHS,
                    parent_run_id=bn.parent_run_id,
                    diverge_at=1 if residual and not batch_norm else None,
                )
    return uri


def _load(uri: str, experiment: str):
    study = load_study(experiment, tracking_uri=uri)
    return study, run_finals(study)


def _history(uri: str, experiment: str, key: str) -> pd.DataFrame:
    """Every run's `key` history with its config, straight from MLflow's client."""
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name(experiment)
    rows = []
    for run in client.search_runs([exp.experiment_id], "tags.run_kind = 'train'"):
        p = run.data.params
        for m in client.get_metric_history(run.info.run_id, key):
            rows.append(
                {
                    "run_id": run.info.run_id,
                    "depth": int(p["model.depth"]),
                    "arch": "residual" if p["model.residual"] == "True" else "plain",
                    "batch_norm": p["model.batch_norm"] == "True",
                    "step": m.step,
                    "value": m.value,
                }
            )
    return pd.DataFrame(rows)


def _line(ax, gid: str):
    (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == gid]
    return np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)


# ---------------------------------------------------------------- figures: the data drawn


@pytest.mark.parametrize(("column", "key"), [(0, "grad_first_norm"), (1, "grad_last_norm")])
def test_depth_vs_gradient_panels_plot_the_layer_they_name(store, column, key):
    study, finals = _load(store, "two-seeds")
    fig = fg.depth_vs_gradient(finals)
    init = _history(store, "two-seeds", key).query("step == 0")
    for arch in ("plain", "residual"):
        x, y = _line(fig.axes[column], arch)  # row 0: at initialisation
        expected = (
            init[init["arch"] == arch]
            .groupby("depth")["value"]
            .apply(lambda v: math.exp(np.log(v).mean()))
        )
        assert np.allclose(y, expected.to_numpy(), rtol=1e-6), (arch, key)
        # dodged sideways, never onto another depth
        assert np.allclose(x / expected.index.to_numpy(), 1, atol=0.1)
    x_plain, _ = _line(fig.axes[0], "plain")
    x_res, _ = _line(fig.axes[0], "residual")
    assert (x_plain < x_res).all()


def test_depth_vs_accuracy_draws_chance_from_num_classes_and_keeps_zero_visible(store):
    _, finals = _load(store, "one-seed")
    fig = fg.depth_vs_accuracy(finals)
    client = MlflowClient(store)
    exp = client.get_experiment_by_name("one-seed")
    run = client.search_runs([exp.experiment_id], "tags.run_kind = 'train'")[0]
    chance = 100 * (1 - 1 / int(run.data.params["data.num_classes"]))
    for ax in fig.axes:
        (line,) = [ln for ln in ax.get_lines() if ln.get_gid() == "chance"]
        assert line.get_ydata()[0] == pytest.approx(chance)
        assert ax.get_ylim()[0] < 0 < ax.get_ylim()[1] and ax.get_ylim()[1] > chance
        plain = [ln for ln in ax.get_lines() if ln.get_gid() == "plain"][0]
        residual = [ln for ln in ax.get_lines() if ln.get_gid() == "residual"][0]
        assert plain.get_marker() != residual.get_marker()
        assert residual.get_markerfacecolor() == "none"  # open: never hides the other
    # training-error panel: the plotted values are MLflow's last train_accuracy, as %
    acc = _history(store, "one-seed", "train_accuracy")
    last = acc.sort_values("step").groupby("run_id").last()
    for arch in ("plain", "residual"):
        _, y = _line(fig.axes[0], arch)
        expected = 100 * (1 - last[last["arch"] == arch].sort_values("depth")["value"])
        assert np.allclose(y, expected.to_numpy())


def test_curves_mark_learning_rate_drops_where_the_logged_lr_falls(store):
    study, finals = _load(store, "one-seed")
    lr = _history(store, "one-seed", "lr").sort_values(["run_id", "step"])
    prev = lr.groupby("run_id")["value"].shift()
    drops = sorted(set(lr.loc[lr["value"] < prev, "step"]))
    assert drops  # the fake schedule has one
    for fig in (
        fg.training_curves(study.epochs, finals),
        fg.gradient_dynamics(study.epochs, finals),
    ):
        for ax in fig.axes:
            marks = sorted(ln.get_xdata()[0] for ln in ax.get_lines() if ln.get_gid() == "lr_drop")
            assert marks == [d - 1 for d in drops]  # the boundary before the first lower epoch


def test_training_curves_put_validation_in_its_own_row(store):
    study, finals = _load(store, "one-seed")
    fig = fg.training_curves(study.epochs, finals)
    axes = np.asarray(fig.axes).reshape(
        2, 2
    )  # rows: training, validation; columns: plain, residual
    val = _history(store, "one-seed", "val_accuracy").query("step >= 1")
    for c, arch in enumerate(("plain", "residual")):
        for depth in (8, 20, 56):
            x, y = _line(axes[1, c], f"{arch} depth {depth}")
            want = val[(val["arch"] == arch) & (val["depth"] == depth)].sort_values("step")
            assert np.allclose(x, want["step"]) and np.allclose(y, 100 * (1 - want["value"]))
    assert "validation" in axes[1, 0].get_ylabel() and "training" in axes[0, 0].get_ylabel()


def test_depths_get_distinct_luminance_and_markers():
    depths = [8, 14, 20, 32, 44, 56]
    colors, markers = fg.depth_colors(depths), fg.depth_markers(depths)
    luminance = [np.dot(to_rgb(colors[d]), (0.2126, 0.7152, 0.0722)) for d in depths]
    assert all(b - a > 0.05 for a, b in zip(luminance, luminance[1:], strict=False))
    assert len(set(markers.values())) == len(depths)


def test_gradient_profile_rows_have_their_own_y_range(store):
    study, finals = _load(store, "two-seeds")
    fig = fg.gradient_profile(load_grad_profiles(study), finals)
    axes = np.asarray(fig.axes).reshape(2, 2)
    shared = axes[0, 0].get_shared_y_axes()
    assert shared.joined(axes[0, 0], axes[0, 1])  # plain vs residual comparable in a row
    assert not shared.joined(axes[0, 0], axes[1, 0])


def test_titles_promise_a_band_only_when_there_are_seeds(store):
    for experiment, seeds in (("one-seed", 1), ("two-seeds", 2)):
        study, finals = _load(store, experiment)
        drawn = [
            fg.depth_vs_gradient(finals),
            fg.depth_vs_accuracy(finals),
            fg.training_curves(study.epochs, finals),
            fg.gradient_profile(load_grad_profiles(study), finals),
            fg.gradient_dynamics(study.epochs, finals),
        ]
        for fig in drawn:
            title = fig.get_suptitle()
            if seeds == 1:
                assert "one seed" in title and "band" not in title and "dots" not in title
            else:
                assert f"mean over {seeds} seeds" in title and "band" in title


# ---------------------------------------------------------------- report: words the numbers allow


def _change(a, b, sd, seeds):
    return ErrorChange("residual", 8, 56, a, b, sd, sd, seeds, math.nan)


def test_one_seed_small_change_is_not_called_a_trend():
    text = _error_sentence(_change(0.0, 3.5, math.nan, 1), [])
    assert "one seed: differences of a few points are within run-to-run noise" in text
    assert "rise" not in text
    assert "a rise of 89.4 points" in _error_sentence(_change(0.0, 89.4, math.nan, 1), [])


def test_several_seeds_a_trend_only_beyond_their_spread():
    noisy = _error_sentence(_change(1.0, 4.5, 2.5, 3), [])
    assert "no trend with depth can be claimed" in noisy and "± 2.5%" in noisy
    assert "3 seeds" in noisy
    clear = _error_sentence(_change(1.0, 4.5, 0.5, 3), [])
    assert "a rise of 3.5 points" in clear and f"more than {NOISE_SDS:g} sd" in clear


def test_report_sentences_for_one_seed_and_several(store):
    study, finals = _load(store, "one-seed")
    one = "\n".join(findings(study, summarise(study), finals))
    assert "One seed per configuration" in one and "mean ± sd" not in one
    study, finals = _load(store, "two-seeds")
    two = "\n".join(findings(study, summarise(study), finals))
    assert "One seed per configuration" not in two and "mean ± sd over 2 seeds" in two
    # the fake residual nets change by a couple of points: never "both train worse"
    assert "Both kinds train worse" not in one + two


def test_report_counts_divergence_per_condition(store):
    study, finals = _load(store, "bn")
    table = summarise(study)
    lines = findings(study, table, finals)
    text = "\n".join(lines)
    no_bn = lines.index("**resnet_cifar, no BN**")
    bn = lines.index("**resnet_cifar, BN**")
    block = "\n".join(lines[no_bn + 1 : bn] if no_bn < bn else lines[no_bn + 1 :])
    truth = finals[~finals["batch_norm"]].groupby("arch")["diverged"].agg(["sum", "count"])
    for arch in ("plain", "residual"):
        n, total = int(truth.loc[arch, "sum"]), int(truth.loc[arch, "count"])
        assert f"{n} of {total} {arch} runs" in block
    assert "(depth 32, 56)" in block
    assert "Residual nets: runs diverged at depth 32, 56" in block or "left out" in block
    bn_block = "\n".join(lines[bn + 1 :] if bn > no_bn else lines[bn + 1 : no_bn])
    assert "Diverged" not in bn_block
    assert "2 runs diverged" in text


def test_an_error_at_chance_is_called_so():
    text = _error_sentence(_change(1.0, 89.5, math.nan, 1), [], chance=90.0)
    assert "at depth 56 that is chance level (90% error" in text
    assert "chance" not in _error_sentence(_change(1.0, 60.0, math.nan, 1), [], chance=90.0)
