"""A fresh process skips clear_session (nothing to clear); a used one still clears."""

from __future__ import annotations

import subprocess
import sys

import keras
from conftest import ROOT
from specs import build

from resnet_exp.compat import keras_untouched
from resnet_exp.training.fit import configure_runtime

FRESH = """
import keras
from resnet_exp.compat import keras_untouched
from resnet_exp.training.fit import configure_runtime
calls = []
keras.backend.clear_session = lambda *a, **k: calls.append(1)
before = keras_untouched()
configure_runtime(threads=0, deterministic=False, seed=0)
keras.layers.Dense(2)
print(before, len(calls), keras_untouched())
"""


def test_a_fresh_process_has_nothing_to_clear():
    out = subprocess.run(
        [sys.executable, "-c", FRESH],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={"PYTHONPATH": str(ROOT), "TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"},
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.split() == ["True", "0", "False"]  # skipped; a layer then marks it used


def test_a_used_process_is_cleared_and_layer_names_restart():
    build("resnet_cifar", 8, input_shape=(8, 8, 1), num_classes=4, seed=0)
    assert not keras_untouched()
    configure_runtime(threads=0, deterministic=False, seed=0)
    assert keras.layers.Dense(2).name == "dense"  # the name counters were reset


def test_validation_reuses_the_first_composition_exactly():
    """The first job's config, taken from the composition with Hydra's node, is compose()'s."""
    from hydra import compose, initialize_config_dir

    from resnet_exp.config.schema import register_configs
    from resnet_exp.run.command_line import compose_jobs

    argv = ["experiment=depth_sweep", "model.depth=20", "model.residual=false", "seed=3"]
    launch = compose_jobs(argv)
    assert launch is not None and len(launch.jobs) == 1 and launch.multirun
    register_configs()
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        expected = compose("config", overrides=argv)
    assert "hydra" not in launch.jobs[0]
    assert launch.jobs[0] == expected
