"""The questions issue 16's studies ask, answered from numbers: skip or BN, one placed skip.

The two report sections are checked on summary tables written by hand, so each verdict
is known; the loader, summary and figures on a fake study in a real MLflow store whose
runs carry the `arch` tag of every net kind (plain, a placed skip, residual and its inits).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from conftest import assert_tables_fit_mlflows_viewer
from fake_study import log_run

from resnet_exp.analysis import figures, load_study
from resnet_exp.analysis.lesion_report import LesionData
from resnet_exp.analysis.placement import placed_blocks, placement_section
from resnet_exp.analysis.skip_or_bn import skip_or_bn_section
from resnet_exp.analysis.summary import arch_order, run_finals, summarise

KINDS = ["residual-fixup", "plain", "residual", "skip@stage3_block1", "residual-skipinit"]


def test_net_kinds_sort_plain_placed_residual_then_inits():
    assert arch_order(KINDS) == [
        "plain",
        "skip@stage3_block1",
        "residual",
        "residual-skipinit",
        "residual-fixup",
    ]
    assert placed_blocks("skip@stage4_block1+stage5_block1-fixup") == [
        "stage4_block1",
        "stage5_block1",
    ]
    assert placed_blocks("residual") == []


def _row(bn, arch, depth, train, val=None, diverged=0, runs=1, ratio=1.0, sd=np.nan):
    return {
        "model": "resnet_cifar",
        "batch_norm": bn,
        "depth": depth,
        "arch": arch,
        "train_error_mean": train / 100,
        "train_error_sd": sd / 100,
        "val_error_mean": (train if val is None else val) / 100,
        "val_error_sd": np.nan,
        "diverged": diverged,
        "runs": runs,
        "seeds": runs,
        "ratio_init": ratio,
    }


def _ablation(fixup_val_56: float) -> pd.DataFrame:
    """Skip, not BN: plain+BN degrades, plain without BN ends at chance, residual without BN
    diverges from the standard init but holds under SkipInit and Fixup."""
    rows = []
    for depth, plain_bn in ((8, 2.0), (56, 40.0)):
        rows += [
            _row(True, "plain", depth, plain_bn),
            _row(True, "residual", depth, 1.0, val=5.0),
            _row(False, "plain", depth, 30.0 if depth == 8 else 89.5),
            _row(False, "residual", depth, 3.0 if depth == 8 else 50.0, diverged=int(depth > 8)),
            _row(False, "residual-skipinit", depth, 1.5, val=6.0),
            _row(False, "residual-fixup", depth, 1.2, val=fixup_val_56 if depth == 56 else 5.0),
        ]
    return pd.DataFrame(rows)


def test_skip_or_bn_says_it_is_the_skip_when_the_numbers_do():
    lines = skip_or_bn_section(_ablation(fixup_val_56=5.5), chance=90.0)
    assert assert_tables_fit_mlflows_viewer("\n".join(lines)) == 1
    text = "\n".join(lines)
    assert lines[0] == "## Skip or batch norm?"
    assert "plain nets with BN train worse with depth (2.0% at depth 8 to 40.0% at" in text
    assert "hold up with depth in residual, no BN, SkipInit: 1.5% at depth 8" in text
    assert "; residual, no BN, Fixup: 1.2% at depth 8 to 1.2% at depth 56" in text
    assert "standard initialisation diverge (runs diverged at depth 56)" in text
    assert "it is the skip that makes depth trainable, not batch norm" in text
    assert "plain nets end at chance (89.5% training error at depth 56, chance level)" in text
    # the grid: one row per net, 'diverged' where every run did
    grid = [line for line in lines if line.startswith("| residual, no BN |")]
    assert grid == ["| residual, no BN | 3.0 | diverged | 1 to 1 |"]
    assert "The data agree: the two are within 2.0 points" in text  # Fixup 5.5%, BN 5.0%


def test_skip_or_bn_says_where_the_data_disagree_with_fixup():
    text = "\n".join(skip_or_bn_section(_ablation(fixup_val_56=12.0), chance=90.0))
    assert "Fixup reaches 12.0% validation error against 5.0% with BN: a gap of +7.0" in text
    assert "The data disagree: Fixup is worse by more than 2.0 points" in text
    text = "\n".join(skip_or_bn_section(_ablation(fixup_val_56=1.0), chance=90.0))
    assert "The data agree and go further: Fixup is better by more than 2.0 points" in text


def test_skip_or_bn_counts_diverged_runs_where_only_some_did():
    table = _ablation(5.0)
    table.loc[(~table["batch_norm"]) & (table["arch"] == "residual"), "runs"] = 3
    table.loc[(~table["batch_norm"]) & (table["arch"] == "residual"), "diverged"] = [0, 3]
    table = pd.concat(
        [table, pd.DataFrame([_row(False, "residual", 20, 90.1, diverged=1, runs=3)])]
    )
    text = "\n".join(skip_or_bn_section(table, chance=90.0))
    assert "runs diverged at depth 20 (1 of 3), 56)" in text
    assert "| residual, no BN | 3.0 | 90.1 (1 diverged) | diverged |" in text


def test_skip_or_bn_says_when_the_seeds_cannot_test_the_papers_claim():
    table = _ablation(fixup_val_56=2.0).assign(runs=3, seeds=3)
    bn = table["batch_norm"] & (table["arch"] == "residual")
    table.loc[bn, ["val_error_mean", "val_error_sd"]] = [0.235, 0.294]
    table.loc[table["arch"] == "residual-fixup", "val_error_sd"] = 0.002
    text = "\n".join(skip_or_bn_section(table, chance=90.0))
    assert "These seeds cannot test the claim: 2 sd between them is 41.6 points" in text


def test_skip_or_bn_says_when_batch_norm_alone_is_enough():
    table = _ablation(5.0)
    table.loc[table["batch_norm"] & (table["arch"] == "plain"), "train_error_mean"] = 0.02
    text = "\n".join(skip_or_bn_section(table, chance=90.0))
    assert "Batch norm alone keeps depth trainable here" in text
    assert "either one keeps depth trainable" in text and "it is the skip" not in text


def test_skip_or_bn_keeps_quiet_when_batch_norm_does_not_vary():
    table = _ablation(5.0)
    assert skip_or_bn_section(table[table["batch_norm"]].assign(batch_norm=True), 90.0) == []


def _vgg_table() -> pd.DataFrame:
    rows = [
        _row(False, "plain", 10, 10.0),
        _row(False, "plain", 13, 90.0),
        _row(False, "skip@stage5_block1", 13, 2.0),
        _row(False, "residual", 13, 30.0),
    ]
    return pd.DataFrame(rows).drop(columns="batch_norm")


def _lesions(drop_skipped: float, ratio_skipped: float) -> LesionData:
    """Lesion and branch rows of the three depth-13 nets, for blocks 4 and 5 of stage 4/5."""
    single, branches = [], []
    for arch, drop5, ratio5 in (
        ("plain", 0.80, 1.5),
        ("skip@stage5_block1", drop_skipped, ratio_skipped),
        ("residual", 0.02, 0.3),
    ):
        for block, drop, ratio in (("stage4_block1", 0.5, 2.0), ("stage5_block1", drop5, ratio5)):
            run = {"run_id": arch, "condition": "", "depth": 13, "arch": arch, "block": block}
            single.append({**run, "drop": drop, "downsampling": False, "accuracy": 0.5})
            for epoch, r in ((0, 1.0), (10, ratio)):
                branches.append({**run, "epoch": epoch, "ratio": r})
    return LesionData(pd.DataFrame(single), pd.DataFrame(), pd.DataFrame(branches), [""], 10)


def test_placement_says_how_much_of_depths_cost_one_skip_wins_back():
    text = "\n".join(placement_section(_vgg_table(), _lesions(0.01, 0.2)))
    assert "Depth cost the plain nets +80.0 points of training error" in text
    assert "the one skip wins back all of it (110%)" in text
    assert "At depth 13 the skip changes it by -88.0 points (one seed each" in text
    assert "with a skip on every block, 30.0%" in text
    assert "deleting it costs 1.0 points" in text and "it falls back to its shortcut" in text
    assert "in the plain net, deleting stage5_block1 costs 80.0 points" in text


def test_placement_judges_cost_and_gain_against_the_spread_between_seeds():
    noisy = [  # seed_vgg13's three seeds at lr 0.05: the spread swamps the cost
        _row(False, "plain", 10, 24.8, runs=3, sd=19.6),
        _row(False, "plain", 13, 68.1, runs=3, sd=37.9),
        _row(False, "skip@stage5_block1", 13, 24.5, runs=3, sd=24.6),
    ]
    text = "\n".join(placement_section(pd.DataFrame(noisy).drop(columns="batch_norm"), None))
    assert "not more than 2 sd between seeds (30.2): not a cost we can claim" in text
    assert "wins back" not in text
    assert "the skip changes it by -43.6 points (not more than 2 sd between seeds, 31.9)" in text
    clear = [  # a clear cost, a gain inside the noise
        _row(False, "plain", 10, 5.0, runs=3, sd=1.0),
        _row(False, "plain", 13, 60.0, runs=3, sd=2.0),
        _row(False, "skip@stage5_block1", 13, 40.0, runs=3, sd=30.0),
    ]
    text = "\n".join(placement_section(pd.DataFrame(clear).drop(columns="batch_norm"), None))
    assert "the one skip wins back 36% of it" in text
    assert "changes it by -20.0 points (not more than 2 sd between seeds, 21.3)" in text


def test_placement_says_when_the_skipped_block_still_transforms():
    text = "\n".join(placement_section(_vgg_table(), _lesions(0.60, 1.4)))
    assert "deleting it costs 60.0 points" in text and "it still transforms" in text
    # cheap to delete, but its branch is no smaller than its input: not a fall-back
    text = "\n".join(placement_section(_vgg_table(), _lesions(0.03, 1.4)))
    assert "deleting it costs 3.0 points" in text and "it mixes both" in text
    # a small branch, but deleting the block costs 10 points: used, not fallen back
    text = "\n".join(placement_section(_vgg_table(), _lesions(0.10, 0.5)))
    assert "deleting it costs 10.0 points" in text and "it mixes both" in text
    text = "\n".join(placement_section(_vgg_table(), None))
    assert "whether the skipped block falls back is not measured" in text


@pytest.fixture(scope="module")
def kinds_study(new_store):
    tmp, uri, client = new_store("kinds")
    exp = client.create_experiment("kinds", artifact_location=f"{tmp}/artifacts")
    for depth in (8, 20):
        for kind in KINDS:
            log_run(
                client,
                exp,
                depth=depth,
                residual=kind != "plain",
                batch_norm=kind in ("plain", "residual"),
                kind=kind,
                epochs=2,
                profile=False,
            )
    return load_study("kinds", tracking_uri=uri)


def test_the_loader_reads_each_runs_kind_and_the_figures_draw_each_alike_nowhere(kinds_study):
    assert arch_order(kinds_study.runs["arch"]) == arch_order(KINDS)
    table = summarise(kinds_study)
    assert set(table["arch"]) == set(KINDS) and len(table) == 2 * len(KINDS)
    fig = figures.depth_vs_accuracy(run_finals(kinds_study))
    seen = {}
    for ax in fig.axes:
        for line in ax.get_lines():
            if line.get_gid() in KINDS:
                seen.setdefault(line.get_gid(), set()).add((line.get_color(), line.get_marker()))
    assert set(seen) == set(KINDS)
    styles = [next(iter(s)) for s in seen.values()]
    assert all(len(s) == 1 for s in seen.values()) and len(set(styles)) == len(KINDS)
    legend = [t.get_text() for t in fig.legends[0].get_texts()]
    assert [k for k in legend if k in KINDS] == arch_order(KINDS)
