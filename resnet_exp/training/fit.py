"""One training run: data and model from the config, Keras `fit`, metrics to MLflow.

This module wires parts together; each part lives in its own module. It is the
only place that reads the whole config: builders get their own section of it (the
model, data and optim specs, typed by the schema) and everything else plain values.
"""

from __future__ import annotations

import logging
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
from resnet_exp.recording.curvature_recorder import CurvatureRecorder
from resnet_exp.recording.gradients import GradientRecorder, StepGradientRecorder
from resnet_exp.recording.landscape import loss_landscape
from resnet_exp.recording.landscape_image import landscape_figure
from resnet_exp.recording.lesions import lesion_examples, lesion_study
from resnet_exp.recording.profile_images import ProfileImageLogger
from resnet_exp.tracking.naming import run_name
from resnet_exp.tracking.run_log import MlflowEpochLogger, RunLog, epoch_metrics
from resnet_exp.training.callbacks import (
    DivergenceMonitor,
    EpochCheckpoint,
    EpochLines,
    EpochTimer,
    StepLimit,
)
from resnet_exp.training.checkpoint import Checkpoint
from resnet_exp.training.optim import make_optimizer
from resnet_exp.training.prepare import build_for_fit

_log = logging.getLogger(__name__)
_ITERATORS_PER_EPOCH = 2  # what Keras's fit makes of a tf.data training set per epoch


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


def train(
    cfg: DictConfig,
    client: MlflowClient,
    run_id: str,
    checkpoint: Checkpoint | None = None,
    resume: bool = False,
) -> TrainResult:
    """Train the configured model, logging each epoch to `run_id` as it finishes.

    With a `checkpoint`, the state at every epoch's end is saved there; `resume`
    restores it first and trains the epochs after it, logging at the same steps the
    uninterrupted run would have (step 0 is not logged again).
    """
    configure_runtime(
        int(cfg.trainer.threads),
        bool(cfg.trainer.deterministic),
        int(cfg.seed),
        mixed_precision=bool(cfg.trainer.mixed_precision),
    )
    log = RunLog(client, run_id)
    data = load_data(cfg)
    if not resume:  # a resumed run logged its inputs in its first process
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
    state = checkpoint.restore(model) if resume and checkpoint is not None else None
    initial_epoch = int(state["epoch"]) if state else 0
    if state is None:
        log.model_summary(model)

    # the fixed probe batch: the gradient probe's (source=probe) and the branch recorder's
    x_probe, y_probe = probe_batch(data, int(cfg.gradients.probe_size), int(cfg.seed))
    recorder = branches = curvature = None
    if cfg.gradients.enabled:
        probe = cfg.gradients.source == "probe"
        recorder = GradientRecorder(x_probe, y_probe) if probe else StepGradientRecorder()
    if cfg.branches.enabled:
        branches = BranchRecorder(x_probe)
    if cfg.curvature.enabled:  # its own, larger fixed batch (issue 18)
        x_curv, y_curv = probe_batch(data, int(cfg.curvature.examples), int(cfg.seed))
        curvature = CurvatureRecorder(
            x_curv, y_curv, cfg.curvature, seed=int(cfg.seed), sink=log.metrics
        )
    recorders = {"gradients": recorder, "branches": branches, "curvature": curvature}
    probes = [r for r in recorders.values() if r is not None]
    monitor = DivergenceMonitor()
    rows: list[dict[str, float]] = []  # a resumed run's earlier epochs, as they were logged
    if state is not None:
        rows = state["rows"]
        saved = state.get("recorders", {})
        for name, probe in recorders.items():
            if probe is not None and saved.get(name):
                probe.restore(saved[name], model)
        monitor.diverged_epoch = state.get("diverged_epoch")
        _log_missing_epochs(log, rows, probes, initial_epoch)

    def initial() -> dict[str, float]:
        return {k: v for r in probes for k, v in r.history.get(0, {}).items()}

    def checkpoint_state() -> dict:
        return {
            "recorders": {k: r.state() for k, r in recorders.items() if r is not None},
            "diverged_epoch": monitor.diverged_epoch,
        }

    label = run_name(cfg)
    remaining = total_steps - initial_epoch * steps_per_epoch
    callbacks = [
        EpochTimer(),
        *probes,
        *([StepLimit(remaining)] if total_steps % steps_per_epoch else []),
        monitor,
        # after the recorders and the monitor (their values are in the state it saves),
        # before the logger: an epoch's state is taken before its metrics go to MLflow
        # (and on disk before a stopped run closes: the job waits for the write)
        *([EpochCheckpoint(checkpoint, checkpoint_state, rows)] if checkpoint else []),
        MlflowEpochLogger(log, initial=initial, resumed=state is not None),
        EpochLines(label, epochs, 60.0 if cfg.tracking.parent_run_id else 0),
    ]
    if recorder and cfg.tracking.profile_images:
        images = ProfileImageLogger.from_recorder(log, recorder, label=label)
        if state is not None:
            images.resume_after(initial_epoch)
        callbacks.append(images)
    new_rows = pd.DataFrame()
    if initial_epoch < epochs and not monitor.diverged:
        # The pipeline draws a new shuffle for each iterator made of it, and Keras's `fit`
        # makes two per epoch (one as the epoch starts, the next as it ends): making the
        # earlier epochs' iterators here lets the resumed epochs see the shuffles they
        # would have seen, so a resumed run trains as the uninterrupted one (tested,
        # tests/test_checkpoint.py). Making an iterator reads no data: it costs ~1 ms.
        for _ in range(_ITERATORS_PER_EPOCH * initial_epoch):
            iter(train_ds)
        fit = model.fit(
            train_ds,
            validation_data=val_ds,
            epochs=epochs,
            initial_epoch=initial_epoch,
            callbacks=callbacks,
            shuffle=False,  # the pipeline shuffles, seeded
            verbose=0,
        )
        new_rows = pd.DataFrame(fit.history)
        new_rows.insert(0, "epoch", range(initial_epoch + 1, initial_epoch + len(new_rows) + 1))
    history = pd.concat([pd.DataFrame(rows), new_rows], ignore_index=True) if rows else new_rows
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
    if curvature:
        log.metrics(curvature.finish(len(history), model), step=len(history))
        log.table(curvature.frame(), contract.CURVATURE_ARTIFACT)
        if curvature.density_rows:
            log.table(curvature.density_frame(), contract.DENSITY_ARTIFACT)
    if cfg.lesion.enabled and not monitor.diverged:
        _lesions(cfg, model, data, log, step=len(history))
    if cfg.landscape.enabled and not monitor.diverged:
        _landscape(cfg, model, data, log, step=len(history), title=label)
    return TrainResult(history=history, diverged_epoch=monitor.diverged_epoch)


def _log_missing_epochs(
    log: RunLog, rows: list[dict[str, float]], probes: list, initial_epoch: int
) -> None:
    """A resumed run: log what the checkpoint holds but MLflow does not (its process was
    stopped after the checkpoint's write and before the epoch's metrics reached the store)."""
    logged = log.logged_steps(contract.EPOCH_TIME)
    for row in rows:
        step = int(row["epoch"])
        if step not in logged:
            log.metrics(epoch_metrics({k: v for k, v in row.items() if k != "epoch"}), step)
    initial = {k: v for r in probes for k, v in r.history.get(0, {}).items()}
    if initial and 0 not in log.logged_steps(next(iter(initial))):
        log.metrics(initial, step=0)
    later = sorted(s for s in logged if s > initial_epoch)
    if later:
        _log.warning(
            "epochs %s were logged after the checkpoint of epoch %d was written: they are "
            "trained again and logged twice",
            later,
            initial_epoch,
        )


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


def _landscape(
    cfg: DictConfig, model: keras.Model, data: Dataset, log: RunLog, step: int, title: str
) -> None:
    """The loss around the trained `model` (never modified) on a fixed training subset."""
    settings = cfg.landscape
    x, y = probe_batch(data, int(settings.examples), int(cfg.seed))
    result = loss_landscape(
        model,
        x,
        y,
        grid=int(settings.grid),
        span=float(settings.span),
        surface=bool(settings.surface),
        seed=int(cfg.seed),
        include_bias_bn=bool(settings.include_bias_bn),
        batch_size=int(settings.batch_size),
    )
    log.table(result.slice.frame, contract.LANDSCAPE_1D_ARTIFACT)
    if result.surface is not None:
        log.table(result.surface.frame, contract.LANDSCAPE_2D_ARTIFACT)
        log.figure(landscape_figure(result.surface.frame, title), contract.LANDSCAPE_IMAGE)
    log.metrics(result.metrics(), step=step)
