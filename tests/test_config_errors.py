"""Every bad configuration exits non-zero with one clear line, before any run starts."""

from __future__ import annotations

import pytest
from conftest import run_train, runs_of

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
}


@pytest.mark.parametrize("args", list(BAD))
def test_bad_config_is_one_clear_line(args, tracking_uri, client):
    result = run_train(*args.split())
    assert result.returncode != 0
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("config error: ")
    for fragment in BAD[args]:
        assert fragment in lines[0]
    assert "Traceback" not in result.stderr + result.stdout
    assert runs_of(client) == []


def test_bad_value_deep_in_a_sweep_stops_the_whole_sweep_before_it_starts(tracking_uri, client):
    result = run_train("-m", "model.depth=8,21", "trainer.epochs=1")
    assert result.returncode != 0
    assert "model.depth=21" in result.stderr
    assert runs_of(client) == []


def test_valid_config_passes_validation():
    from resnet_exp.cli import validate

    assert validate(["model.depth=8"]) is None
    assert validate(["-m", "model.depth=8,20,56", "model.residual=true,false"]) is None
    assert validate(["model=mlp", "model.depth=200"]) is None
    assert validate(["model=resnet_basic", "model.depth=34"]) is None
