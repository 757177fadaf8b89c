"""Keras callbacks that turn a fit into the MLflow metric contract.

Order matters: `EpochTimer` first (its clock stops before any probe runs),
then `GradientRecorder`, then `DivergenceMonitor`, then `MlflowEpochLogger`,
which sends each epoch's values in one batched request with step = epoch
(step 0 = initialisation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import Any

import keras
from mlflow.tracking import MlflowClient

from resnet_exp.console import epoch_line, say
from resnet_exp.tracking.store import log_batch
from resnet_exp.training.optim import current_learning_rate

# Keras's log keys -> the contract's metric names.
_RENAMES = {
    "loss": "train_loss",
    "accuracy": "train_accuracy",
    "val_loss": "val_loss",
    "val_accuracy": "val_accuracy",
}


class EpochTimer(keras.callbacks.Callback):
    """Wall time of each epoch (training and validation), into `logs['epoch_time_s']`."""

    def on_epoch_begin(self, epoch: int, logs: dict | None = None) -> None:
        self._start = time.perf_counter()
        self._lr = current_learning_rate(self.model.optimizer)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        if logs is not None:
            logs["epoch_time_s"] = time.perf_counter() - self._start
            logs["lr"] = self._lr


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


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to one MLflow run, in one request per epoch.

    MLflow's own `mlflow.keras.MlflowCallback` logs at step = epoch index from 0,
    under Keras's key names, and swallows logging errors; the contract here needs
    step 0 for initialisation, renamed keys, and failures that surface.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        initial: Callable[[], dict[str, float]] | None = None,
    ):
        """`initial` gives the step-0 metrics once earlier callbacks have measured them."""
        super().__init__()
        self.client, self.run_id = client, run_id
        self.initial = initial

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._initial_logged: set[str] = set()
        self._log_initial()

    def _log_initial(self) -> None:
        """Step-0 values as soon as they exist: before training (a probe) or after epoch 1
        (gathered in the train step); each key once."""
        metrics = _finite(self.initial() if self.initial else {})
        new = {k: v for k, v in metrics.items() if k not in self._initial_logged}
        if new:
            log_batch(self.client, self.run_id, metrics=new, step=0)
            self._initial_logged.update(new)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._log_initial()
        metrics = {_RENAMES.get(k, k): v for k, v in (logs or {}).items()}
        log_batch(self.client, self.run_id, metrics=_finite(metrics), step=epoch + 1)


def _finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out


class StepLimit(keras.callbacks.Callback):
    """Stop after `steps` optimiser iterations: training length stated in iterations.

    Only added when the length is not a whole number of epochs; it counts in
    Python and reads no logs, so it costs no device-to-host copy per batch.
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
