"""The Keras callbacks that run a fit: its clock, its length, divergence, its console lines.

`training.fit.train` orders them: `EpochTimer` first (its clock stops before any
recorder measures), then the recorders (`resnet_exp.recording`), `StepLimit`,
`DivergenceMonitor`, `tracking.run_log.MlflowEpochLogger` (which sees every value
the earlier callbacks put in the epoch's logs) and `EpochLines`.
"""

from __future__ import annotations

import math
import time

import keras

from resnet_exp import contract
from resnet_exp.console import epoch_line, say
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
