"""The lines a user reads on the console: one prefix, one way to write a number.

Used by the Keras callback that prints each epoch and by the sweep's progress
lines, so both read alike; free of TensorFlow and MLflow.
"""

from __future__ import annotations

import math
import sys
from typing import Any

from resnet_exp import contract

PREFIX = "[resnet-exp]"


def say(line: str) -> None:
    print(f"{PREFIX} {line}", file=sys.stderr, flush=True)


def percent(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{100 * value:.1f}%"


def number(value: float | None) -> str:
    return "-" if value is None or not math.isfinite(value) else f"{value:.3g}"


def epoch_line(label: str, epoch: int, epochs: int, logs: dict[str, Any]) -> str:
    """One epoch in one line: loss, errors, gradient ratio, time."""
    parts = [f"{label} epoch {epoch}/{epochs}: loss {number(logs.get('loss'))}"]
    if "accuracy" in logs:
        parts.append(f"train error {percent(1 - logs['accuracy'])}")
    if "val_accuracy" in logs:
        parts.append(f"val error {percent(1 - logs['val_accuracy'])}")
    if contract.GRAD_RATIO in logs:
        parts.append(f"first/last gradient {number(logs[contract.GRAD_RATIO])}")
    if contract.EPOCH_TIME in logs:
        seconds = float(logs[contract.EPOCH_TIME])
        parts.append(f"{seconds:.1f} s" if seconds >= 1 else f"{1000 * seconds:.0f} ms")
    return ", ".join(parts)
