"""The report's computed sentences and tables, against hand-made stores whose numbers make
the right answer obvious.

The depth study: plain nets' training error rises from 2% to 50% with depth while their
validation error stays at 30% (a verdict read from the wrong column says "flat"), and
residual nets' training error stays at 3% while their validation error rises (a wrong
column says "rise"). Three seeds with errors m - d, m, m + d make the sd between seeds
exactly d (sample sd, ddof=1; the population sd would be 0.82 d), and the two ends' sds
(1 and 10 points) pool to sqrt((1 + 100) / 2) = 7.1 points (their plain mean: 5.5).
"""

from __future__ import annotations

import math

import pandas as pd
import pytest
from fake_study import _params
from mlflow.entities import Metric, Param, RunTag

from resnet_exp.analysis import load_study, run_finals, summarise
from resnet_exp.analysis.report import write_report

EPOCHS = 2
# (depth, residual) -> per-seed final (train error %, val error %); init gradients below
DEPTH_STUDY = {
    (8, False): [(1, 30), (2, 30), (3, 30)],
    (20, False): [(10, 30), (10, 30), (10, 30)],
    (56, False): [(40, 30), (50, 30), (60, 30)],
    (8, True): [(2, 5), (3, 5), (4, 5)],
    (20, True): [(2, 30), (3, 30), (4, 30)],
    (56, True): [(2, 60), (3, 60), (4, 60)],
}
# first/last gradient at initialisation: plain explodes x100 with depth, residual stays
INIT_GRADIENTS = {(8, False): (0.5, 1.0), (20, False): (5.0, 1.0), (56, False): (50.0, 1.0)}
INIT_GRADIENTS |= {(d, True): (0.3, 1.0) for d in (8, 20, 56)}


def log_exact_run(
    client,
    experiment_id: str,
    *,
    depth: int,
    residual: bool,
    seed: int,
    train_error: float,
    val_error: float,
    test_error: float | None = None,
    init_gradients: tuple[float, float] = (1.0, 1.0),
    extra_metrics: dict[str, float] | None = None,
) -> str:
    """A training run in the project's MLflow contract with exactly these final numbers."""
    arch = "res" if residual else "plain"
    run = client.create_run(
        experiment_id,
        run_name=f"d{depth}-{arch}-s{seed}",
        tags={"run_kind": "train", "config_hash": f"{depth}{arch}{seed}", "diverged": "false"},
    )
    run_id = run.info.run_id
    params = _params("resnet_cifar", depth, residual, True, seed, EPOCHS, "digits")
    first, last = init_gradients
    metrics = [
        Metric("grad_first_norm", first, 0, 0),
        Metric("grad_last_norm", last, 0, 0),
        Metric("grad_first_last_ratio", first / last, 0, 0),
    ]
    for epoch in range(1, EPOCHS + 1):
        metrics += [
            Metric("train_accuracy", 1 - train_error / 100, 0, epoch),
            Metric("val_accuracy", 1 - val_error / 100, 0, epoch),
            Metric("grad_first_norm", first / 2, 0, epoch),
            Metric("grad_last_norm", last / 2, 0, epoch),
        ]
    if test_error is not None:
        metrics.append(Metric("test_accuracy", 1 - test_error / 100, 0, EPOCHS))
    metrics += [Metric(k, v, 0, EPOCHS) for k, v in (extra_metrics or {}).items()]
    client.log_batch(
        run_id,
        metrics=metrics,
        params=[Param(k, v) for k, v in params.items()][:100],
        tags=[RunTag("mlflow.runName", run.info.run_name)],
    )
    client.set_terminated(run_id, "FINISHED")
    return run_id


def _report(uri: str, experiment: str, out) -> tuple[str, pd.DataFrame]:
    study = load_study(experiment, tracking_uri=uri)
    table = summarise(study)
    path = write_report(study, table, run_finals(study), {}, out, notes=[])
    return path.read_text(), table


@pytest.fixture(scope="module")
def depth_report(new_store, tmp_path_factory) -> tuple[str, pd.DataFrame]:
    _, uri, client = new_store("report-numbers")
    experiment_id = client.create_experiment("depth")
    for (depth, residual), seeds in DEPTH_STUDY.items():
        for seed, (train, val) in enumerate(seeds):
            log_exact_run(
                client,
                experiment_id,
                depth=depth,
                residual=residual,
                seed=seed,
                train_error=train,
                val_error=val,
                init_gradients=INIT_GRADIENTS[(depth, residual)],
            )
    return _report(uri, "depth", tmp_path_factory.mktemp("report"))


def test_error_trends_are_judged_on_training_error(depth_report):
    text, _ = depth_report
    assert (
        "Plain nets: final training error 2.0 ± 1.0% at depth 8, 50.0 ± 10.0% at depth 56 "
        "(mean ± sd over 3 seeds; rank correlation with depth +1.00): a rise of 48.0 points "
        "(sd between seeds 7.1), more than 2 sd between seeds." in text
    )
    assert (
        "Residual nets: final training error 3.0 ± 1.0% at depth 8, 3.0 ± 1.0% at depth 56" in text
    )
    assert "within 1 point (+0.0 points (sd between seeds 1.0)): no change with depth" in text
    assert "So here deeper plain nets train worse (+48.0 points from depth 8 to 56" in text
    assert "while deeper residual nets do not." in text


def test_the_plain_residual_gap_is_in_training_error_with_the_pooled_spread(depth_report):
    text, _ = depth_report
    assert (
        "At depth 56, the deepest both have, plain nets reach 50.0 ± 10.0% training error and "
        "residual nets 3.0 ± 1.0%: a gap of +47.0 points, more than 2 sd between seeds (7.1)."
        in text
    )


def test_the_table_shows_mean_and_sample_sd_over_seeds(depth_report):
    text, table = depth_report
    row = table[(table["depth"] == 56) & (table["arch"] == "plain")].iloc[0]
    assert row["train_error_mean"] == pytest.approx(0.50)
    assert row["train_error_sd"] == pytest.approx(0.10)  # ddof=1 of 40, 50, 60 %
    assert row["val_error_sd"] == pytest.approx(0.0)
    assert row["seeds"] == 3 and row["runs"] == 3
    line = next(x for x in text.splitlines() if x.startswith("| 56 | plain |"))
    assert "| 50.0 ± 10.0 | 30.0 ± 0.0 |" in line and line.endswith("| 3 |")  # runs
    assert math.isclose(table["ratio_init"][(table["depth"] == 56).to_numpy()].max(), 50.0)


def test_the_table_fits_mlflows_markdown_viewer(depth_report):
    """MLflow 3.17's viewer gives every column the same width and cuts a header that does not
    fit ("train er…"): at about 900 px, 12 columns leave 59 px of text each, about 9 of its
    13 px semibold characters (measured in Chromium by tests/test_ui_browser.py). Short
    headers, a legend under the table for them, the shared model said once."""
    text, _ = depth_report
    lines = text.split("## Summary")[1].splitlines()
    head = next(line for line in lines if line.startswith("| "))
    headers = [h.strip() for h in head.strip("|").split("|")]
    assert headers == ["depth", "net", "train %", "val %", "first, init", "last, init",
                       "ratio, init", "first, end", "last, end", "ratio, end", "runs"]  # fmt: skip
    assert len(headers) <= 12 and max(map(len, headers)) <= 11
    legend = next(line for line in lines if line.startswith("_train %_"))
    for word in ("_first_", "_last_", "_init_", "_end_", "_ratio_", "_runs_", "model resnet_cifar"):
        assert word in legend


def test_gradient_ratio_trends_come_from_the_ratio_at_initialisation(depth_report):
    text, _ = depth_report
    assert (
        "Plain nets at initialisation: the first/last gradient ratio goes from 0.5 at depth 8 "
        "to 50 at depth 56" in text
    )
    assert "an exploding trend" in text
    assert "Residual nets at initialisation: the first/last gradient ratio goes from 0.3" in text


# ---------------------------------------------------------------- He et al. 2016, Table 6

# CIFAR-10 test error (%) of the residual nets, He et al. 2016, Table 6 (typed from the paper)
PAPER = {20: "8.75", 32: "7.51", 44: "7.17", 56: "6.97", 110: "6.43"}


def test_the_papers_numbers_stand_beside_ours_at_the_right_depths(new_store, tmp_path):
    _, uri, client = new_store("he2016")
    experiment_id = client.create_experiment("he2016_cifar10")
    ours = {(20, True): 8.0, (32, True): 7.0, (56, True): 6.5, (20, False): 9.0, (56, False): 12.0}
    for (depth, residual), test_error in ours.items():
        log_exact_run(
            client,
            experiment_id,
            depth=depth,
            residual=residual,
            seed=0,
            train_error=1,
            val_error=5,
            test_error=test_error,
        )
    text, _ = _report(uri, "he2016_cifar10", tmp_path)
    rows = {
        int(line.split("|")[1]): [c.strip() for c in line.split("|")[2:5]]
        for line in text.split("## Beside He et al. 2016")[1].split("\n## ")[0].splitlines()
        if line.startswith("| ") and line.split("|")[1].strip().isdigit()
    }
    assert {d: r[0] for d, r in rows.items()} == PAPER
    assert rows[20][1:] == ["8.00 (1 seeds)", "9.00 (1 seeds)"]
    assert rows[32][1:] == ["7.00 (1 seeds)", "not run"]
    assert rows[44][1:] == ["not run", "not run"]
    assert rows[56][1:] == ["6.50 (1 seeds)", "12.00 (1 seeds)"]


# ---------------------------------------------------------------- the lesion section

# per (depth 14) net: intact accuracy, drop per block (same-shape blocks, then the two
# downsampling blocks stage2_block1 and stage3_block1), accuracy with k=2 blocks deleted
BLOCKS = [
    ("stage1_block1", 1, False),
    ("stage1_block2", 1, False),
    ("stage2_block1", 2, True),
    ("stage2_block2", 2, False),
    ("stage3_block1", 3, True),
    ("stage3_block2", 3, False),
]
LESIONS = {
    False: (0.90, [0.10, 0.60, 0.05, 0.30, 0.05, 0.20], [0.20, 0.40]),  # worst: stage1_block2
    True: (0.95, [0.01, 0.02, 0.10, 0.04, 0.10, 0.03], [0.80, 0.90]),  # worst: stage2_block2
}


def _log_lesions(client, run_id: str, intact: float, drops: list[float], k2: list[float]) -> None:
    single = ["block_index,block,stage,downsampling,accuracy,drop"]
    for index, ((name, stage, down), drop) in enumerate(zip(BLOCKS, drops, strict=True), 1):
        single.append(f"{index},{name},{stage},{down},{intact - drop},{drop}")
    multi = ["k,draw,blocks,accuracy,drop"]
    multi += [f"2,{i},stage1_block1;stage1_block2,{a},{intact - a}" for i, a in enumerate(k2)]
    client.log_text(run_id, "\n".join(single) + "\n", "lesion.csv")
    client.log_text(run_id, "\n".join(multi) + "\n", "lesion_k.csv")


def test_lesion_section_without_branch_magnitudes(new_store, tmp_path, monkeypatch):
    """Lesions logged, branch magnitudes not: make_figures reports the lesions (it used to
    crash in load_lesions) with each net's intact accuracy, mean and worst drop."""
    from resnet_exp.analysis.command import main

    _, uri, client = new_store("lesions-only")
    experiment_id = client.create_experiment("lesions")
    for residual, (intact, drops, k2) in LESIONS.items():
        same = [d for d, (_, _, down) in zip(drops, BLOCKS, strict=True) if not down]
        run_id = log_exact_run(
            client,
            experiment_id,
            depth=14,
            residual=residual,
            seed=0,
            train_error=1,
            val_error=100 * (1 - intact),
            extra_metrics={
                "lesion_intact_accuracy": intact,
                "lesion_mean_drop": sum(same) / len(same),
                "lesion_max_drop": max(same),
            },
        )
        _log_lesions(client, run_id, intact, drops, k2)
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "report"
    args = ["--experiment", "lesions", "--tracking-uri", uri, "--out", str(out), "--no-log"]
    assert main(args) == 0
    text = (out / "report.md").read_text()
    assert (
        "Plain nets (depth 14): deleting one same-shape block costs 30.0 points of validation "
        "accuracy on average (worst block 60.0 points), from an intact 90.0%; the lesioned nets "
        "average 60.0%" in text
    )
    assert (
        "Residual nets (depth 14): deleting one same-shape block costs 2.5 points of validation "
        "accuracy on average (worst block 4.0 points), from an intact 95.0%" in text
    )
    assert "Deleting a downsampling block costs 5.0 points" in text
    assert "Deleting a downsampling block costs 10.0 points" in text
    assert "(k = 2) accuracy is 30.0%" in text and "(k = 2) accuracy is 85.0%" in text
    section = text.split("## Block lesions")[1].split("\n## ")[0]  # not the summary's rows
    table = {line.split("|")[2].strip(): line for line in section.splitlines() if "| 14 |" in line}
    assert "| stage1_block2 |" in table["plain"] and "| 90.0% |" in table["plain"]
    assert "| stage2_block2 |" in table["residual"] and "| 95.0% |" in table["residual"]
