"""Each epoch's layer-wise gradient profile as an MLflow image, for the chart view's slider.

`log_image(key=..., step=...)` makes an image chart in MLflow's chart view whose
step slider walks through training: here, the gradient norm of every kernel
(first layer left, classifier right) at that epoch, over the profile at
initialisation in grey, as log10 values. The figure is small, drawn with
matplotlib's Agg canvas (no pyplot, no window) and reused from step to step;
`scripts/bench_profile_images.py` measures what it costs per epoch.
`tracking.profile_images=false` turns it off.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence

import keras
import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from mlflow.tracking import MlflowClient

from resnet_exp.tracking import with_retry

IMAGE_KEY = "grad_profile"
_SIZE = (4.0, 2.4)  # inches, at 80 dpi: 320 x 192 pixels
_DPI = 80


class ProfilePlot:
    """One small figure, redrawn per step: building axes and log-axis tick labels
    (mathtext) each time costs several times more than updating two lines."""

    def __init__(self) -> None:
        self.fig = Figure(figsize=_SIZE, dpi=_DPI)
        FigureCanvasAgg(self.fig)
        self.fig.subplots_adjust(left=0.15, right=0.97, top=0.88, bottom=0.2)
        ax = self.ax = self.fig.add_subplot()
        (self.init,) = ax.plot([], [], color="0.7", linewidth=1.2, label="init")
        (self.now,) = ax.plot([], [], color="#1f77b4", linewidth=1.5, marker=".", markersize=3)
        ax.set_xlabel("layer (first → last)", fontsize=8)
        ax.set_ylabel("log10 ‖∂L/∂W‖", fontsize=8)  # log values on a linear axis: fast ticks
        ax.tick_params(labelsize=7)
        self.title = ax.set_title("", fontsize=9)

    def render(
        self, grad_norms: Sequence[float], init_norms: Sequence[float] | None, title: str
    ) -> np.ndarray:
        """An RGB uint8 array: log10 gradient norm per layer index, initialisation in grey."""
        with np.errstate(divide="ignore", invalid="ignore"):
            now = np.log10(np.asarray(grad_norms, dtype=float))
            init = np.log10(np.asarray(init_norms, dtype=float)) if init_norms else []
        self.now.set_data(np.arange(len(now)), now)
        self.init.set_data(np.arange(len(init)), init)
        self.title.set_text(title)
        self.ax.relim()
        self.ax.autoscale_view()
        self.fig.canvas.draw()
        return np.asarray(self.fig.canvas.buffer_rgba())[..., :3].copy()


class ProfileImageLogger(keras.callbacks.Callback):
    """Logs the profile measured by an earlier callback, once per step, as an image.

    `profile(step)` returns that step's per-layer gradient norms (or None when
    nothing was measured); it must run after the recorder in the callback list.
    """

    def __init__(
        self,
        client: MlflowClient,
        run_id: str,
        profile: Callable[[int], Sequence[float] | None],
        *,
        label: str = "",
    ):
        super().__init__()
        self.client, self.run_id, self.profile = client, run_id, profile
        self.label = label
        self.seconds: list[float] = []  # per logged image: render + upload
        self.plot = ProfilePlot()
        self._logged: set[int] = set()
        self._init: Sequence[float] | None = None

    @classmethod
    def from_recorder(
        cls,
        client: MlflowClient,
        run_id: str,
        recorder: keras.callbacks.Callback,
        *,
        label: str = "",
    ) -> ProfileImageLogger:
        """Read a `GradientRecorder`'s profile through its public `profile_frame()`."""

        def norms(step: int) -> list[float]:
            frame = recorder.profile_frame()
            rows = frame.loc[frame["epoch"] == step].sort_values("layer_index")
            return rows["grad_norm"].tolist()

        return cls(client, run_id, norms, label=label)

    def _log(self, step: int) -> None:
        if step in self._logged:  # checked first: reading the profile is the costly part
            return
        norms = self.profile(step)
        if norms is None or len(norms) == 0:
            return
        self._logged.add(step)
        if step == 0:
            self._init = norms  # drawn in grey under every later step
        start = time.perf_counter()
        init = self._init if step else None
        title = f"{self.label} {'initialisation' if step == 0 else f'epoch {step}'}".strip()
        image = self.plot.render(norms, init, title)
        with_retry(
            self.client.log_image, self.run_id, image, key=IMAGE_KEY, step=step, synchronous=True
        )
        self.seconds.append(time.perf_counter() - start)

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._log(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # an in-step recorder (gradients.source=step) has step 0 only once the first
        # epoch's first step has run: log it then, before the epoch's own image
        self._log(0)
        self._log(int(epoch) + 1)
