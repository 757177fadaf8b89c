"""A user's first commands leave a clone clean; the README's snapshot stays apart from them."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys

import pytest
from conftest import ROOT

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None or not (ROOT / ".git").exists(), reason="needs a git checkout"
)


def _ignored(relative: str) -> bool:
    """Would git ignore this path (tracked or not: where user outputs go)?"""
    command = ["git", "-C", str(ROOT), "check-ignore", "-q", "--no-index", relative]
    return subprocess.run(command).returncode == 0


@pytest.mark.slow
def test_the_demos_figure_step_writes_only_where_git_ignores(tmp_path):
    """make_figures into its default folder (as `make demo` runs it), from a tiny real store."""
    from fake_study import log_fake_study
    from mlflow.tracking import MlflowClient

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    log_fake_study(
        MlflowClient(uri), "depth_sweep", depths=(8, 14), seeds=(0,), epochs=3, fail=False
    )
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "make_figures.py"), "--experiment", "depth_sweep"]
        + ["--tracking-uri", uri, "--no-log"],
        capture_output=True,
        text=True,
        cwd=tmp_path,  # the default folder is relative to where it runs: here, a stand-in root
        timeout=600,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    written = [p.relative_to(tmp_path) for p in (tmp_path / "reports").rglob("*") if p.is_file()]
    assert len(written) >= 7  # figures, report.md, summary.csv
    tracked = [str(p) for p in written if not _ignored(str(p))]
    assert tracked == [], f"git would see {tracked}"


def test_run_outputs_are_ignored_and_the_snapshot_is_tracked():
    for path in ("mlflow.db", "multirun/x/y.log", "outputs/x/y.log", "mlruns/1/x", "reports/x"):
        assert _ignored(path), path
    listed = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True
    ).stdout.split()
    readme = (ROOT / "README.md").read_text()
    images = re.findall(r"!\[[^]]*\]\(([^)]+)\)", readme)
    assert images
    for image in images:  # a committed snapshot, never a folder the user's commands write to
        assert image in listed and not _ignored(image), image
    snapshot = (ROOT / "docs" / "figures" / "depth_sweep" / "report.md").read_text()
    assert "/tmp/" not in snapshot  # no machine's temporary folder in the committed report


def test_make_help_prints_the_ports():
    if shutil.which("make") is None:
        pytest.skip("needs make")
    out = subprocess.run(["make", "-s", "help"], cwd=ROOT, capture_output=True, text=True).stdout
    assert "http://127.0.0.1:5000" in out and "http://127.0.0.1:5001" in out
    assert "$(" not in out
