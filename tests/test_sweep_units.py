"""The sweep callback's pure parts: thread shares, sweep identity, sweep expansion."""

from __future__ import annotations

from collections import Counter

import pytest
from omegaconf import OmegaConf

from resnet_exp.run.command_line import (
    CommandLineError,
    compose_jobs,
    expand_sweeps,
    job_overrides,
)
from resnet_exp.run.sweep import job_threads, sweep_key, sweep_overrides, thread_share
from resnet_exp.tracking.naming import arch
from resnet_exp.tracking.store import config_hash


def _config(launcher: dict, threads: int = 0):
    return OmegaConf.create(
        {
            "trainer": {"threads": threads},
            "hydra": {
                "launcher": launcher,
                "sweeper": {"params": {"model.depth": "8,20"}},
                "overrides": {"task": ["seed=0,1", "tracking.parent_run_id=abc"]},
            },
        }
    )


def test_thread_share_never_oversubscribes():
    assert thread_share(2, cores=2) == 1
    assert thread_share(4, cores=2) == 1
    assert thread_share(1, cores=8) == 8
    assert thread_share(3, cores=8) == 2
    assert thread_share(0, cores=4) == 4


def test_job_threads_per_launcher(monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 8)
    joblib = {"_target_": "hydra_plugins.hydra_joblib_launcher.joblib_launcher.JoblibLauncher"}
    assert job_threads(_config({**joblib, "n_jobs": 4})) == 2  # 8 cores / 4 jobs
    assert job_threads(_config({**joblib, "n_jobs": 3})) == 2
    assert job_threads(_config({**joblib, "n_jobs": -1})) == 1  # one job per core
    assert job_threads(_config({**joblib, "n_jobs": 1})) is None  # sequential: TF's default
    slurm = {"_target_": "x.SlurmLauncher", "cpus_per_task": 6}
    assert job_threads(_config(slurm)) == 6
    assert job_threads(_config({"_target_": "x.BasicLauncher"})) is None
    assert job_threads(_config({**joblib, "n_jobs": 4}, threads=3)) is None  # the user chose


def test_sweep_identity_ignores_injected_overrides_and_order():
    config = _config({"_target_": "x.BasicLauncher"})
    overrides = sweep_overrides(config)
    assert overrides == ["model.depth=8,20", "seed=0,1"]
    assert sweep_key("e", overrides) == sweep_key("e", list(reversed(overrides)))
    assert sweep_key("e", overrides) != sweep_key("other", overrides)


def test_expand_sweeps_is_the_cartesian_product():
    jobs = expand_sweeps(["model.depth=8,20", "model.residual=true,false", "seed=1"])
    assert len(jobs) == 4
    assert ["model.depth=8", "model.residual=True", "seed=1"] in jobs


def test_config_hash_ignores_where_a_run_is_logged_but_not_what_it_computes():
    base = {"model.depth": 8, "seed": 0, "tracking.uri": "a", "trainer.threads": 1}
    assert config_hash(base) == config_hash({**base, "tracking.uri": "b", "trainer.threads": 2})
    assert config_hash(base) != config_hash({**base, "seed": 1})


def test_exclude_drops_the_combinations_it_names_and_nothing_else():
    rules = [{"model.batch_norm": True, "model.residual_init": "fixup"}, {"model.skip_at": [-1]}]
    jobs = job_overrides(
        ["model.batch_norm=true,false", "model.residual_init=standard,fixup"],
        {"model.skip_at": "[],[-1]"},
        rules,
    )
    assert [[o.lower() for o in job] for job in jobs] == [  # Hydra spells true as True
        ["model.batch_norm=true", "model.residual_init=standard", "model.skip_at=[]"],
        ["model.batch_norm=false", "model.residual_init=standard", "model.skip_at=[]"],
        ["model.batch_norm=false", "model.residual_init=fixup", "model.skip_at=[]"],
    ]
    with pytest.raises(CommandLineError, match="leaves no job"):
        job_overrides(["model.batch_norm=true"], None, [{"model.batch_norm": True}])


def test_the_bn_ablation_preset_runs_six_nets_per_depth():
    jobs = compose_jobs(["-m", "experiment=bn_ablation"]).jobs
    kinds = Counter((int(c.model.depth), bool(c.model.batch_norm), arch(c.model)) for c in jobs)
    assert set(kinds.values()) == {1} and len(jobs) == 24
    assert {(bn, a) for _, bn, a in kinds} == {
        (True, "plain"),
        (True, "residual"),
        (False, "plain"),
        (False, "residual"),
        (False, "residual-skipinit"),
        (False, "residual-fixup"),
    }
