"""Everything one training run writes to MLflow, in the contract's names (`resnet_exp.contract`).

`RunLog` is the run's writer: tags and params, the config and the model summary, the
per-layer and per-block tables, metrics, images, dataset inputs, and the run's end.
`MlflowEpochLogger` is the Keras callback that sends each epoch's metrics through it.
Every write is retried while SQLite reports a lock (`tracking.store.with_retry`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import keras
import pandas as pd
from mlflow.entities import RunStatus
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from resnet_exp import contract
from resnet_exp.tracking.store import log_batch, with_retry


class RunLog:
    """The writes of one MLflow run."""

    def __init__(self, client: MlflowClient, run_id: str) -> None:
        self.client, self.run_id = client, run_id

    @classmethod
    def open(
        cls, client: MlflowClient, experiment_id: str, name: str, tags: dict[str, str]
    ) -> RunLog:
        run = with_retry(client.create_run, experiment_id, run_name=name, tags=tags)
        return cls(client, run.info.run_id)

    @classmethod
    def reopen(cls, client: MlflowClient, run_id: str, tags: dict[str, str]) -> RunLog:
        """Continue a stopped run (KILLED, or RUNNING with its process gone): RUNNING again,
        `tags` added, the last end's `error` tag removed."""
        run = cls(client, run_id)
        with_retry(client.update_run, run_id, status=RunStatus.to_string(RunStatus.RUNNING))
        if contract.ERROR in with_retry(client.get_run, run_id).data.tags:
            with_retry(client.delete_tag, run_id, contract.ERROR)
        run.tags(tags)
        return run

    def params(self, params: dict[str, Any]) -> None:
        log_batch(self.client, self.run_id, params=params)

    def tags(self, tags: dict[str, str]) -> None:
        log_batch(self.client, self.run_id, tags=tags)

    def metrics(self, metrics: dict[str, float], step: int) -> None:
        """Finite values only (MLflow stores NaN, but a NaN is no measurement)."""
        log_batch(self.client, self.run_id, metrics=finite(metrics), step=step)

    def logged_steps(self, key: str) -> set[int]:
        """The steps at which metric `key` has been logged."""
        return {m.step for m in with_retry(self.client.get_metric_history, self.run_id, key)}

    def text(self, text: str, name: str) -> None:
        with_retry(self.client.log_text, self.run_id, text, name)

    def image(self, image: Any, key: str, step: int) -> None:
        """An image chart entry (`key` at `step`), stored before this returns."""
        with_retry(self.client.log_image, self.run_id, image, key=key, step=step, synchronous=True)

    def image_file(self, image: Any, name: str) -> None:
        """An image artifact at `name` (a path in the run's artifacts), not a chart entry."""
        with_retry(self.client.log_image, self.run_id, image, artifact_file=name)

    def figure(self, figure: Any, name: str) -> None:
        """A matplotlib figure as an image artifact (`landscape.png`)."""
        with_retry(self.client.log_figure, self.run_id, figure, name)

    def table(self, frame: pd.DataFrame, name: str) -> None:
        """A CSV artifact (`grad_profile.csv`, `lesion.csv`, ...): what the analysis reads."""
        self.text(frame.to_csv(index=False), name)

    def config(self, cfg: DictConfig) -> None:
        self.text(OmegaConf.to_yaml(cfg, resolve=True), contract.CONFIG_ARTIFACT)

    def model_summary(self, model: keras.Model) -> None:
        lines: list[str] = []
        model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=110)
        self.text("\n".join(lines), contract.MODEL_SUMMARY_ARTIFACT)

    def dataset(self, data: Any) -> None:
        """The splits as `mlflow.data` inputs (name, digest, shape, source), each tagged with
        its context (training, validation, test), so the runs table's Dataset column works.

        `data` is a `resnet_exp.data.splits.Dataset`. The digest is MLflow's, over the
        arrays: it changes with the seed's split. The source is MLflow's own for data made
        in code (the entry point and commit, `source_type` "code").
        """
        import mlflow.data
        from mlflow.entities import Dataset as DatasetEntity
        from mlflow.entities import DatasetInput, InputTag

        splits = [
            (contract.TRAINING, data.x_train, data.y_train),
            (contract.VALIDATION, data.x_val, data.y_val),
            (contract.TEST, data.x_test, data.y_test),
        ]
        inputs = []
        for context, x, y in splits:
            if x is None or len(x) == 0:  # no test set, or data.val_fraction=0
                continue
            dataset = mlflow.data.from_numpy(x, targets=y, name=data.name)
            tag = InputTag(contract.DATASET_CONTEXT, context)
            inputs.append(DatasetInput(DatasetEntity(**dataset.to_dict()), [tag]))
        with_retry(self.client.log_inputs, self.run_id, inputs)

    def end(self, status: int, reason: str | None = None) -> None:
        """Close the run FINISHED, FAILED or KILLED; `reason` goes to the `error` tag."""
        try:
            if reason:
                self.tags({contract.ERROR: reason[:5000]})
        finally:
            with_retry(self.client.set_terminated, self.run_id, RunStatus.to_string(status))


class MlflowEpochLogger(keras.callbacks.Callback):
    """Logs every epoch's metrics to one MLflow run, in one request per epoch.

    MLflow's own `mlflow.keras.MlflowCallback` logs at step = epoch index from 0,
    under Keras's key names, and swallows logging errors; the contract here needs
    step 0 for initialisation, renamed keys, and failures that surface.
    """

    def __init__(
        self,
        log: RunLog,
        initial: Callable[[], dict[str, float]] | None = None,
        resumed: bool = False,
    ):
        """`initial` gives the step-0 metrics once earlier callbacks have measured them;
        `resumed`: the run's earlier process logged them (a resumed fit logs no step 0)."""
        super().__init__()
        self.log = log
        self.initial = initial
        self.resumed = resumed

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._initial_logged: set[str] = set()
        if self.resumed:
            self._initial_logged.update(self.initial() if self.initial else {})
        self._log_initial()

    def _log_initial(self) -> None:
        """Step-0 values as soon as they exist: before training (a probe) or after epoch 1
        (gathered in the train step); each key once."""
        metrics = finite(self.initial() if self.initial else {})
        new = {k: v for k, v in metrics.items() if k not in self._initial_logged}
        if new:
            self.log.metrics(new, step=0)
            self._initial_logged.update(new)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        self._log_initial()
        self.log.metrics(epoch_metrics(logs or {}), step=epoch + 1)


def epoch_metrics(logs: dict[str, Any]) -> dict[str, Any]:
    """An epoch's Keras logs under the contract's names."""
    return {contract.KERAS_RENAMES.get(k, k): v for k, v in logs.items()}


def finite(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for key, value in metrics.items():
        try:
            number = float(value)
        except (TypeError, ValueError):
            continue
        if math.isfinite(number):
            out[key] = number
    return out
