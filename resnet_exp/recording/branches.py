"""How much does each block add? ‖F(x)‖ / ‖x‖ per block on the fixed probe batch.

A residual block computes act(x + F(x)). If a deep residual net "falls back"
to a shallower one, many of its branches F stay small next to their input.
`BranchRecorder` measures, for every block, the L2 norm of the residual
branch's output F(x) (before the addition) over the norm of the block's input
x, both taken over the whole probe batch (Frobenius norms). For a plain block,
which has no branch apart from itself, it is the block's output over its
input. Where a block downsamples, input and output differ in shape; the ratio
of norms is still defined and is reported as it is (the `downsampling`
column marks those blocks).

Training mode, like the gradient probe: batch norm normalises with the probe
batch's own statistics. At initialisation the moving statistics are still
their defaults (mean 0, variance 1), so an inference-mode pass would measure
an un-normalised net that no optimiser step ever sees. The pass runs through
`Model.stateless_call` and throws the updated state away, so it has no side
effects on training. Cost: one forward pass over the probe batch per epoch,
plus tracing it once.
"""

from __future__ import annotations

import time
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from resnet_exp import contract
from resnet_exp.models.anatomy import block_input, block_specs, branch_output


class _BranchProbe:
    """A functional view of `model` that outputs (x, F(x)) of every block, traced once."""

    def __init__(self, model: keras.Model):
        self.model = model
        self.specs = block_specs(model)
        outputs = []
        for spec in self.specs:
            outputs += [block_input(model, spec.name), branch_output(model, spec.name)]
        # Shares the model's layers and variables: no copy, always the current weights.
        self.view = keras.Model(model.inputs, outputs, name=f"{model.name}_branches")
        self._fn = tf.function(self._norms, reduce_retracing=True, autograph=False)

    def _norms(self, x: Any) -> tf.Tensor:
        trainable = [tf.convert_to_tensor(v.value) for v in self.view.trainable_variables]
        non_trainable = [tf.convert_to_tensor(v.value) for v in self.view.non_trainable_variables]
        outputs, _discarded_state = self.view.stateless_call(
            trainable, non_trainable, x, training=True
        )
        return tf.stack([tf.norm(tf.cast(t, tf.float32)) for t in outputs])

    def __call__(self, x: Any) -> tuple[np.ndarray, np.ndarray]:
        """(input norms, branch norms), one entry per block."""
        values = self._fn(x).numpy().astype(np.float64)
        return values[0::2], values[1::2]


class BranchRecorder(keras.callbacks.Callback):
    """Records ‖F(x)‖ / ‖x‖ per block at initialisation (step 0) and after every epoch.

    Each step's summary (`branch_ratio_mean`, `branch_ratio_max`, and the probe's
    own wall time `branch_probe_s`) goes to `history[step]` and, at epoch ends,
    into the epoch's `logs`; per-block rows (`contract.BRANCH_COLUMNS`) go to `rows`.
    """

    def __init__(self, x_probe: Any):
        super().__init__()
        self.x_probe = tf.convert_to_tensor(np.asarray(x_probe), dtype=keras.backend.floatx())
        self.history: dict[int, dict[str, float]] = {}
        self.rows: list[list[Any]] = []  # in the order of contract.BRANCH_COLUMNS
        self._probe: _BranchProbe | None = None
        self._recorded_model: keras.Model | None = None

    def measure(self, step: int) -> dict[str, float]:
        started = time.perf_counter()
        if self._probe is None or self._probe.model is not self.model:
            self._probe = _BranchProbe(self.model)
        if self._recorded_model is not self.model:  # a new model starts a new record
            self.history, self.rows = {}, []
            self._recorded_model = self.model
        input_norms, branch_norms = self._probe(self.x_probe)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratios = branch_norms / input_norms
        norms = zip(self._probe.specs, branch_norms, input_norms, ratios, strict=True)
        self.rows.extend(
            [step, s.index, s.name, s.stage, s.downsampling, float(b), float(i), float(r)]
            for s, b, i, r in norms
        )
        metrics = {
            contract.BRANCH_RATIO_MEAN: float(np.mean(ratios)),
            contract.BRANCH_RATIO_MAX: float(np.max(ratios)),
            contract.BRANCH_PROBE_TIME: time.perf_counter() - started,
        }
        self.history[step] = metrics
        return metrics

    def on_train_begin(self, logs: dict | None = None) -> None:
        if self.model is not self._recorded_model or 0 not in self.history:
            self.measure(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        metrics = self.measure(int(epoch) + 1)
        if logs is not None:
            logs.update(metrics)

    def state(self) -> dict[str, Any]:
        """What was recorded, as JSON-able values: a checkpoint keeps it (`restore`)."""
        return {"history": {str(k): v for k, v in self.history.items()}, "rows": self.rows}

    def restore(self, state: dict[str, Any], model: keras.Model) -> None:
        """Continue the record `state()` saved, for `model` (a resumed fit; no new step 0)."""
        self.history = {int(step): dict(m) for step, m in state["history"].items()}
        self.rows = [list(row) for row in state["rows"]]
        self._recorded_model = model

    def frame(self) -> pd.DataFrame:
        """The per-block values, one row per (step, block): `branch_magnitude.csv`."""
        return pd.DataFrame(self.rows, columns=contract.BRANCH_COLUMNS)
