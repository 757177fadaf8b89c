"""What the summary table holds and what each figure plots, against MLflow's own numbers.

A fake study (`tests/fake_study.py`, no TensorFlow) is logged to a real
SQLite store with its depths in a scrambled order. The expected numbers are
recomputed here from `MlflowClient` alone; the figures are checked through the
data on their Axes (line data, scatter offsets), found by what a panel says
("first layer", "training error", "plain"), not by its position or styling.
"""

from __future__ import annotations

import inspect
import io
from collections import defaultdict
from pathlib import Path

import mlflow
import numpy as np
import pandas as pd
import pytest
from fake_study import log_fake_study
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from resnet_exp.analysis import figures, load_grad_profiles, load_study
from resnet_exp.analysis.summary import run_finals, summarise

DEPTHS = (20, 8, 14)  # logged out of order on purpose
SEEDS = (0, 1)
EPOCHS = 3


@pytest.fixture(scope="module")
def store(new_store):
    tmp, uri, client = new_store("summary")
    log_fake_study(
        client,
        "s",
        depths=DEPTHS,
        seeds=SEEDS,
        epochs=EPOCHS,
        diverge=False,
        fail=False,
        artifact_location=f"{tmp}/artifacts",
    )
    study = load_study("s", tracking_uri=uri)
    return uri, study, _truth(client, study.experiment_id)


def _history(client, run_id: str, key: str) -> dict[int, float]:
    return {m.step: m.value for m in client.get_metric_history(run_id, key)}


def _truth(client: MlflowClient, experiment_id: str) -> dict:
    """Per run, straight from the client: arch, depth, seed, and the metric histories."""
    runs = {}
    for run in client.search_runs([experiment_id], "tags.run_kind = 'train'"):
        p, run_id = run.data.params, run.info.run_id
        keys = ("train_accuracy", "val_accuracy", "grad_first_norm", "grad_last_norm")
        runs[run_id] = {
            "arch": "residual" if p["model.residual"] == "True" else "plain",
            "depth": int(p["model.depth"]),
            "seed": int(p["seed"]),
            **{k: _history(client, run_id, k) for k in (*keys, "grad_first_last_ratio")},
            "profile": pd.read_csv(
                io.StringIO(mlflow.artifacts.load_text(f"{run.info.artifact_uri}/grad_profile.csv"))
            ),
        }
    assert len(runs) == len(DEPTHS) * 2 * len(SEEDS)
    return runs


def _by_config(truth: dict, value) -> dict[tuple[str, int], list[float]]:
    """{(arch, depth): [value(run) for each seed]}."""
    out = defaultdict(list)
    for run in truth.values():
        out[(run["arch"], run["depth"])].append(value(run))
    return out


def _geo(values) -> float:
    return float(np.exp(np.mean(np.log(values))))


def _curves_over_depth(truth, value, centre=np.mean) -> dict[str, tuple]:
    """{arch: (sorted depths, centre over seeds of value(run) per depth)}."""
    grouped = _by_config(truth, value)
    depths = sorted(set(DEPTHS))
    return {
        arch: (np.array(depths, float), np.array([centre(grouped[(arch, d)]) for d in depths]))
        for arch in ("plain", "residual")
    }


# ---------------------------------------------------------------- summary table


def test_summary_is_sorted_by_depth_ascending_within_each_net(store):
    _, study, _ = store
    table = summarise(study)
    assert len(table) == len(DEPTHS) * 2
    for arch in ("plain", "residual"):
        assert table.loc[table["arch"] == arch, "depth"].tolist() == sorted(DEPTHS)
    # one block per net: plain first, then residual
    assert table["arch"].tolist() == ["plain"] * 3 + ["residual"] * 3


def test_summary_columns_hold_their_own_configurations_numbers(store):
    _, study, truth = store
    table = summarise(study).set_index(["arch", "depth"])

    def at(key: str, step: int):
        return _by_config(truth, lambda r: r[key][step])

    columns = {  # summary column -> (its metric, the step it is read at, how seeds combine)
        "train_error_mean": ("train_accuracy", EPOCHS, lambda v: 1 - np.mean(v)),
        "train_error_sd": ("train_accuracy", EPOCHS, lambda v: np.std(v, ddof=1)),
        "val_error_mean": ("val_accuracy", EPOCHS, lambda v: 1 - np.mean(v)),
        "val_error_sd": ("val_accuracy", EPOCHS, lambda v: np.std(v, ddof=1)),
        "grad_first_init": ("grad_first_norm", 0, _geo),
        "grad_last_init": ("grad_last_norm", 0, _geo),
        "ratio_init": ("grad_first_last_ratio", 0, _geo),
        "grad_first_end": ("grad_first_norm", EPOCHS, _geo),
        "grad_last_end": ("grad_last_norm", EPOCHS, _geo),
        "ratio_end": ("grad_first_last_ratio", EPOCHS, _geo),
    }
    for (arch, depth), row in table.iterrows():
        assert row["residual"] == (arch == "residual")
        assert row["seeds"] == row["runs"] == len(SEEDS)
        for column, (metric, step, combine) in columns.items():
            expected = combine(at(metric, step)[(arch, depth)])
            assert row[column] == pytest.approx(expected, rel=1e-6), (arch, depth, column)
    # The fake plain nets train worse than their residual twins: a swap would show.
    for depth in DEPTHS:
        assert (
            table.loc[("plain", depth), "train_error_mean"]
            > table.loc[("residual", depth), "train_error_mean"]
        )


# ---------------------------------------------------------------- figures: the plotted data


@pytest.fixture
def drawn(monkeypatch, tmp_path):
    """Call a figure function and return its Figure, writing no file.

    Works whether the function returns the Figure or saves it (through
    `figures.save`) and returns the file's path.
    """

    def draw(maker, *args):
        captured = []
        monkeypatch.setattr(
            figures, "save", lambda fig, out, name: captured.append(fig) or Path(out) / name
        )
        wants_dir = "out_dir" in inspect.signature(maker).parameters
        result = maker(*args, tmp_path) if wants_dir else maker(*args)
        assert result is not None
        return result if isinstance(result, Figure) else captured[0]

    return draw


def _spec(ax):
    return ax.get_subplotspec()


def _panel_text(ax) -> str:
    """A panel's title and y label, its column's title, its row's label: what a reader sees."""
    parts = [ax.get_title(), ax.get_ylabel()]
    spec = _spec(ax)
    for other in ax.figure.axes:
        s = _spec(other)
        if s is None or other is ax:
            continue
        if s.colspan.start == spec.colspan.start and s.rowspan.start == 0:
            parts.append(other.get_title())
        if s.rowspan.start == spec.rowspan.start and s.colspan.start == 0:
            parts.append(other.get_ylabel())
    return " ".join(parts).lower()


def _panels(fig, *words: str) -> list:
    """The data panels whose text mentions every one of `words` (legend axes have no spec)."""
    found = [ax for ax in fig.axes if _spec(ax) and all(w in _panel_text(ax) for w in words)]
    assert found, (words, [_panel_text(ax) for ax in fig.axes if _spec(ax)])
    return found


def _lines(ax) -> list[tuple[np.ndarray, np.ndarray]]:
    """Data lines with at least two points (not reference lines such as y = 1)."""
    out = []
    for line in ax.get_lines():
        x, y = np.asarray(line.get_xdata(), float), np.asarray(line.get_ydata(), float)
        if len(x) >= 2 and line.get_transform() == ax.transData:
            out.append((x, y))
    return out


def _same(line, curve) -> bool:
    """Same y values, at the same x; x may be dodged sideways by up to 10% (depth axes)."""
    (x, y), (cx, cy) = line, curve
    return (
        len(x) == len(cx) and np.allclose(x, cx, rtol=0.1, atol=0) and np.allclose(y, cy, rtol=1e-6)
    )


def _assert_panels_plot(panels, expected: dict, others: dict) -> None:
    """Every line in `panels` is one of `expected`, all of `expected` are drawn, no `others`."""
    lines = [line for ax in panels for line in _lines(ax)]
    assert lines
    for line in lines:
        assert any(_same(line, c) for c in expected.values()), (line, expected)
        assert not any(_same(line, c) for c in others.values())
    for key, curve in expected.items():
        assert any(_same(line, curve) for line in lines), f"{key} not drawn"


def test_depth_vs_gradient_panels_plot_first_last_and_ratio(store, drawn):
    _, study, truth = store
    fig = drawn(figures.depth_vs_gradient, run_finals(study))
    curves = {}
    for name, key in (
        ("first", "grad_first_norm"),
        ("last", "grad_last_norm"),
        ("ratio", "grad_first_last_ratio"),
    ):
        for when, step in (("init", 0), ("end", EPOCHS)):
            for arch, c in _curves_over_depth(
                truth, lambda r, k=key, s=step: r[k][s], _geo
            ).items():
                curves[(name, when, arch)] = c
    first = {k: v for k, v in curves.items() if k[0] == "first"}
    last = {k: v for k, v in curves.items() if k[0] == "last"}
    ratio = {k: v for k, v in curves.items() if k[0] == "ratio"}
    first_panels = [ax for ax in _panels(fig, "first layer") if "last layer" not in _panel_text(ax)]
    last_panels = [ax for ax in _panels(fig, "last layer") if "first layer" not in _panel_text(ax)]
    ratio_panels = _panels(fig, "ratio")
    _assert_panels_plot(first_panels, first, {**last, **ratio})
    _assert_panels_plot(last_panels, last, {**first, **ratio})
    _assert_panels_plot(ratio_panels, ratio, {**first, **last})


def test_depth_vs_accuracy_panels_plot_training_and_validation_error(store, drawn):
    _, study, truth = store
    fig = drawn(figures.depth_vs_accuracy, run_finals(study))
    train = _curves_over_depth(truth, lambda r: 100 * (1 - r["train_accuracy"][EPOCHS]))
    val = _curves_over_depth(truth, lambda r: 100 * (1 - r["val_accuracy"][EPOCHS]))
    train_panels, val_panels = _panels(fig, "training"), _panels(fig, "validation")
    _assert_panels_plot(train_panels, train, val)
    _assert_panels_plot(val_panels, val, train)
    # The dots are the runs themselves: one per run, at (depth, its error).
    scatters = [c for ax in train_panels for c in ax.collections if isinstance(c, PathCollection)]
    dots = np.concatenate([np.asarray(c.get_offsets(), float) for c in scatters])
    per_run = np.array(
        sorted((100 * (1 - r["train_accuracy"][EPOCHS]), r["depth"]) for r in truth.values())
    )
    drawn_dots = np.array(sorted((y, x) for x, y in dots))
    assert drawn_dots.shape == per_run.shape
    np.testing.assert_allclose(drawn_dots[:, 0], per_run[:, 0], rtol=1e-6)  # each run's error
    np.testing.assert_allclose(drawn_dots[:, 1], per_run[:, 1], rtol=0.1)  # at its depth


def _curves_over_epochs(truth, arch: str, value, centre) -> dict[int, tuple]:
    """{depth: (epochs, centre over seeds of value(run, epoch))} for one net."""
    out = {}
    for depth in sorted(set(DEPTHS)):
        runs = [r for r in truth.values() if r["arch"] == arch and r["depth"] == depth]
        steps = sorted(set.intersection(*(set(value(r)) for r in runs)))
        out[depth] = (
            np.array(steps, float),
            np.array([centre([value(r)[s] for r in runs]) for s in steps]),
        )
    return out


def test_gradient_dynamics_rows_plot_each_layers_norm_per_net(store, drawn):
    _, study, truth = store
    fig = drawn(figures.gradient_dynamics, study.epochs, run_finals(study))
    for arch in ("plain", "residual"):
        first = _curves_over_epochs(truth, arch, lambda r: r["grad_first_norm"], _geo)
        last = _curves_over_epochs(truth, arch, lambda r: r["grad_last_norm"], _geo)
        assert all(c[0].tolist() == list(range(EPOCHS + 1)) for c in first.values())  # 0 = init
        _assert_panels_plot(_panels(fig, "first layer", arch), first, last)
        _assert_panels_plot(_panels(fig, "last layer", arch), last, first)


def test_training_curves_plot_each_nets_errors_per_epoch(store, drawn):
    _, study, truth = store
    fig = drawn(figures.training_curves, study.epochs, run_finals(study))
    for arch, other in (("plain", "residual"), ("residual", "plain")):

        def errors(a, key):
            return _curves_over_epochs(
                truth, a, lambda r: {s: 100 * (1 - v) for s, v in r[key].items()}, np.mean
            )

        mine = {("train", d): c for d, c in errors(arch, "train_accuracy").items()}
        mine |= {("val", d): c for d, c in errors(arch, "val_accuracy").items()}
        theirs = {("train", d): c for d, c in errors(other, "train_accuracy").items()}
        assert all(c[0].tolist() == list(range(1, EPOCHS + 1)) for c in mine.values())
        _assert_panels_plot(_panels(fig, arch), mine, theirs)


def test_gradient_profile_plots_every_layer_at_init_and_at_the_end(store, drawn):
    _, study, truth = store
    fig = drawn(figures.gradient_profile, load_grad_profiles(study), run_finals(study))
    for arch in ("plain", "residual"):
        expected = {}
        for depth in sorted(set(DEPTHS)):
            runs = [r for r in truth.values() if r["arch"] == arch and r["depth"] == depth]
            for when, epoch in (("init", 0), ("end", EPOCHS)):
                rows = [
                    r["profile"][r["profile"]["epoch"] == epoch].sort_values("layer_index")
                    for r in runs
                ]
                assert all(len(p) == depth for p in rows)  # every weight layer is in the artifact
                norms = np.exp(np.mean([np.log(p["grad_norm"].to_numpy()) for p in rows], axis=0))
                expected[(when, depth)] = (np.arange(depth, dtype=float), norms)
        _assert_panels_plot(_panels(fig, arch), expected, {})
