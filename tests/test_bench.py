"""`scripts/dev/bench.py --quick` with tiny settings writes a table with a row for every part."""

from __future__ import annotations

import csv
import os
import subprocess
import sys

import pytest
from conftest import ROOT

TINY = [
    "--quick",
    "--depths", "8",
    "--epochs", "2",
    "--repeats", "1",
    "--cifar-samples", "128",
    "--flops-steps", "2",
    "--flops-variants", "default",
    "--study-epochs", "1",
    "--study-depths", "8",
    "--figure-runs", "4",
    "--figure-epochs", "3",
    "--recording-variants", "off", "on (step)",
]  # fmt: skip


@pytest.mark.slow
@pytest.mark.timeout(2400)  # about 3 min on a quiet 2-core machine; far more when it is shared
def test_quick_bench_prints_and_writes_every_row(tmp_path):
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "PYTHONPATH": str(ROOT)}
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "dev" / "bench.py"), *TINY, "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=2300,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    with (tmp_path / "bench.csv").open() as f:
        rows = list(csv.DictReader(f))
    parts = [row["part"] for row in rows]
    for part in ["1 recording", "2 framework", "3 flops", "4 study", "5 figures"]:
        assert part in parts, part
    assert all(float(row["ratio"]) > 0 for row in rows)
    assert "| 1 recording |" in result.stdout
    lines = (tmp_path / "bench.md").read_text().splitlines()
    assert sum(line.startswith("|") for line in lines) == len(rows) + 2  # + header, separator
