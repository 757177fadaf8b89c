"""Loss-gradient magnitudes per kernel, measured on a fixed probe batch.

The question this project asks is whether the gradient still reaches the first
layer of a deep plain net, and how skip connections change that. Gradients of
the training batches are noisy and change with every shuffle, so we measure on
one FIXED probe batch instead: the same inputs at initialisation and after
every epoch, so that changes across epochs are changes of the network, not of
the data.

The measurement is in training mode (batch norm normalises with the batch
statistics, as the optimiser sees it) but has no side effects: it runs through
`Model.stateless_call`, and the updated state it returns (batch-norm moving
statistics, dropout seed states, metric states) is thrown away. A seeded run
therefore trains bit for bit the same with or without the recorder.

Only the data loss is differentiated; regularisation penalties (`model.losses`)
are left out, since their gradient (e.g. `2 * l2 * w`) would hide the vanishing
signal this module exists to show.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

LossFn = Callable[[Any, Any], Any]

PROFILE_COLUMNS = ["epoch", "layer_index", "layer_name", "grad_norm", "weight_norm"]

_KERNEL_SUFFIX = "/kernel"


def resolve_loss(model: keras.Model, loss: Any = None) -> LossFn:
    """The loss to differentiate: `loss` if given, else the compiled model's loss.

    Strings, config dicts, functions and `keras.losses.Loss` objects are all
    accepted (via `keras.losses.get`). We do not call `model.compute_loss`,
    because that also updates the model's loss-tracker metric.
    """
    identifier = loss if loss is not None else getattr(model, "loss", None)
    if identifier is None:
        raise ValueError(
            "No loss to differentiate: pass `loss=` or compile the model with a loss first."
        )
    is_config = isinstance(identifier, dict) and "class_name" in identifier
    if isinstance(identifier, list | tuple) or (isinstance(identifier, dict) and not is_config):
        raise ValueError(
            f"The model has one loss per output ({type(identifier).__name__}); "
            "pass a single `loss=` for the output to probe."
        )
    loss_fn = keras.losses.get(identifier)
    if loss_fn is None or not callable(loss_fn):
        raise ValueError(f"Could not resolve the loss {identifier!r} to a callable.")
    return loss_fn


def kernel_paths(model: keras.Model) -> list[str]:
    """Paths of the trainable kernels, in `model.trainable_variables` order.

    Functional models list their variables in topological order, so the first
    path is the first layer and the last path is the classifier.
    """
    return [v.path for v in model.trainable_variables if v.path.endswith(_KERNEL_SUFFIX)]


def _layer_name(path: str) -> str:
    return path[: -len(_KERNEL_SUFFIX)]


def _as_input(data: Any) -> Any:
    """Tensors for the probe batch; float arrays become floatx, as `fit` does."""

    def convert(value: Any) -> tf.Tensor:
        tensor = tf.convert_to_tensor(value)
        if tensor.dtype.is_floating and tensor.dtype != keras.backend.floatx():
            tensor = tf.cast(tensor, keras.backend.floatx())
        return tensor

    return tf.nest.map_structure(convert, data)


class _KernelProbe:
    """One `tf.function` for one model and loss: traced once, then reused.

    Calling it costs one forward and one backward pass over the probe batch and
    a single device-to-host copy of a small vector.
    """

    def __init__(self, model: keras.Model, loss_fn: LossFn, loss_identifier: Any = None):
        if not model.built:
            raise ValueError("Build the model (call it or fit it once) before probing it.")
        self.model = model
        self.loss_fn = loss_fn
        self._loss_identifier = loss_identifier
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        self._kernel_index = [
            i for i, v in enumerate(self._trainable) if v.path.endswith(_KERNEL_SUFFIX)
        ]
        if not self._kernel_index:
            raise ValueError(
                f"Model {model.name!r} has no trainable variable whose path ends with "
                f"{_KERNEL_SUFFIX!r}; nothing to measure."
            )
        self.names = [_layer_name(self._trainable[i].path) for i in self._kernel_index]
        self._signature = self._variables_signature(model)
        self._fn = tf.function(
            self._measure,
            reduce_retracing=True,
            autograph=False,  # straight-line code: skip AutoGraph's conversion cost
            jit_compile=bool(getattr(model, "jit_compile", False)),
        )

    @staticmethod
    def _variables_signature(model: keras.Model) -> tuple[int, ...]:
        return (
            tuple(id(v) for v in model.trainable_variables)
            + (-1,)
            + tuple(id(v) for v in model.non_trainable_variables)
        )

    def matches(self, model: keras.Model, loss_identifier: Any) -> bool:
        """False once the model, its loss or its set of (trainable) variables changed."""
        return (
            model is self.model
            and loss_identifier is self._loss_identifier
            and self._variables_signature(model) == self._signature
        )

    def _measure(self, x: Any, y: Any) -> tf.Tensor:
        # Plain tensors (one read op each, at call time): the tape watches these,
        # and stateless_call sees them in place of the variables.
        trainable = [tf.convert_to_tensor(v.value) for v in self._trainable]
        non_trainable = [tf.convert_to_tensor(v.value) for v in self._non_trainable]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            y_pred, _discarded_state = self.model.stateless_call(
                trainable, non_trainable, x, training=True
            )
            # Functions give one loss per sample, Loss objects a reduced value;
            # the mean makes both the "sum_over_batch_size" loss that fit uses.
            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))
        kernels = [trainable[i] for i in self._kernel_index]
        grads = tape.gradient(loss, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_norms = [tf.norm(tf.cast(g, tf.float32)) for g in grads]
        weight_norms = [tf.norm(tf.cast(k, tf.float32)) for k in kernels]
        # One vector, so the caller pays a single device-to-host transfer.
        return tf.stack([*grad_norms, *weight_norms, loss])

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, float]:
        values = self._fn(x, y).numpy().astype(np.float64)
        n = len(self._kernel_index)
        return values[:n], values[n : 2 * n], float(values[-1])


def kernel_gradient_norms(
    model: keras.Model, x: Any, y: Any, loss_fn: Any = None
) -> tuple[list[str], np.ndarray, np.ndarray, float]:
    """L2 norms of dLoss/dKernel and of each kernel, in forward order, on one batch.

    Training-mode forward pass without side effects (see the module doc).
    `loss_fn=None` uses the compiled model's loss. Each call traces a new
    `tf.function`; for repeated measurements use `GradientRecorder`.

    Returns:
        `(layer_names, grad_norms, weight_norms, loss)`; non-finite values are
        returned as they are.
    """
    probe = _KernelProbe(model, resolve_loss(model, loss_fn))
    grad_norms, weight_norms, loss = probe(_as_input(x), _as_input(y))
    return list(probe.names), grad_norms, weight_norms, loss


def _ratio(numerator: float, denominator: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def step_metrics(grad_norms: np.ndarray, weight_norms: np.ndarray, loss: float) -> dict[str, float]:
    """The scalar summary logged per step: first and last layer, and their ratio."""
    first, last = float(grad_norms[0]), float(grad_norms[-1])
    return {
        "grad_first_norm": first,
        "grad_last_norm": last,
        "grad_first_rel": _ratio(first, weight_norms[0]),
        "grad_last_rel": _ratio(last, weight_norms[-1]),
        "grad_first_last_ratio": _ratio(first, last),
        "probe_loss": float(loss),
    }


class GradientRecorder(keras.callbacks.Callback):
    """Records per-kernel loss-gradient norms on a fixed probe batch during `fit`.

    Step 0 is measured in `on_train_begin`, before the first update; step
    `epoch + 1` at the end of each epoch. Each step's summary (`step_metrics`)
    goes to `history[step]` and, at epoch ends, into the epoch's `logs`, so
    Keras' `History` and any logger after this callback see it. The per-layer
    profile goes to `profile` (rows with `PROFILE_COLUMNS`).

    Args:
        x_probe: Inputs of the probe batch, kept fixed for the whole run.
        y_probe: Targets of the probe batch.
        loss: Loss to differentiate; None uses the compiled model's loss.
    """

    def __init__(self, x_probe: Any, y_probe: Any, loss: Any = None):
        super().__init__()
        self.x_probe = _as_input(x_probe)
        self.y_probe = _as_input(y_probe)
        self.loss = loss
        self.history: dict[int, dict[str, float]] = {}
        self.profile: list[dict[str, Any]] = []
        self.layer_names: list[str] = []
        self._probe: _KernelProbe | None = None
        self._recorded_model: keras.Model | None = None

    @property
    def first_layer(self) -> str | None:
        return self.layer_names[0] if self.layer_names else None

    @property
    def last_layer(self) -> str | None:
        return self.layer_names[-1] if self.layer_names else None

    def measure(self, step: int) -> dict[str, float]:
        """Measure now and record the result as `step`; returns the step metrics."""
        model = self.model
        if model is not self._recorded_model:  # a new model starts a new record
            self.history, self.profile = {}, []
            self._recorded_model = model
        # Resolve the loss only with the probe: `keras.losses.get` of a config
        # dict builds a new object each time, which would retrace every epoch.
        identifier = self.loss if self.loss is not None else getattr(model, "loss", None)
        if self._probe is None or not self._probe.matches(model, identifier):
            self._probe = _KernelProbe(model, resolve_loss(model, identifier), identifier)
            self.layer_names = list(self._probe.names)
        grad_norms, weight_norms, loss = self._probe(self.x_probe, self.y_probe)
        metrics = step_metrics(grad_norms, weight_norms, loss)
        self.history[step] = metrics
        self.profile = [row for row in self.profile if row["epoch"] != step]
        self.profile.extend(
            {
                "epoch": step,
                "layer_index": index,
                "layer_name": name,
                "grad_norm": float(g),
                "weight_norm": float(w),
            }
            for index, (name, g, w) in enumerate(
                zip(self.layer_names, grad_norms, weight_norms, strict=True)
            )
        )
        return metrics

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A resumed fit (initial_epoch > 0) starts where the last epoch ended,
        # which is already recorded; only a fresh record gets step 0.
        if self.model is not self._recorded_model or 0 not in self.history:
            self.measure(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = self.measure(int(epoch) + 1)
        if logs is not None:
            logs.update(metrics)

    def profile_frame(self) -> pd.DataFrame:
        """The per-layer profile as a DataFrame, one row per (step, kernel)."""
        return pd.DataFrame(self.profile, columns=PROFILE_COLUMNS)
