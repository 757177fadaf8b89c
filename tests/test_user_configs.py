"""A user's own configs, added the ways Hydra documents, run as Hydra composes them, and a
config file PyYAML cannot read is one line naming file, line and column (issue 21).

The check before Hydra starts (`run.command_line`) must compose exactly what `@hydra.main`
composes: each form is composed by the check in this process and by the entry point
itself (`--cfg job`, which the check leaves to Hydra), and the two must be equal.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, TRAIN, run_train, runs_of
from omegaconf import OmegaConf

from resnet_exp.run.command_line import (
    CONF_DIR,
    ENTRY,
    ENTRY_CONFIG_NAME,
    ENTRY_CONFIG_PATH,
    compose_jobs,
    validate,
)

# A tiny study preset of one's own: a few seconds of training on synthetic data.
PRESET = """\
# @package _global_
defaults:
  - override /data: synthetic
data:
  num_samples: 96
model:
  depth: 14
  residual: false
trainer:
  epochs: 1
  batch_size: 32
gradients:
  probe_size: 16
tracking:
  experiment: mine
"""
BROKEN = """\
# @package _global_
model:
  depth: [14
trainer:
  epochs: 1
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text))
    return path


@pytest.fixture
def mine(tmp_path) -> Path:
    """A user's config folder with one experiment preset, `experiment=mine`."""
    folder = tmp_path / "my-configs"
    write(folder / "experiment" / "mine.yaml", PRESET)
    return folder


@pytest.fixture
def primaries(tmp_path, mine) -> Path:
    """A folder of primary configs of one's own: `extends` builds on the project's config
    and finds the presets through its own `hydra.searchpath`; `standalone` lists its own
    defaults, without `experiment`."""
    folder = tmp_path / "my-primaries"
    write(
        folder / "extends.yaml",
        f"""\
        defaults:
          - config
          - _self_
        seed: 7
        hydra:
          searchpath:
            - file://{mine}
        """,
    )
    write(
        folder / "standalone.yaml",
        f"""\
        defaults:
          - config_schema
          - _self_
          - model: resnet_cifar
          - data: digits
          - optim: sgd
          - override hydra/sweeper: study
        seed: 3
        hydra:
          searchpath:
            - file://{mine}
        """,
    )
    return folder


@pytest.fixture
def unopened_store(tmp_path, monkeypatch) -> Path:
    """A store URI whose file does not exist yet: a valid config would create it."""
    path = tmp_path / "never-opened.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{path}")
    return path


def composed_by_hydra(*args: str) -> dict:
    """The job's config as the entry point's `@hydra.main` composes it (`--cfg job`)."""
    result = run_train(*args, "--cfg", "job")
    assert result.returncode == 0, result.stderr
    return yaml.safe_load(result.stdout)


def composed_by_check(*args: str) -> dict:
    """The same job's config as the check before Hydra composes it."""
    launch = compose_jobs(list(args))
    assert launch is not None and len(launch.jobs) == 1
    return OmegaConf.to_container(launch.jobs[0])


def one_line_error(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ")
    assert "Traceback" not in result.stderr + result.stdout
    return lines[0].removeprefix("config error: ")


FORMS = {
    "--config-dir": ["--config-dir", "{mine}", "experiment=mine"],
    "-cd=": ["-cd={mine}", "experiment=mine"],
    "hydra.searchpath": ["hydra.searchpath=[file://{mine}]", "experiment=mine"],
    "searchpath in a primary config": ["-cd", "{primaries}", "-cn", "extends", "experiment=mine"],
    "+experiment, primary without it": [
        "--config-dir",
        "{primaries}",
        "--config-name",
        "standalone",
        "+experiment=mine",
    ],
}


def form_args(form: str, mine: Path, primaries: Path) -> list[str]:
    return [arg.format(mine=mine, primaries=primaries) for arg in FORMS[form]]


@pytest.mark.slow  # the entry point in a subprocess, per case
@pytest.mark.parametrize("form", list(FORMS))
def test_the_check_composes_a_users_preset_exactly_as_hydra_does(form, mine, primaries):
    args = form_args(form, mine, primaries)
    checked = composed_by_check(*args)
    assert checked == composed_by_hydra(*args)
    assert checked["model"]["depth"] == 14 and checked["model"]["residual"] is False
    assert checked["data"]["name"] == "synthetic"
    assert checked["tracking"]["experiment"] == "mine"
    if "-cn" in args or "--config-name" in args:  # the primary's own values
        assert checked["seed"] == (7 if "extends" in args else 3)


@pytest.mark.slow
@pytest.mark.parametrize("form", ["--config-dir", "hydra.searchpath"])
def test_a_users_preset_trains_and_mlflow_holds_its_values(form, mine, primaries, client):
    result = run_train(*form_args(form, mine, primaries), cwd=Path.cwd())
    assert result.returncode == 0, result.stderr
    (run,) = runs_of(client, "mine")
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert (params["model.depth"], params["model.residual"]) == ("14", "False")
    assert (params["data.name"], params["data.num_samples"]) == ("synthetic", "96")
    assert params["trainer.epochs"] == "1"


def test_each_defaults_list_gets_the_spelling_hydra_documents(mine, primaries):
    """conf/config.yaml lists `experiment: null`: `experiment=NAME` chooses a preset and
    `+experiment=` is refused by Hydra 1.3; a primary without it takes `+experiment=NAME`."""
    assert validate(["-cd", str(mine), "experiment=mine"]) is None
    assert validate(["-cd", str(mine), "+experiment=mine"]) == (
        "+experiment=mine: the defaults list already has experiment; "
        "a + adds only a group it lacks; write experiment=mine"
    )
    standalone = ["-cd", str(primaries), "-cn", "standalone"]
    assert validate([*standalone, "+experiment=mine"]) is None
    assert validate([*standalone, "experiment=mine"]) == (
        "experiment=mine: the defaults list has no experiment to override; write +experiment=mine"
    )


def test_a_missing_config_dir_or_primary_config_is_one_line(mine, tmp_path):
    nowhere = tmp_path / "nowhere"
    assert validate(["-cd", str(nowhere), "experiment=mine"]) == (
        f"--config-dir {nowhere}: no folder {nowhere}"
    )
    assert validate(["-cd", str(mine), "-cn", "nosuch"]) == (
        f"--config-name nosuch: no nosuch.yaml in {CONF_DIR}, {mine}"
    )
    assert validate(["-cp", str(nowhere)]) == f"--config-path: no folder {nowhere}"
    assert validate(["-cd", str(mine), "experiment=other"]).startswith(
        "experiment=other: no such option; choose from bn_ablation, "
    )
    assert "mine" in validate(["-cd", str(mine), "experiment=other"])


UNREADABLE = {  # after the `# @package _global_` line: the text starts on line 2
    "depth: [14\nseed: 1\n": "3:5: expected ',' or ']', but got ':' (while parsing a flow "
    "sequence from line 2)",
    "model:\n\tdepth: 14\n": "3:1: found character '\\t' that cannot start any token "
    "(while scanning for the next token)",
    "seed: 1\nseed: 2\n": "3:1: found duplicate key seed (while constructing a mapping "
    "from line 2)",
    "seed: 1: 2\n": "2:8: mapping values are not allowed here",
    "seed: \x07\n": "2:7: special characters are not allowed (#x0007)",
}


@pytest.mark.parametrize("text", list(UNREADABLE))
def test_a_file_pyyaml_cannot_read_is_file_line_column_and_problem(text, mine):
    broken = mine / "experiment" / "unreadable.yaml"
    broken.write_text("# @package _global_\n" + text)
    message = validate(["-cd", str(mine), "experiment=unreadable"])
    assert message == f"{broken}:{UNREADABLE[text]}"


def test_a_preset_without_its_package_header_says_to_add_it(mine):
    write(mine / "experiment" / "bare.yaml", "model:\n  depth: 14\n")
    assert validate(["-cd", str(mine), "experiment=bare"]) == (
        "experiment/bare.yaml: its keys land under `experiment.`, which no config has; "
        "begin the file with `# @package _global_`, as conf/experiment/*.yaml do"
    )


# The entry point under a wrapper that says, as the process exits, whether it imported
# TensorFlow: a file PyYAML cannot read must be reported before it.
NOTE_TENSORFLOW = """\
import atexit, runpy, sys
atexit.register(lambda: print("tensorflow imported:", "tensorflow" in sys.modules))
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def run_train_noting_tensorflow(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", NOTE_TENSORFLOW, str(TRAIN), *args],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=300,
    )


def test_a_yaml_error_in_a_users_folder_is_one_line_naming_file_line_and_column(
    mine, unopened_store
):
    broken = write(mine / "experiment" / "broken.yaml", BROKEN)
    result = run_train_noting_tensorflow("-cd", str(mine), "experiment=broken")
    assert one_line_error(result) == (
        f"{broken}:4:8: expected ',' or ']', but got ':' "
        "(while parsing a flow sequence from line 3)"
    )
    assert "tensorflow imported: False" in result.stdout
    assert not unopened_store.exists()


@pytest.mark.slow  # the entry point in a subprocess, per case
@pytest.mark.parametrize("name", ["config.yaml", "data/digits.yaml"])
def test_a_yaml_error_in_conf_is_one_line_naming_file_line_and_column(
    name, tmp_path, unopened_store
):
    conf = tmp_path / "conf"  # a copy: the checkout's conf/ stays as it is
    shutil.copytree(CONF_DIR, conf)
    broken = conf / name
    broken.write_text(broken.read_text() + "oops: a: b\n")  # a second `:` in one line
    result = run_train_noting_tensorflow("--config-path", str(conf))
    line = len(broken.read_text().splitlines())
    assert one_line_error(result) == f"{broken}:{line}:8: mapping values are not allowed here"
    assert "tensorflow imported: False" in result.stdout
    assert not unopened_store.exists()


@pytest.mark.slow  # the entry point in a subprocess, per case
def test_a_yaml_error_in_a_later_job_of_a_sweep_stops_it_in_one_line(mine, unopened_store):
    """The check composes a sweep's first job; the sweeper composes the rest, before any runs."""
    broken = write(mine / "experiment" / "broken.yaml", BROKEN)
    result = run_train("-m", "-cd", str(mine), "experiment=mine,broken")
    assert one_line_error(result).startswith(f"{broken}:4:8: expected ',' or ']'")
    assert not unopened_store.exists()


def test_the_check_reads_the_entry_points_own_config_path_and_name():
    source = TRAIN.read_text()
    assert ENTRY == TRAIN
    assert f'config_path="{ENTRY_CONFIG_PATH}", config_name="{ENTRY_CONFIG_NAME}"' in source
