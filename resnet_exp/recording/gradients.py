"""Loss-gradient magnitudes per kernel: does the gradient still reach the first layer?

Two recorders, one record (`KernelGradientLog`: per-kernel norms at step 0 and
after every epoch, summarised as `step_metrics`):

* `StepGradientRecorder` (the default, `gradients.source=step`) reads the
  gradients the optimiser receives in Keras's own train step: step 0 is the first
  training step's gradient on the initial weights, step e the mean over epoch e's
  steps. What is differentiated is the compiled training loss, `model.losses`
  (regularisers) included, on the training batches as they are fed (shuffled,
  augmented). It costs a few norm ops per step.
* `GradientRecorder` (`gradients.source=probe`) differentiates the data loss alone
  on one FIXED probe batch, the same inputs at every measurement, so changes across
  epochs are changes of the network, not of the data. It runs in training mode
  (batch norm normalises with the batch statistics, as the optimiser sees it)
  through `Model.stateless_call` and throws the updated state away, so a seeded
  run trains bit for bit the same with or without it. It costs a second graph.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from resnet_exp import contract
from resnet_exp.compat import hook_optimizer_apply, unhook_optimizer_apply

LossFn = Callable[[Any, Any], Any]


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
    return keras.losses.get(identifier)  # a callable, or a ValueError naming the identifier


def as_input(data: Any) -> Any:
    """Tensors for the probe batch; float arrays become floatx, as `fit` does."""

    def convert(value: Any) -> tf.Tensor:
        tensor = tf.convert_to_tensor(value)
        if tensor.dtype.is_floating and tensor.dtype != keras.backend.floatx():
            tensor = tf.cast(tensor, keras.backend.floatx())
        return tensor

    return tf.nest.map_structure(convert, data)


def ensure_built(model: keras.Model, x: Any) -> None:
    """Build a lazily built (subclassed) model from the probe inputs' shapes.

    Keras would build it at the first training step, after `on_train_begin`;
    building it here, symbolically, creates the same variables with the same
    initial values (nothing is computed on data and no update is made), so
    step 0 can be measured before the first update.
    """
    if model.built:
        return
    spec = tf.nest.map_structure(
        lambda t: keras.KerasTensor((None, *t.shape[1:]), dtype=t.dtype.name), x
    )
    model(spec)


def _resolve_layer(names: list[str], request: str, which: str) -> int:
    """Index of the kernel that `request` names: a logged name or a layer's own name."""
    hits = [i for i, n in enumerate(names) if n == request or n.split("/")[-1] == request]
    if len(hits) != 1:
        problem = "matches no kernel" if not hits else "is ambiguous"
        raise ValueError(f"{which}_layer={request!r} {problem}; choose from: {', '.join(names)}")
    return hits[0]


class _KernelProbe:
    """One `tf.function` for one model, loss and probe batch: traced once, then reused.

    Calling it costs one forward and one backward pass over the probe batch and
    a single device-to-host copy of a small vector.

    Forward order: variables are created in whatever order the model's author
    wrote (a subclassed model may create its head first), so the kernels are
    ordered by where the traced forward pass first uses each of them: the
    creation index of its first consuming op in the probe's own graph. That
    costs nothing beyond the trace and holds for functional, Sequential and
    subclassed models alike.
    """

    def __init__(self, model: keras.Model, loss_fn: LossFn, x: Any, y: Any, loss_identifier=None):
        ensure_built(model, x)
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
        # Keras's `fit` omits `training` when `model.call` does not take it
        takes_training = "training" in inspect.signature(model.call).parameters
        self._call_kwargs = {"training": True} if takes_training else {}
        self._signature = self._variables_signature(model)
        self._fn = tf.function(
            self._measure,
            reduce_retracing=True,
            autograph=False,  # straight-line code: skip AutoGraph's conversion cost
            jit_compile=bool(getattr(model, "jit_compile", False)),
        )
        self._fn.get_concrete_function(x, y)  # trace now: the forward order comes from it
        self.order, self.num_used = self._forward_order()
        paths = [self._trainable[self._kernel_index[i]].path for i in self.order]
        self.names = [p.removesuffix(_KERNEL_SUFFIX) for p in paths]

    def _forward_order(self) -> tuple[np.ndarray, int]:
        """Kernels sorted by first use in the forward pass; unused ones last, in creation order."""
        kernels, forward_ops = self._traced
        position = {op.name: i for i, op in enumerate(forward_ops)}
        first_use = []
        for tensor in kernels:
            uses = [position[op.name] for op in tensor.consumers() if op.name in position]
            first_use.append(min(uses) if uses else len(position))
        num_used = sum(u < len(position) for u in first_use)
        if num_used == 0:
            raise ValueError(
                f"No kernel of model {self.model.name!r} is used by its forward pass; "
                "name the layers to compare with GradientRecorder(first_layer=..., last_layer=...)."
            )
        return np.argsort(first_use, kind="stable"), num_used

    @staticmethod
    def _variables_signature(model: keras.Model) -> tuple[list[int], list[int]]:
        return [*map(id, model.trainable_variables)], [*map(id, model.non_trainable_variables)]

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
        kernels = [trainable[i] for i in self._kernel_index]
        with tf.GradientTape() as tape:
            tape.watch(trainable)
            y_pred, _discarded_state = self.model.stateless_call(
                trainable, non_trainable, x, **self._call_kwargs
            )
            # Functions give one loss per sample, Loss objects a reduced value;
            # the mean makes both the "sum_over_batch_size" loss that fit uses.
            loss = tf.reduce_mean(tf.cast(self.loss_fn(y, y_pred), tf.float32))
        # Runs while tracing only: the graph's ops so far, in creation order, are the forward pass.
        self._traced = (kernels, list(loss.graph.get_operations()))
        grads = tape.gradient(loss, kernels, unconnected_gradients=tf.UnconnectedGradients.ZERO)
        grad_norms = [tf.norm(tf.cast(g, tf.float32)) for g in grads]
        weight_norms = [tf.norm(tf.cast(k, tf.float32)) for k in kernels]
        # One vector, so the caller pays a single device-to-host transfer.
        return tf.stack([*grad_norms, *weight_norms, loss])

    def __call__(self, x: Any, y: Any) -> tuple[np.ndarray, np.ndarray, float]:
        values = self._fn(x, y).numpy().astype(np.float64)
        n = len(self._kernel_index)
        return values[:n][self.order], values[n : 2 * n][self.order], float(values[-1])


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
    x, y = as_input(x), as_input(y)
    probe = _KernelProbe(model, resolve_loss(model, loss_fn), x, y)
    grad_norms, weight_norms, loss = probe(x, y)
    return list(probe.names), grad_norms, weight_norms, loss


def _ratio(numerator: float, denominator: float) -> float:
    with np.errstate(divide="ignore", invalid="ignore"):
        return float(np.float64(numerator) / np.float64(denominator))


def step_metrics(
    grad_norms: np.ndarray,
    weight_norms: np.ndarray,
    loss: float | None = None,
    first: int = 0,
    last: int = -1,
) -> dict[str, float]:
    """The scalar summary logged per step: first and last layer, and their ratio."""
    g_first, g_last = float(grad_norms[first]), float(grad_norms[last])
    metrics = {
        contract.GRAD_FIRST: g_first,
        contract.GRAD_LAST: g_last,
        contract.GRAD_FIRST_REL: _ratio(g_first, weight_norms[first]),
        contract.GRAD_LAST_REL: _ratio(g_last, weight_norms[last]),
        contract.GRAD_RATIO: _ratio(g_first, g_last),
    }
    if loss is not None:
        metrics[contract.PROBE_LOSS] = float(loss)
    return metrics


class KernelGradientLog(keras.callbacks.Callback):
    """What both recorders keep: per-step summaries, the per-layer profile, layer names.

    Kernels are kept in forward order; `first_layer`/`last_layer` name the two
    the summary compares (by default the first and last the forward pass uses).
    """

    def __init__(self, first_layer: str | None = None, last_layer: str | None = None):
        super().__init__()
        self.history: dict[int, dict[str, float]] = {}
        self.profile: list[dict[str, Any]] = []
        self.layer_names: list[str] = []
        self._requested = (first_layer, last_layer)
        self._ends: tuple[int, int] = (0, -1)
        self._recorded_model: keras.Model | None = None

    @property
    def first_layer(self) -> str | None:
        return self.layer_names[self._ends[0]] if self.layer_names else None

    @property
    def last_layer(self) -> str | None:
        return self.layer_names[self._ends[1]] if self.layer_names else None

    def _set_layers(self, names: list[str], num_used: int) -> None:
        """Name the kernels in forward order and pick the first and last to summarise."""
        first, last = self._requested
        self.layer_names = list(names)
        self._ends = (
            0 if first is None else _resolve_layer(names, first, "first"),
            num_used - 1 if last is None else _resolve_layer(names, last, "last"),
        )

    def _fresh_record(self) -> bool:
        """True (and the record emptied) when the model changed since the last record."""
        if self.model is self._recorded_model:
            return False
        self.history, self.profile = {}, []
        self._recorded_model = self.model
        return True

    def record(
        self,
        step: int,
        grad_norms: np.ndarray,
        weight_norms: np.ndarray,
        loss: float | None = None,
    ) -> dict[str, float]:
        """Store one step's norms (kernels in `layer_names` order); returns its summary."""
        self._fresh_record()  # a new model starts a new record
        metrics = step_metrics(grad_norms, weight_norms, loss, *self._ends)
        if step in self.history:  # measured again (a resumed fit): replace its rows
            self.profile = [row for row in self.profile if row["epoch"] != step]
        self.history[step] = metrics
        self.profile.extend(
            dict(
                zip(contract.PROFILE_COLUMNS, [step, index, name, float(g), float(w)], strict=True)
            )
            for index, (name, g, w) in enumerate(
                zip(self.layer_names, grad_norms, weight_norms, strict=True)
            )
        )
        return metrics

    def profile_frame(self) -> pd.DataFrame:
        """The per-layer profile as a DataFrame, one row per (step, kernel)."""
        return pd.DataFrame(self.profile, columns=contract.PROFILE_COLUMNS)

    def state(self) -> dict[str, Any]:
        """What was recorded, as JSON-able values: a checkpoint keeps it (`restore`)."""
        return {
            "history": {str(step): metrics for step, metrics in self.history.items()},
            "profile": self.profile,
            "layer_names": self.layer_names,
            "ends": list(self._ends),
        }

    def restore(self, state: dict[str, Any], model: keras.Model) -> None:
        """Continue the record `state()` saved, for `model` (a resumed fit): its steps are
        kept and step 0 is not measured again."""
        self.history = {int(step): dict(m) for step, m in state["history"].items()}
        self.profile = [dict(row) for row in state["profile"]]
        self.layer_names = list(state["layer_names"])
        self._ends = (int(state["ends"][0]), int(state["ends"][1]))
        self._recorded_model = model


class GradientRecorder(KernelGradientLog):
    """Records per-kernel loss-gradient norms on a fixed probe batch during `fit`.

    Step 0 is measured in `on_train_begin`, before the first update (a lazily
    built subclassed model is built from the probe's shapes first); step
    `epoch + 1` at the end of each epoch. Each step's summary (`step_metrics`)
    goes to `history[step]` and, at epoch ends, into the epoch's `logs`, so
    Keras' `History` and any logger after this callback see it. The per-layer
    profile goes to `profile` (rows with `contract.PROFILE_COLUMNS`), kernels in forward
    order.

    Works on functional, Sequential and subclassed models, with or without a
    `training` argument to `call` (omitted when absent, as Keras's `fit` does).

    Args:
        x_probe: Inputs of the probe batch, kept fixed for the whole run.
        y_probe: Targets of the probe batch.
        loss: Loss to differentiate; None uses the compiled model's loss.
        first_layer, last_layer: The layers to summarise as "first" and "last"
            (a logged layer name or a layer's own name); by default the first
            and last kernel the forward pass uses.
    """

    def __init__(
        self,
        x_probe: Any,
        y_probe: Any,
        loss: Any = None,
        first_layer: str | None = None,
        last_layer: str | None = None,
    ):
        super().__init__(first_layer, last_layer)
        self.x_probe = as_input(x_probe)
        self.y_probe = as_input(y_probe)
        self.loss = loss
        self._probe: _KernelProbe | None = None

    def measure(self, step: int) -> dict[str, float]:
        """Measure now and record the result as `step`; returns the step metrics."""
        model = self.model
        # Resolve the loss only with the probe: `keras.losses.get` of a config
        # dict builds a new object each time, which would retrace every epoch.
        identifier = self.loss if self.loss is not None else getattr(model, "loss", None)
        if self._probe is None or not self._probe.matches(model, identifier):
            self._probe = _KernelProbe(
                model, resolve_loss(model, identifier), self.x_probe, self.y_probe, identifier
            )
            self._set_layers(self._probe.names, self._probe.num_used)
        return self.record(step, *self._probe(self.x_probe, self.y_probe))

    def on_train_begin(self, logs: dict | None = None) -> None:
        # A resumed fit (initial_epoch > 0) starts where the last epoch ended,
        # which is already recorded; only a fresh record gets step 0.
        if self.model is not self._recorded_model or 0 not in self.history:
            self.measure(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = self.measure(int(epoch) + 1)
        if logs is not None:
            logs.update(metrics)


class StepGradientRecorder(KernelGradientLog):
    """Per-kernel gradient norms of the training steps themselves: what the optimiser received.

    Step 0 is the first training step's gradient (on the initial weights, before
    the first update); step `epoch + 1` is the mean over that epoch's steps of
    each kernel's gradient norm, with the weight norms at the epoch's end. No
    `probe_loss` is recorded (`train_loss` is).

    Kernel order: the creation order of the kernels' gradient ops, reversed.
    Back-propagation creates a kernel's gradient only after those of every layer
    downstream of it, so this is a forward (topological) order: the classifier
    last, the stem first, for any kind of model.

    The hook (`compat.hook_optimizer_apply`) is in place for the duration of `fit`.
    With a `LossScaleOptimizer` (mixed precision) the norms are unscaled, and steps
    the optimiser skips for non-finite gradients are not counted.
    """

    def __init__(self, first_layer: str | None = None, last_layer: str | None = None):
        super().__init__(first_layer, last_layer)
        self._state: _StepState | None = None
        self._optimizer: keras.optimizers.Optimizer | None = None

    def on_train_begin(self, logs: dict | None = None) -> None:
        fresh = self._fresh_record() or 0 not in self.history
        self._optimizer = hook_optimizer_apply(self.model, self._hooked_apply)
        if self.model.built:  # else (built lazily) the state is created in the trace
            self._ensure_state(
                [v for v in self.model.trainable_variables if v.path.endswith(_KERNEL_SUFFIX)]
            )
        if self._state is not None:
            self._state.reset(first=fresh)

    def _ensure_state(self, kernels: list) -> None:
        """Accumulators for these kernels; made before the trace when possible, since a
        `tf.function` that creates variables is traced twice."""
        if self._state is None or list(map(id, self._state.kernels)) != list(map(id, kernels)):
            self._state = _StepState(kernels)

    def _hooked_apply(self, apply: Callable) -> Callable:
        def hooked(grads, trainable_variables=None):
            variables = list(
                self.model.trainable_variables
                if trainable_variables is None
                else trainable_variables
            )
            self._accumulate(list(grads), variables)
            return apply(grads, trainable_variables)

        return hooked

    def _accumulate(self, grads: list, variables: list) -> None:
        """Runs once per trace, inside the train step: adds the accumulating ops."""
        index = [i for i, v in enumerate(variables) if v.path.endswith(_KERNEL_SUFFIX)]
        if not index:
            raise ValueError(f"Model {self.model.name!r} has no trainable kernel to measure.")
        kernels = [variables[i] for i in index]
        kernel_grads = [grads[i] for i in index]
        self._ensure_state(kernels)
        order, num_used = _backward_order(kernel_grads)
        self._state.order = order
        self._set_layers([kernels[i].path.removesuffix(_KERNEL_SUFFIX) for i in order], num_used)
        # l2_loss is sum(g**2) / 2 in one fused op: one op per kernel, not a square and a sum
        halves = [
            tf.zeros([]) if g is None else tf.nn.l2_loss(tf.cast(g, tf.float32))
            for g in kernel_grads
        ]
        norms = tf.sqrt(2.0 * tf.stack(halves))
        scale = getattr(self._optimizer, "dynamic_scale", None)  # LossScaleOptimizer
        if scale is not None:
            norms = norms / tf.cast(scale, tf.float32)
            keep = tf.reduce_all(tf.math.is_finite(norms))  # the optimiser skips this step
            norms = tf.where(keep, norms, tf.zeros_like(norms))
            counted = tf.cast(keep, tf.float32)
        else:
            counted = tf.ones([])
        self._state.add(norms, counted)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        state = self._state
        if state is None:  # no training step ran (an empty dataset)
            return
        first, means, weight_norms = state.read()
        if 0 not in self.history and first is not None:
            self.record(0, first[0][state.order], first[1][state.order])
        metrics = self.record(int(epoch) + 1, means[state.order], weight_norms[state.order])
        if logs is not None:
            logs.update(metrics)

    def on_train_end(self, logs: dict | None = None) -> None:
        if self._optimizer is not None:
            unhook_optimizer_apply(self.model, self._optimizer)  # a later fit: no hook
            self._optimizer = None


class _StepState:
    """Variables the hooked train step writes to: step-0 norms and per-epoch sums.

    Weight norms are read eagerly, outside the train step: at creation or reset
    (before any update: step 0) and at each epoch's end, so the step itself adds
    only one op per kernel (`l2_loss`, a fused sum of squares) and a few for the whole
    vector.
    """

    def __init__(self, kernels: list):
        self.kernels = kernels
        self.order = np.arange(len(kernels))
        n = len(kernels)
        with tf.init_scope():  # created once, outside the train function's graph
            self.first = tf.Variable(tf.zeros([n]), trainable=False)
            self.sums = tf.Variable(tf.zeros([n]), trainable=False)
            self.steps = tf.Variable(0.0, trainable=False)
            self.pending_first = tf.Variable(True, trainable=False)
        self.initial_weights = self.weight_norms()

    def weight_norms(self) -> np.ndarray:
        # NumPy on the variables' values: a third of the time of an eager TF op per kernel
        with tf.init_scope():  # eager even when called while the train step traces
            return np.array(
                [np.linalg.norm(np.asarray(k.numpy(), dtype=np.float64)) for k in self.kernels]
            )

    def add(self, norms: tf.Tensor, counted: tf.Tensor) -> None:
        """In-graph: remember the first counted step, add this step to the epoch's sums."""
        take = tf.logical_and(self.pending_first, counted > 0)
        self.first.assign(tf.where(take, norms, self.first))
        self.pending_first.assign(tf.logical_and(self.pending_first, tf.logical_not(take)))
        self.sums.assign_add(norms)
        self.steps.assign_add(counted)

    def reset(self, first: bool) -> None:
        self.sums.assign(tf.zeros_like(self.sums))
        self.steps.assign(0.0)
        self.pending_first.assign(first)
        if first:
            self.initial_weights = self.weight_norms()

    def read(self) -> tuple[tuple[np.ndarray, np.ndarray] | None, np.ndarray, np.ndarray]:
        """(step-0 grad and weight norms or None, this epoch's mean norms, weight norms now)."""
        steps = float(self.steps.numpy())
        means = (
            self.sums.numpy().astype(np.float64) / steps
            if steps
            else np.full(len(self.kernels), np.nan)
        )
        first = None
        if not bool(self.pending_first.numpy()):
            first = (self.first.numpy().astype(np.float64), self.initial_weights)
        self.sums.assign(tf.zeros_like(self.sums))
        self.steps.assign(0.0)
        return first, means, self.weight_norms()


def _backward_order(kernel_grads: list) -> tuple[np.ndarray, int]:
    """Kernels in forward order, from the creation order of their gradient ops (reversed)."""
    present = [g for g in kernel_grads if g is not None]
    if not present or not hasattr(present[0], "graph"):  # eager (run_eagerly): keep creation order
        return np.arange(len(kernel_grads)), len(kernel_grads)
    position = {op.name: i for i, op in enumerate(present[0].graph.get_operations())}
    # -1: no gradient (unused kernel), sorted last
    created = [-1 if g is None else position.get(g.op.name, -1) for g in kernel_grads]
    order = np.argsort([-c for c in created], kind="stable")
    return order, sum(c >= 0 for c in created)
