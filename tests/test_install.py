"""pyproject.toml installs one TensorFlow build on every platform docs/install.md lists."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement

ROOT = Path(__file__).resolve().parents[1]

# (sys_platform, platform_machine) -> the build with wheels there (checked against PyPI with
# `pip install --dry-run --no-deps --platform ... --only-binary=:all: tensorflow-cpu`)
PLATFORMS = {
    ("linux", "x86_64"): "tensorflow-cpu",
    ("linux", "aarch64"): "tensorflow",
    ("darwin", "arm64"): "tensorflow",
    ("darwin", "x86_64"): "tensorflow",
    ("win32", "AMD64"): "tensorflow-cpu",
}


def _tensorflow_for(platform: str, machine: str) -> list[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    env = {"sys_platform": platform, "platform_machine": machine, "python_version": "3.11"}
    chosen = []
    for dep in map(Requirement, deps):
        if dep.name.startswith("tensorflow") and (dep.marker is None or dep.marker.evaluate(env)):
            chosen.append(dep.name)
    return chosen


@pytest.mark.parametrize("platform", list(PLATFORMS), ids="-".join)
def test_exactly_one_tensorflow_build_per_platform(platform):
    assert _tensorflow_for(*platform) == [PLATFORMS[platform]]
