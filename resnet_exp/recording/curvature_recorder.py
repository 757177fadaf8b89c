"""The Hessian's top eigenvalue and trace of a training run, at initialisation, every
`curvature.every` epochs and after training (issue 18; the estimates are `curvature.py`'s).

A Keras callback like the gradient and branch recorders: each measurement's metrics
(`contract.CURVATURE_METRICS`) go to `history[step]` and, after an epoch, to `sink` (not
into Keras's logs: History's columns would be of unequal length); one row per measurement
goes to `rows` (`curvature.csv`), the spectral density's nodes to `density_rows`
(`hessian_density.csv`). It runs after `EpochTimer` in the callback list, so
`epoch_time_s` does not count it; it reports its own time.

Batch norm's mode (`curvature.bn_mode`): `auto` measures the initialisation in training
mode and later epochs in inference mode. At initialisation the moving statistics are
their defaults (mean 0, variance 1), so an inference-mode net is the net without
normalisation, which no training step sees; after training the moving statistics are
the net's own and the inference-mode loss is the trained net as it is evaluated (and as
the loss landscape measures it), independent of which examples share the batch. Each
row of `curvature.csv` says which mode it used.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import keras
import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.recording.curvature import HessianProbe, measure_curvature


class CurvatureRecorder(keras.callbacks.Callback):
    """Measures the data loss's curvature on a fixed batch at chosen steps.

    Args:
        x, y: The fixed batch (normalised, not augmented).
        settings: The `curvature` config section (iterations, rtol, top_k, samples,
            density_runs, lanczos_steps, every, bn_mode).
        seed: Seeds the random vectors; each step uses the same ones, so a change between
            steps is the weights', not the draw's.
        sink: Called with (metrics, step) for each measurement after an epoch (the run's
            log); step 0's are in `history[0]` for the epoch logger, as other recorders'.
    """

    def __init__(
        self,
        x: np.ndarray,
        y: np.ndarray,
        settings: Any,
        seed: int = 0,
        sink: Callable[[dict[str, float], int], None] | None = None,
    ):
        super().__init__()
        self.sink = sink
        self.x, self.y = x, y
        self.settings = settings
        self.seed = seed
        self.history: dict[int, dict[str, float]] = {}
        self.rows: list[dict[str, Any]] = []
        self.density_rows: list[dict[str, Any]] = []
        self._probes: dict[bool, HessianProbe] = {}  # by training mode: one trace each

    def training_mode(self, step: int) -> bool:
        mode = str(self.settings.bn_mode)
        return mode == "training" or (mode == "auto" and step == 0)

    def measure(self, step: int, model: keras.Model | None = None) -> dict[str, float]:
        """Measure at the model's current weights and record it as `step`."""
        model = model or self.model
        training = self.training_mode(step)
        probe = self._probes.get(training)
        if probe is None or probe.model is not model:
            probe = self._probes[training] = HessianProbe(model, self.x, self.y, training=training)
        s = self.settings
        result = measure_curvature(
            probe,
            iterations=int(s.iterations),
            rtol=float(s.rtol),
            top_k=int(s.top_k),
            samples=int(s.samples),
            density_runs=int(s.density_runs),
            lanczos_steps=int(s.lanczos_steps),
            seed=self.seed,
        )
        self.rows.append(result.row(step, len(self.x)))
        if result.density is not None:
            nodes = result.density.nodes.assign(epoch=step)
            self.density_rows += nodes[contract.DENSITY_COLUMNS].to_dict("records")
        self.history[step] = result.metrics()
        return self.history[step]

    def on_train_begin(self, logs: dict | None = None) -> None:
        if 0 not in self.history:
            self.measure(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        every = int(self.settings.every)
        if every and (epoch + 1) % every == 0 and _finite(self.model):
            metrics = self.measure(epoch + 1)
            if self.sink is not None:
                self.sink(metrics, epoch + 1)

    def finish(self, step: int, model: keras.Model) -> dict[str, float]:
        """The measurement after training, at `step` (the last epoch); none if that epoch
        was measured already, or the weights are no longer finite (a diverged run)."""
        if step in self.history or not _finite(model):
            return {}
        return self.measure(step, model)

    def state(self) -> dict[str, Any]:
        """What was recorded, as JSON-able values: a checkpoint keeps it (`restore`)."""
        return {
            "history": {str(k): v for k, v in self.history.items()},
            "rows": _plain(self.rows),
            "density_rows": _plain(self.density_rows),
        }

    def restore(self, state: dict[str, Any], model: keras.Model) -> None:
        """Continue the record `state()` saved (a resumed fit; no new step 0)."""
        self.history = {int(step): dict(m) for step, m in state["history"].items()}
        self.rows = list(state["rows"])
        self.density_rows = list(state.get("density_rows", []))

    def frame(self) -> pd.DataFrame:
        """`curvature.csv`: one row per measurement."""
        return pd.DataFrame(self.rows)

    def density_frame(self) -> pd.DataFrame:
        """`hessian_density.csv`: the SLQ nodes of every measurement."""
        return pd.DataFrame(self.density_rows, columns=contract.DENSITY_COLUMNS)


def _finite(model: keras.Model) -> bool:
    return all(bool(np.isfinite(v.numpy()).all()) for v in model.trainable_variables)


def _plain(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """NumPy scalars as Python ones, for a JSON checkpoint."""
    return [{k: v.item() if isinstance(v, np.generic) else v for k, v in r.items()} for r in rows]
