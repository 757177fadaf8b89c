"""The one timing and table harness every benchmark here uses.

The machine is shared and noisy, so a benchmark never reports an absolute time
alone: it runs the variants it compares alternately (A B, B A, A B, ...) in one
session, takes medians, and reports their ratio with the spread over repeats.
"""

from __future__ import annotations

import csv
import os
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, fields
from pathlib import Path

# Time TensorFlow and MLflow, not their C++ log lines and telemetry pings; child
# processes inherit these.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def run_python(
    args: list[str], env: dict[str, str] | None = None, **kwargs
) -> subprocess.CompletedProcess[str]:
    """`python ARGS` in a child process with `env` added to ours, its output captured as text."""
    env = {**os.environ, **(env or {})}
    return subprocess.run(
        [sys.executable, *args], env=env, capture_output=True, text=True, check=True, **kwargs
    )


@contextmanager
def stopwatch(cpu: bool = False) -> Iterator[Callable[[], float]]:
    """`with stopwatch() as elapsed: ...; elapsed()` gives wall seconds (frozen at exit).

    `cpu=True` counts this process's CPU seconds (all threads) instead: on a
    machine loaded by others that is the steadier measure of work done here.
    """
    clock = time.process_time if cpu else time.perf_counter
    start = clock()
    end: list[float] = []
    yield lambda: (end[0] if end else clock()) - start
    end.append(clock())


def steady(epoch_seconds: list[float]) -> float:
    """The steady epoch: the median after the first (which traces), or of the only one."""
    return statistics.median(epoch_seconds[1:] or epoch_seconds)


def interleaved(
    variants: dict[str, Callable[[], float]], repeats: int, log: Callable[[str], None] = print
) -> dict[str, list[float]]:
    """Run each variant `repeats` times, changing the order each repeat.

    Two variants alternate (A B, B A, ...). Three or more rotate (A B C, B C A,
    C A B, ...): reversing them would run the last and the first variant twice
    back to back at each turn (A B C C B A A B C), so two of a variant's three
    samples would share one stretch of the machine's load and a load swing would
    read as a difference between variants.

    Each variant returns the seconds it measured (a run's own duration, say),
    so what it times is up to it; this only orders the runs and collects them.
    """
    names = list(variants)
    times: dict[str, list[float]] = {name: [] for name in names}
    for repeat in range(repeats):
        if len(names) > 2:
            shift = repeat % len(names)
            order = names[shift:] + names[:shift]
        else:
            order = names if repeat % 2 == 0 else names[::-1]
        for name in order:
            seconds = variants[name]()
            times[name].append(seconds)
            log(f"  repeat {repeat}: {name:<28} {seconds:8.2f} s")
    return times


@dataclass
class Row:
    """One line of the table: `subject` over `baseline`, measured side by side.

    Values are seconds (medians) unless `measure` says otherwise.
    """

    part: str
    measure: str
    subject: str
    subject_value: float
    baseline: str
    baseline_value: float
    target: str = ""
    spread: str = ""  # min-max of the per-repeat ratios, when paired repeats exist
    note: str = ""

    @property
    def ratio(self) -> float:
        return self.subject_value / self.baseline_value if self.baseline_value else float("nan")


def ratio_row(
    part: str,
    measure: str,
    times: dict[str, list[float]],
    subject: str,
    baseline: str,
    target: str = "",
    note: str = "",
) -> Row:
    """A row from interleaved times: ratio of medians, and the range of paired ratios."""
    pairs = [a / b for a, b in zip(times[subject], times[baseline], strict=False) if b]
    spread = f"{min(pairs):.3f}-{max(pairs):.3f}" if len(pairs) > 1 else ""
    subject_value, baseline_value = (statistics.median(times[k]) for k in (subject, baseline))
    return Row(
        part, measure, subject, subject_value, baseline, baseline_value, target, spread, note
    )


COLUMNS = [*(f.name for f in fields(Row)[:6]), "ratio", "spread", "target", "note"]


def _cells(row: Row) -> list[str]:
    cells = {k: str(v) for k, v in asdict(row).items()}
    cells["subject_value"] = f"{row.subject_value:.4g}"
    cells["baseline_value"] = f"{row.baseline_value:.4g}"
    cells["ratio"] = f"{row.ratio:.3f}"
    return [cells[c] for c in COLUMNS]


def markdown(rows: list[Row]) -> str:
    lines = ["| " + " | ".join(cells) + " |" for cells in [COLUMNS, *map(_cells, rows)]]
    lines.insert(1, "|" + "---|" * len(COLUMNS))
    return "\n".join(lines) + "\n"


def write_table(rows: list[Row], out: Path, header: str = "") -> tuple[Path, Path]:
    """The table as CSV and Markdown (with `header` above it) in `out`."""
    out.mkdir(parents=True, exist_ok=True)
    csv_path, md_path = out / "bench.csv", out / "bench.md"
    with csv_path.open("w", newline="") as f:
        csv.writer(f).writerows([COLUMNS, *map(_cells, rows)])
    md_path.write_text((header + "\n\n" if header else "") + markdown(rows))
    return csv_path, md_path
