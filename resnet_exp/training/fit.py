"""One training run: data and model from the config, Keras `fit`, metrics to MLflow.

This module wires parts together; each part lives in its own module. It is the
only place that reads the whole config: builders get their own section of it (the
model, data and optim specs, typed by the schema) and everything else plain values.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras
import pandas as pd
import tensorflow as tf
from mlflow.tracking import MlflowClient
from omegaconf import DictConfig

from resnet_exp import contract
from resnet_exp.compat import keras_untouched
from resnet_exp.data.pipelines import eval_pipeline, make_pipelines
from resnet_exp.data.splits import Dataset, load_dataset, probe_batch
from resnet_exp.models import build_model
from resnet_exp.recording.branches import BranchRecorder
from resnet_exp.recording.gradients import GradientRecorder, StepGradientRecorder
from resnet_exp.recording.lesions import lesion_examples, lesion_study
from resnet_exp.recording.profile_images import ProfileImageLogger
from resnet_exp.tracking.naming import run_name
from resnet_exp.tracking.run_log import MlflowEpochLogger, RunLog
from resnet_exp.training.callbacks import DivergenceMonitor, EpochLines, EpochTimer, StepLimit
from resnet_exp.training.optim import make_optimizer
from resnet_exp.training.prepare import build_for_fit


@dataclass
class TrainResult:
    history: pd.DataFrame
    diverged_epoch: int | None = None

    @property
    def diverged(self) -> bool:
        return self.diverged_epoch is not None


def configure_runtime(
    threads: int, deterministic: bool, seed: int, mixed_precision: bool = False
) -> None:
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
    # (a fresh process has nothing to clear, and clear_session's gc.collect costs ~0.3 s)
    if not keras_untouched():
        keras.backend.clear_session()
    keras.utils.set_random_seed(seed)
    # every run sets it: a sequential sweep must not inherit the previous job's policy
    keras.mixed_precision.set_global_policy("mixed_float16" if mixed_precision else "float32")


def model_from_config(
    cfg: DictConfig,
    input_shape: tuple[int, ...],
    num_classes: int,
    skip_blocks: frozenset[str] = frozenset(),
):
    return build_model(
        cfg.model,
        input_shape=input_shape,
        num_classes=num_classes,
        seed=int(cfg.seed),
        skip_blocks=skip_blocks,
    )


def load_data(cfg: DictConfig) -> Dataset:
    """The configured dataset, split; raises `DatasetUnavailable` before anything trains."""
    return load_dataset(cfg.data, seed=int(cfg.seed))


def train(cfg: DictConfig, client: MlflowClient, run_id: str) -> TrainResult:
    """Train the configured model, logging each epoch to `run_id` as it finishes."""
    configure_runtime(
        int(cfg.trainer.threads),
        bool(cfg.trainer.deterministic),
        int(cfg.seed),
        mixed_precision=bool(cfg.trainer.mixed_precision),
    )
    log = RunLog(client, run_id)
    data = load_data(cfg)
    log.dataset(data)
    batch_size = int(cfg.trainer.batch_size)
    train_ds, val_ds = make_pipelines(
        data,
        batch_size=batch_size,
        seed=int(cfg.seed),
        shuffle_buffer=int(cfg.trainer.shuffle_buffer),
        augment=bool(cfg.data.augment),
    )
    steps_per_epoch = -(-len(data.x_train) // batch_size)
    # `trainer.steps` counts iterations (the paper's unit) and replaces epochs, the last
    # epoch cut short (StepLimit), so gradients are still recorded once per epoch.
    total_steps = int(cfg.trainer.steps or steps_per_epoch * int(cfg.trainer.epochs))
    epochs = -(-total_steps // steps_per_epoch)
    optimizer = make_optimizer(cfg.optim, total_steps)
    model = model_from_config(cfg, data.input_shape, data.num_classes)
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    build_for_fit(model, train_ds.element_spec)  # the first epoch then traces its step once
    log.model_summary(model)

    # the fixed probe batch: the gradient probe's (source=probe) and the branch recorder's
    x_probe, y_probe = probe_batch(data, int(cfg.gradients.probe_size), int(cfg.seed))
    recorder = branches = None
    if cfg.gradients.enabled:
        probe = cfg.gradients.source == "probe"
        recorder = GradientRecorder(x_probe, y_probe) if probe else StepGradientRecorder()
    if cfg.branches.enabled:
        branches = BranchRecorder(x_probe)
    probes = [r for r in (recorder, branches) if r is not None]
    monitor = DivergenceMonitor()
    label = run_name(cfg)
    callbacks = [
        EpochTimer(),
        *probes,
        *([StepLimit(total_steps)] if total_steps % steps_per_epoch else []),
        monitor,
        MlflowEpochLogger(
            log, initial=lambda: {k: v for r in probes for k, v in r.history.get(0, {}).items()}
        ),
        EpochLines(label, epochs, 60.0 if cfg.tracking.parent_run_id else 0),
    ]
    if recorder and cfg.tracking.profile_images:
        callbacks.append(ProfileImageLogger.from_recorder(log, recorder, label=label))
    fit = model.fit(
        train_ds,
        validation_data=val_ds,
        epochs=epochs,
        callbacks=callbacks,
        shuffle=False,  # the pipeline shuffles, seeded
        verbose=0,
    )

    history = pd.DataFrame(fit.history)
    history.insert(0, "epoch", range(1, len(history) + 1))
    log.table(history, contract.HISTORY_ARTIFACT)
    if recorder:
        log.table(recorder.profile_frame(), contract.PROFILE_ARTIFACT)
    if branches:
        log.table(branches.frame(), contract.BRANCH_ARTIFACT)
    if data.x_test is not None:  # once, at the end, logged at the last epoch's step
        test_ds = eval_pipeline(data, data.x_test, data.y_test, batch_size=batch_size)
        scores = model.evaluate(test_ds, return_dict=True, verbose=0)
        test = {contract.TEST_LOSS: scores["loss"], contract.TEST_ACCURACY: scores["accuracy"]}
        log.metrics(test, step=len(history))
    if cfg.lesion.enabled and not monitor.diverged:
        _lesions(cfg, model, data, log, step=len(history))
    return TrainResult(history=history, diverged_epoch=monitor.diverged_epoch)


def _lesions(cfg: DictConfig, model: keras.Model, data: Dataset, log: RunLog, step: int) -> None:
    """Delete blocks of the trained `model` (never modified) and log what that costs."""
    # the validation split, or the test set where a study keeps no validation split
    x, y = (data.x_val, data.y_val) if len(data.x_val) else (data.x_test, data.y_test)
    if x is None or not len(x):
        return
    x, y = lesion_examples(x, y, int(cfg.lesion.max_examples))
    x = data.normalise(x)  # image datasets keep uint8 arrays; the network sees them normalised
    result = lesion_study(
        lambda skip: model_from_config(cfg, data.input_shape, data.num_classes, skip),
        model,
        x,
        y,
        k_values=list(cfg.lesion.k),
        draws=int(cfg.lesion.draws),
        seed=int(cfg.seed),
    )
    log.table(result.single, contract.LESION_ARTIFACT)
    log.table(result.multi, contract.LESION_K_ARTIFACT)
    log.metrics(result.metrics(), step=step)
