"""One training run: data and model from the config, Keras `fit`, metrics to MLflow.

This module wires parts together; each part lives in its own module. It is the
only place that reads the whole config, and it hands plain values down.
"""

from __future__ import annotations

import io
import tempfile
from dataclasses import dataclass
from pathlib import Path

import keras
import pandas as pd
import tensorflow as tf
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig, OmegaConf

from resnet_exp.callbacks import DivergenceMonitor, EpochLines, EpochTimer, MlflowEpochLogger
from resnet_exp.data import load_dataset, make_pipelines, probe_batch
from resnet_exp.gradients import GradientRecorder
from resnet_exp.job import run_name
from resnet_exp.models import build_model
from resnet_exp.optim import make_optimizer
from resnet_exp.tracking import with_retry


@dataclass
class TrainResult:
    history: pd.DataFrame
    diverged_epoch: int | None = None
    profile: pd.DataFrame | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None


def configure_runtime(threads: int, deterministic: bool, seed: int) -> None:
    """Thread pools and determinism must be set before TensorFlow runs its first op."""
    if threads > 0:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(threads)
        except RuntimeError:  # already initialised in this process (tests, joblib reuse)
            pass
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    # a sequential sweep trains many models in one process: start each from a clean slate
    keras.backend.clear_session()
    keras.utils.set_random_seed(seed)


def model_from_config(cfg: DictConfig, input_shape: tuple[int, ...], num_classes: int):
    m = cfg.model
    return build_model(
        str(m.name),
        int(m.depth),
        input_shape=input_shape,
        num_classes=num_classes,
        residual=bool(m.residual),
        batch_norm=bool(m.batch_norm),
        activation=str(m.activation),
        kernel_initializer=str(m.kernel_initializer),
        shortcut=str(m.shortcut),
        width=int(m.width),
        base_filters=int(m.base_filters),
        blocks_per_stage=list(m.blocks_per_stage) if m.blocks_per_stage else None,
        seed=int(cfg.seed),
    )


def train(cfg: DictConfig, client: MlflowClient, run_id: str) -> TrainResult:
    """Train the configured model, logging each epoch to `run_id` as it finishes."""
    configure_runtime(int(cfg.trainer.threads), bool(cfg.trainer.deterministic), int(cfg.seed))
    d = cfg.data
    data = load_dataset(
        str(d.name),
        seed=int(cfg.seed),
        val_fraction=float(d.val_fraction),
        standardize=bool(d.standardize),
        input_shape=tuple(d.input_shape),
        num_classes=int(d.num_classes),
        num_samples=int(d.num_samples),
    )
    train_ds, val_ds = make_pipelines(
        data,
        batch_size=int(cfg.trainer.batch_size),
        seed=int(cfg.seed),
        shuffle_buffer=int(cfg.trainer.shuffle_buffer),
    )
    steps_per_epoch = -(-len(data.x_train) // int(cfg.trainer.batch_size))
    o = cfg.optim
    optimizer = make_optimizer(
        str(o.name),
        lr=float(o.lr),
        total_steps=steps_per_epoch * int(cfg.trainer.epochs),
        momentum=float(o.momentum),
        nesterov=bool(o.nesterov),
        weight_decay=float(o.weight_decay),
        schedule=str(o.schedule.name),
        milestones=list(o.schedule.milestones),
        gamma=float(o.schedule.gamma),
    )
    model = model_from_config(cfg, data.input_shape, data.num_classes)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _log_text_artifact(client, run_id, _summary(model), "model_summary.txt")

    recorder = None
    callbacks: list[keras.callbacks.Callback] = [EpochTimer()]
    if cfg.gradients.enabled:
        x_probe, y_probe = probe_batch(data, int(cfg.gradients.probe_size), int(cfg.seed))
        recorder = GradientRecorder(x_probe, y_probe)
        callbacks.append(recorder)
    monitor = DivergenceMonitor()
    callbacks += [
        monitor,
        MlflowEpochLogger(
            client, run_id, initial=(lambda: recorder.history.get(0, {})) if recorder else None
        ),
        EpochLines(
            run_name(cfg), int(cfg.trainer.epochs), 60.0 if cfg.tracking.parent_run_id else 0
        ),
    ]
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=int(cfg.trainer.epochs),
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles, seeded
        verbose=0,
    )
    history = pd.DataFrame(fit.history)
    history.insert(0, "epoch", range(1, len(history) + 1))
    profile = recorder.profile_frame() if recorder else None
    return TrainResult(history=history, diverged_epoch=monitor.diverged_epoch, profile=profile)


def _summary(model: keras.Model) -> str:
    lines: list[str] = []
    model.summary(print_fn=lambda line, *a, **k: lines.append(line), line_length=110)
    return "\n".join(lines)


def _log_text_artifact(client: MlflowClient, run_id: str, text: str, name: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / name
        path.write_text(text)
        with_retry(client.log_artifact, run_id, str(path))


def log_frame_artifact(client: MlflowClient, run_id: str, frame: pd.DataFrame, name: str) -> None:
    buffer = io.StringIO()
    frame.to_csv(buffer, index=False)
    _log_text_artifact(client, run_id, buffer.getvalue(), name)


def log_config_artifact(client: MlflowClient, run_id: str, cfg: DictConfig) -> None:
    _log_text_artifact(client, run_id, OmegaConf.to_yaml(cfg, resolve=True), "config.yaml")
