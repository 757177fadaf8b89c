"""Every bad configuration exits non-zero with one clear line, before any run starts."""

from __future__ import annotations

import sys

import pytest
from conftest import ROOT, TRAIN, run_train

BAD = {
    "model.depth=21": ["model.depth=21", "6n+2", "8, 14, 20"],
    "model.depth=abc": ["model.depth=abc", "Integer"],
    "data=imagenet": ["data=imagenet", "digits", "synthetic"],
    "data.name=imagenet": ["data.name=imagenet", "digits"],
    "trainer.epochs=-1": ["trainer.epochs=-1", "> 0"],
    "model.dept=8": ["model.dept", "unknown key", "model.depth"],
    "model=mlp model.depth=7": ["model.depth=7", "2n+2"],
    "model=resnet_basic model.depth=20": ["model.depth=20", "resnet_basic"],
    "model.activation=gelu": ["model.activation=gelu", "relu"],
    "model.kernel_initializer=nosuch": ["model.kernel_initializer=nosuch", "he_normal"],
    "seed=-1": ["seed=-1", "2**32 - 1"],
    "seed=4294967296": ["seed=4294967296", "2**32 - 1"],
    "data=data_schema": ["data=data_schema", "no such option", "digits"],
    "optim=optim_schema": ["optim=optim_schema", "no such option", "sgd"],
    "model=model_schema": ["model=model_schema", "no such option", "resnet_cifar"],
    "+model.foo=1": ["model.foo", "unknown key"],
    "+optim.schedule.gama=2": ["optim.schedule.gama", "unknown key", "optim.schedule.gamma"],
    "model.depth=8,14": ["model.depth=8,14", "add -m"],
    "optim.schedule.gamma=-1": ["optim.schedule.gamma=-1", "(0, 1]"],
    "data=synthetic data.num_classes=1": ["data.num_classes=1", ">= 2"],
    "model.depth=8 -m model.residual=true,false": ["-m comes after an override", "-m model"],
    "model.depth= 8": ["model.depth= 8", "a space after `=`", "write model.depth=8"],
    "model.depth=[8": ["model.depth=[8", "not an override"],
    "-m model.depth=8 model.depth= 14": ["model.depth= 14", "write model.depth=14"],
    "+experiment=depth_sweep": ["+experiment=depth_sweep", "write experiment=depth_sweep"],
    "--config-name nosuch": ["--config-name nosuch", "no nosuch.yaml in /"],
    "--config-dir /no/such/folder": ["--config-dir /no/such/folder: no folder"],
    "--config-path ../conf/config.yaml": ["--config-path", "name its file with --config-name"],
}


@pytest.fixture
def unopened_store(tmp_path, monkeypatch):
    """A store URI whose file does not exist yet: a valid config would create it."""
    path = tmp_path / "never-opened.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    return path


# What a user types, end to end, in a subprocess (2-3 s each): one of each kind in the fast
# tier, the rest with the slow tests. Every case also runs in-process, below.
END_TO_END_FAST = {"model.depth=21", "model.dept=8", "model.depth= 8", "--config-name nosuch"}


@pytest.mark.parametrize(
    "args",
    [a if a in END_TO_END_FAST else pytest.param(a, marks=pytest.mark.slow) for a in BAD],
)
def test_bad_config_is_one_clear_line(args, unopened_store):
    result = run_train(*args.split())
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ")
    for fragment in BAD[args]:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert not unopened_store.exists()  # the store was never even opened


@pytest.mark.parametrize("args", list(BAD))
def test_the_command_line_check_says_it_in_one_line(args, unopened_store, monkeypatch, capsys):
    """The entry point's check itself, in-process: every case, exit status 2, one line."""
    from resnet_exp.run.command_line import validate_or_exit

    monkeypatch.setattr(sys, "argv", [str(TRAIN), *args.split()])
    monkeypatch.chdir(ROOT)
    with pytest.raises(SystemExit) as stopped:
        validate_or_exit(every_job=False)
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("config error: "), err
    for fragment in BAD[args]:
        assert fragment in lines[0]
    assert not unopened_store.exists()


def test_bad_value_deep_in_a_sweep_stops_the_whole_sweep_before_it_starts(unopened_store):
    result = run_train("-m", "model.depth=8,21", "trainer.epochs=1")
    assert result.returncode != 0
    assert "model.depth=21" in result.stderr
    assert not unopened_store.exists()


def test_valid_config_passes_validation():
    from resnet_exp.run.command_line import validate

    assert validate(["model.depth=8"]) is None
    assert validate(["-m", "model.depth=8,20,56", "model.residual=true,false"]) is None
    assert validate(["model=mlp", "model.depth=200"]) is None
    assert validate(["model=resnet_basic", "model.depth=34"]) is None


def test_help_lists_no_schema_entries():
    result = run_train("--help")
    assert result.returncode == 0, result.stderr
    assert "resnet_cifar" in result.stdout
    assert "_schema" not in result.stdout


def test_initializer_names_are_the_keras_names_that_build_our_kernels():
    """config.py keeps the names (to fail before TensorFlow); they must be exactly Keras's."""
    import keras

    from resnet_exp.config.schema import Initializer

    public = {n for n in dir(keras.initializers) if n.islower() and not n.startswith("_")}
    usable = set()
    for name in public - {"get", "serialize", "deserialize"}:
        try:
            init = keras.initializers.get(name)
            init((3, 3, 4, 8))  # a conv kernel
            init((16, 10))  # a dense kernel
        except (KeyError, TypeError, ValueError):
            continue
        usable.add(name)
    assert {i.value for i in Initializer} == usable


def test_a_preset_sweep_is_a_sweep_even_without_m():
    from resnet_exp.run.command_line import compose_jobs

    launch = compose_jobs(["experiment=depth_sweep"])
    assert launch.multirun and len(launch.jobs) == 12
    assert len({(j.model.depth, j.model.residual) for j in launch.jobs}) == 12
    single = compose_jobs(["experiment=depth_sweep", "hydra.mode=RUN"])
    assert not single.multirun and len(single.jobs) == 1


def test_every_preset_that_sweeps_runs_as_a_sweep():
    """A preset with sweep params must set hydra.mode=MULTIRUN, or it trains one config quietly."""
    from resnet_exp.run.command_line import CONF_DIR, compose_jobs

    presets = sorted((CONF_DIR / "experiment").glob("*.yaml"))
    for preset in [p for p in presets if "sweeper:" in p.read_text()]:
        launch = compose_jobs([f"experiment={preset.stem}"])
        assert launch.multirun, f"{preset.name}: add `hydra: mode: MULTIRUN`"
