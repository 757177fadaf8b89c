"""The Keras callbacks that run a fit: its clock, its length, divergence, its console lines.

`training.fit.train` orders them: `EpochTimer` first (its clock stops before any
recorder measures), then the recorders (`resnet_exp.recording`), `StepLimit`,
`DivergenceMonitor`, `EpochCheckpoint` (the state at the epoch's end, recorders
included), `tracking.run_log.MlflowEpochLogger` (which sees every value the earlier
callbacks put in the epoch's logs) and `EpochLines`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras

from resnet_exp import contract
from resnet_exp.console import epoch_line, say
from resnet_exp.training.checkpoint import Checkpoint, Snapshot, owner
from resnet_exp.training.optim import current_learning_rate


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (training and validation), into `logs['epoch_time_s']`."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._lr = current_learning_rate(self.model.optimizer)  # read before the clock starts
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs[contract.EPOCH_TIME] = time.perf_counter() - self._start
            logs[contract.LEARNING_RATE] = self._lr


class DivergenceMonitor(keras.callbacks.Callback):
    """Stop at the first epoch whose training loss is not finite.

    A diverged run is a result, not a crash. Checked per epoch, not per batch:
    a batch hook would make Keras copy the loss to the host after every step.
    """

    def __init__(self) -> None:
        super().__init__()
        self.diverged_epoch: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(float(loss)) and not self.diverged:
            self.diverged_epoch = epoch + 1
            self.model.stop_training = True


class StepLimit(keras.callbacks.Callback):
    """Stop after `steps` optimiser iterations: training length stated in iterations.

    Only added when the length is not a whole number of epochs: a batch hook makes
    Keras hand each step's logs to Python on the main thread, which the other runs
    need not pay. It counts in Python and reads none of those logs.
    """

    def __init__(self, steps: int):
        super().__init__()
        self.steps = steps
        self.done = 0

    def on_train_batch_end(self, batch: int, logs: dict | None = None) -> None:
        self.done += 1
        if self.done >= self.steps:
            self.model.stop_training = True


class EpochLines(keras.callbacks.Callback):
    """One line per epoch on stderr (never a progress bar: logs stay readable).

    `min_interval_s` thins the lines of short epochs: a sweep's jobs pass a minute,
    so only slow runs report per epoch there, and the sweep's own lines stay readable.
    """

    def __init__(self, label: str, epochs: int, min_interval_s: float = 0.0) -> None:
        super().__init__()
        self.label, self.epochs, self.min_interval_s = label, epochs, min_interval_s
        self._last = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        now = time.perf_counter()
        if now - self._last >= self.min_interval_s:
            self._last = now
            say(epoch_line(self.label, epoch + 1, self.epochs, logs or {}))


class EpochCheckpoint(keras.callbacks.Callback):
    """Saves the run's state at every epoch's end (`training.checkpoint`): weights,
    optimiser, the epoch, its logged values and what `state()` returns (the recorders').

    The variables are read here, on the training thread (a few ms); the file is written
    by a background thread while the next epoch trains. `rows` starts with a resumed
    run's earlier epochs and gains one entry (the epoch's logs) per epoch.
    """

    def __init__(
        self,
        checkpoint: Checkpoint,
        state: Callable[[], dict[str, Any]],
        rows: list[dict[str, float]] | None = None,
    ) -> None:
        super().__init__()
        self.checkpoint, self.state = checkpoint, state
        self.rows: list[dict[str, float]] = list(rows or [])
        self.seconds: list[float] = []  # per epoch: what the training thread spent
        self._snapshot: Snapshot | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self._snapshot is None or self._snapshot.variables[0] is not self.model.weights[0]:
            self._snapshot = Snapshot(self.model)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        start = time.perf_counter()
        self.rows.append({"epoch": epoch + 1, **_numbers(logs or {})})
        arrays = self._snapshot.take()
        state = {
            "epoch": epoch + 1,
            "rows": self.rows,
            "manifest": self._snapshot.manifest(),
            "owner": owner(),
            **self.state(),
        }
        self.checkpoint.submit(arrays, state)
        self.seconds.append(time.perf_counter() - start)

    def on_train_end(self, logs: dict | None = None) -> None:
        self.checkpoint.flush()


def _numbers(logs: dict) -> dict[str, float]:
    out = {}
    for key, value in logs.items():
        try:
            out[key] = float(value)
        except (TypeError, ValueError):
            continue
    return out
