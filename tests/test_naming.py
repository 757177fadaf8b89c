"""Run names, comparison tags, applicable params and descriptions, from composed configs."""

from __future__ import annotations

from resnet_exp.config.schema import flatten
from resnet_exp.tracking.describe import applicable_params, run_description
from resnet_exp.tracking.naming import comparison_tags, run_name, sweep_name, varying_keys
from resnet_exp.tracking.store import config_hash


def test_names_lead_with_depth_and_kind(make_cfg):
    assert run_name(make_cfg("model.depth=56", "model.residual=false")) == "d56-plain"
    assert run_name(make_cfg("model.depth=56")) == "d56-residual"


def test_names_show_only_what_the_sweep_varies(make_cfg):
    varying = varying_keys(
        [
            "model.depth=8,20",
            "model.residual=true,false",
            "model.batch_norm=true,false",
            "seed=0,1,2",
            "optim.lr=0.05",
        ]
    )
    assert varying == ["model.batch_norm", "seed"]  # optim.lr is fixed: not in the name
    cfg = make_cfg("model.depth=20", "model.residual=false", "model.batch_norm=false", "seed=2")
    assert run_name(cfg) == "d20-plain"  # a single run: no sweep, nothing varies
    assert run_name(cfg, varying) == "d20-plain-nobn-s2"
    injected = make_cfg("model.depth=20", "tracking.varying=[model.batch_norm,seed]")
    assert run_name(injected) == "d20-residual-bn-s0"


def test_names_of_a_family_or_value_sweep(make_cfg):
    cfg = make_cfg("model=mlp", "model.depth=10", "optim.lr=0.02")
    assert run_name(cfg, varying_keys(["model=mlp,resnet_cifar", "optim.lr=0.02,0.1"])) == (
        "d10-residual-mlp-lr0.02"
    )


def test_tags_for_group_by_and_filters(make_cfg):
    tags = comparison_tags(make_cfg("model.depth=32", "model.residual=false"))
    assert tags == {"arch": "plain", "depth": "32", "model": "resnet_cifar", "skip_at": "none"}


def test_names_and_tags_show_where_the_skips_are(make_cfg):
    last = make_cfg("model=vgg", "model.skip_at=[-1]")
    assert run_name(last) == "d13-skip@stage5_block1"
    assert comparison_tags(last)["skip_at"] == "stage5_block1"
    two = make_cfg("model=vgg", "model.skip_at=[stage5_block1,-2]")
    assert comparison_tags(two)["arch"] == "skip@stage4_block1+stage5_block1"  # forward order
    assert comparison_tags(two)["skip_at"] == "stage4_block1,stage5_block1"
    every = make_cfg("model=vgg", "model.skip_at=[-5,-4,-3,-2,-1]")  # every block: residual
    assert run_name(every) == "d13-residual" and comparison_tags(every)["skip_at"] == "all"
    assert run_name(make_cfg("model=vgg", "model.skip_at=[]", "model.residual=true")) == (
        "d13-plain"  # skip_at wins over residual
    )
    text = run_description(last)
    assert "skip connections on stage5_block1 only" in text, text
    # a sweep over placements names them once, not again as a token
    varying = varying_keys(["model.skip_at=[],[-1]", "model.residual=true,false", "seed=0,1"])
    assert varying == ["seed"]


def test_params_are_the_settings_that_apply(make_cfg):
    cifar = applicable_params(flatten(make_cfg()))
    assert "model.width" not in cifar and "model.blocks_per_stage" not in cifar
    assert not [k for k in cifar if k.startswith("tracking.")]
    for key in ("model.depth", "model.residual", "model.batch_norm", "data.name", "seed"):
        assert key in cifar  # the analysis loader reads these
    mlp = applicable_params(flatten(make_cfg("model=mlp", "optim=adam")))
    assert "model.width" in mlp and "model.shortcut" not in mlp
    assert "optim.momentum" not in mlp


def test_resume_hash_is_over_the_whole_config_not_the_params(make_cfg):
    a, b = make_cfg("model.width=64"), make_cfg("model.width=128")
    assert applicable_params(flatten(a)) == applicable_params(flatten(b))
    assert config_hash(flatten(a)) != config_hash(flatten(b))  # as before: nothing lost


def test_run_description_is_one_line(make_cfg):
    text = run_description(make_cfg("model.depth=56", "model.residual=false"))
    assert "\n" not in text
    assert text.startswith("`d56-plain`: plain resnet_cifar of depth 56 (no skip connections")


def test_a_sweeps_parent_is_named_after_the_study_and_what_it_sweeps(make_cfg):
    jobs = [
        make_cfg(f"model.depth={d}", f"model.residual={r}")
        for d in (56, 8, 20)
        for r in ("false", "true")
    ]
    assert sweep_name("depth_sweep", jobs) == "depth_sweep: d8-56 x plain|residual"
    assert sweep_name("one", jobs[:1]) == "one: d56 x plain"
