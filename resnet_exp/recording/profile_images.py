"""A run's layer-wise gradient profile as images: one per epoch, and every epoch in one.

`log_image(key=..., step=...)` makes an image chart in MLflow's chart view whose
step slider walks through training: here, the gradient norm of every kernel
(first layer left, classifier right) at that epoch, over the profile at
initialisation in grey, as log10 values. MLflow names those files itself
(`images/grad_profile+step+<step>+timestamp+...`, unpadded, so its artifact browser
lists step 10 before step 2), and its UI reads every file in `images/` as such a
name: so each epoch's picture is also logged as `grad_profile_epochs/epoch_<NNN>.png`
(zero-padded: listed in epoch order), and when training ends every epoch's profile
is drawn in one picture, `grad_profile_all_epochs.png`, coloured by epoch.
The figures are drawn with matplotlib's Agg canvas (no pyplot, no window); the
per-epoch one is reused from step to step. `scripts/dev/bench_profile_images.py`
measures what they cost. `tracking.profile_images=false` turns them all off.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future

import keras
import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.cm import ScalarMappable
from matplotlib.colors import BoundaryNorm, ListedColormap
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from resnet_exp import contract
from resnet_exp.tracking.run_log import RunLog

_SIZE = (4.0, 2.4)  # inches, at 80 dpi: 320 x 192 pixels
_ALL_EPOCHS_SIZE = (10.0, 6.0)  # 800 x 480 pixels: read in the artifact viewer, not a card
_DPI = 80
_X_LABEL = "layer (first → last)"
_Y_LABEL = "log10 ‖∂L/∂W‖"  # log values on a linear axis: fast ticks


class ProfilePlot:
    """One small figure, redrawn per step by blitting.

    Drawing the axes (ticks, tick labels, title layout) is three quarters of a full
    Agg draw. The x range is fixed by the number of layers and the y range is
    rounded out to whole decades, so the axes change only when the profile leaves
    its decades: they are drawn then, kept as a background, and each step restores
    it and draws just the two lines and the title over it (matplotlib's documented
    blitting technique). About 2 ms an image instead of 17 ms.
    """

    def __init__(self) -> None:
        self.fig = Figure(figsize=_SIZE, dpi=_DPI)
        self.canvas = FigureCanvasAgg(self.fig)
        self.fig.subplots_adjust(left=0.15, right=0.97, top=0.88, bottom=0.2)
        ax = self.ax = self.fig.add_subplot()
        (self.init,) = ax.plot([], [], color="0.7", linewidth=1.2, label="init")
        (self.now,) = ax.plot([], [], color="#1f77b4", linewidth=1.5, marker=".", markersize=3)
        ax.set_xlabel(_X_LABEL, fontsize=8)
        ax.set_ylabel(_Y_LABEL, fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))  # layers are counted
        # a figure text at a fixed place: an axes title is re-laid out on every full draw
        self.title = self.fig.text(0.56, 0.97, "", fontsize=9, ha="center", va="top")
        self._frame: tuple[int, float, float] | None = None  # what the background shows
        self._background = None

    def render(
        self, grad_norms: Sequence[float], init_norms: Sequence[float] | None, title: str
    ) -> np.ndarray:
        """An RGB uint8 array: log10 gradient norm per layer index, initialisation in grey."""
        now, init = _log10(grad_norms), _log10(init_norms or [])
        self.now.set_data(np.arange(len(now)), now)
        self.init.set_data(np.arange(len(init)), init)
        self.title.set_text(title)
        frame = _extent(len(now), np.concatenate([now, init]))
        if frame != self._frame:
            self._draw_background(frame)
        self.canvas.restore_region(self._background)
        self.ax.draw_artist(self.init)
        self.ax.draw_artist(self.now)
        self.fig.draw_artist(self.title)
        return np.asarray(self.canvas.buffer_rgba())[..., :3].copy()

    def _draw_background(self, frame: tuple[int, float, float]) -> None:
        """Draw the axes for this x and y range without the lines and title, and keep them."""
        layers, low, high = frame
        self.ax.set_xlim(-0.5, layers - 0.5)
        self.ax.set_ylim(low, high)
        moving = (self.init, self.now, self.title)
        for artist in moving:
            artist.set_visible(False)
        self.canvas.draw()
        self._background = self.canvas.copy_from_bbox(self.fig.bbox)
        for artist in moving:
            artist.set_visible(True)
        self._frame = frame


def all_epochs_image(profiles: dict[int, Sequence[float]], title: str) -> np.ndarray:
    """Every step's profile in one RGB uint8 picture: initialisation (step 0) dashed
    black, epochs 1..E coloured from dark to light (viridis, with a colour bar).

    Drawn once, when training ends: a plain full draw, no blitting (what it costs:
    `scripts/dev/bench_profile_images.py`, its last column).
    """
    fig = Figure(figsize=_ALL_EPOCHS_SIZE, dpi=_DPI, layout="constrained")
    canvas = FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    epochs = sorted(step for step in profiles if step > 0)
    if epochs:
        first, last = epochs[0], epochs[-1]
        # the palest end of viridis is lost on white: stop at 90 %
        cmap = ListedColormap(colormaps["viridis"](np.linspace(0.0, 0.9, last - first + 1)))
        norm = BoundaryNorm(np.arange(first - 0.5, last + 1.5), cmap.N)
        for step in epochs:
            values = _log10(profiles[step])
            ax.plot(np.arange(len(values)), values, color=cmap(norm(step)), linewidth=1.3)
        bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=ax, pad=0.02)
        bar.set_label("epoch")
        bar.locator = MaxNLocator(integer=True)
        bar.update_ticks()
    if 0 in profiles:
        values = _log10(profiles[0])
        ax.plot(np.arange(len(values)), values, "k--", linewidth=1.6, label="initialisation")
        ax.legend(loc="best", frameon=False)
    ax.set_xlabel(_X_LABEL)
    ax.set_ylabel(_Y_LABEL)
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.set_title(title)
    canvas.draw()
    return np.asarray(canvas.buffer_rgba())[..., :3].copy()


def epoch_file(step: int, epochs: int) -> str:
    """The artifact path of one step's picture, zero-padded to the run's epochs (at least
    3 digits), so that a listing sorted as text is in epoch order; step 0 is initialisation."""
    return f"{contract.PROFILE_EPOCH_IMAGES}/epoch_{step:0{max(3, len(str(epochs)))}d}.png"


def _log10(values: Sequence[float]) -> np.ndarray:
    """log10 of the norms; a zero or missing norm is a gap in the line, not an error."""
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.log10(np.asarray(values, dtype=float))


def _extent(layers: int, values: np.ndarray) -> tuple[int, float, float]:
    """The plot's x extent and its y range: the finite values' range rounded out to decades."""
    finite = values[np.isfinite(values)]
    if not finite.size:
        return max(layers, 1), 0.0, 1.0
    low, high = float(np.floor(finite.min())), float(np.ceil(finite.max()))
    return max(layers, 1), low, high if high > low else low + 1.0


class ProfileImageLogger(keras.callbacks.Callback):
    """Logs the profile measured by an earlier callback, once per step, as an image.

    `profile(step)` returns that step's per-layer gradient norms (or None when
    nothing was measured); it must run after the recorder in the callback list.
    Each step's picture goes to the image chart (`contract.PROFILE_IMAGE`) and, under
    a name that sorts, to `contract.PROFILE_EPOCH_IMAGES`; when training ends, every
    step's profile goes into `contract.PROFILE_ALL_EPOCHS_IMAGE`. Drawing and logging
    happen on one worker thread, so training does not wait for them: PNG and WebP
    encoding and the store's writes release the GIL and overlap the next epoch.
    `on_train_end` waits for the last picture, so every one is stored before `fit`
    returns, and re-raises a logging error there.
    """

    def __init__(
        self,
        log: RunLog,
        profile: Callable[[int], Sequence[float] | None],
        *,
        label: str = "",
    ):
        super().__init__()
        self.log, self.profile = log, profile
        self.label = label
        # seconds on the worker: per step (render, chart entry, sorted copy), of which the
        # sorted copy; and the all-epochs picture (draw and store)
        self.seconds: list[float] = []
        self.copy_seconds: list[float] = []
        self.all_epochs_seconds: float | None = None
        self.plot = ProfilePlot()  # used by the worker thread only
        self._logged: set[int] = set()
        self._init: Sequence[float] | None = None
        self._worker: _DaemonWorker | None = None
        self._pending: list[Future] = []

    @classmethod
    def from_recorder(
        cls,
        log: RunLog,
        recorder: keras.callbacks.Callback,
        *,
        label: str = "",
    ) -> ProfileImageLogger:
        """Read a recorder's per-layer `profile` rows (kept in layer order, step by step)."""

        def norms(step: int) -> list[float]:
            return [row["grad_norm"] for row in recorder.profile if row["epoch"] == step]

        return cls(log, norms, label=label)

    def resume_after(self, step: int) -> None:
        """A resumed fit: steps up to `step` were logged by the run's earlier process."""
        self._logged.update(range(step + 1))
        init = self.profile(0)
        self._init = list(init) if init is not None and len(init) else None

    def _norms(self, step: int) -> list[float] | None:
        norms = self.profile(step)
        return list(norms) if norms is not None and len(norms) else None  # a copy, for later

    def _log(self, step: int) -> None:
        if step in self._logged:
            return
        norms = self._norms(step)
        if norms is None:
            return
        self._logged.add(step)
        if step == 0:
            self._init = norms  # drawn in grey under every later step
        init = self._init if step else None
        title = f"{self.label} {'initialisation' if step == 0 else f'epoch {step}'}".strip()
        name = epoch_file(step, (self.params or {}).get("epochs") or step)
        self._submit(self._draw_and_log, step, norms, init, title, name)

    def _draw_and_log(
        self, step: int, norms: list[float], init: list[float] | None, title: str, name: str
    ) -> None:
        start = time.perf_counter()
        image = self.plot.render(norms, init, title)
        self.log.image(image, contract.PROFILE_IMAGE, step)
        copied = time.perf_counter()
        self.log.image_file(image, name)
        end = time.perf_counter()
        self.seconds.append(end - start)
        self.copy_seconds.append(end - copied)

    def _log_all_epochs(self) -> None:
        """Every logged step's profile (a resumed run's earlier ones too) in one picture."""
        profiles = {step: norms for step in sorted(self._logged) if (norms := self._norms(step))}
        if profiles:
            what = "gradient norm per layer at every epoch"
            title = f"{self.label}: {what}" if self.label else what.capitalize()
            self._submit(self._draw_all_epochs, profiles, title)

    def _draw_all_epochs(self, profiles: dict[int, list[float]], title: str) -> None:
        start = time.perf_counter()
        self.log.image_file(all_epochs_image(profiles, title), contract.PROFILE_ALL_EPOCHS_IMAGE)
        self.all_epochs_seconds = time.perf_counter() - start

    def _submit(self, fn: Callable, *args) -> None:
        if self._worker is None:
            self._worker = _DaemonWorker("profile-image")
        self._pending.append(self._worker.submit(fn, *args))

    def flush(self) -> None:
        """Wait until every submitted image is stored; re-raise the first error."""
        pending, self._pending = self._pending, []
        if self._worker is not None:
            self._worker.shutdown()
            self._worker = None
        for future in pending:
            future.result()

    def on_train_begin(self, logs: dict | None = None) -> None:
        self._log(0)

    def on_epoch_end(self, epoch: int, logs: dict | None = None) -> None:
        # an in-step recorder (gradients.source=step) has step 0 only once the first
        # epoch's first step has run: log it then, before the epoch's own image
        self._log(0)
        self._log(int(epoch) + 1)

    def on_train_end(self, logs: dict | None = None) -> None:
        self._log_all_epochs()  # after every step's picture, on the same worker
        self.flush()


class _DaemonWorker:
    """One daemon thread that runs submitted calls in order.

    Unlike `ThreadPoolExecutor`'s worker, which the interpreter joins at exit, it never
    holds up the exit of a run stopped mid-fit (SIGTERM raises in the main thread at
    any point, possibly while the worker waits for the store); `shutdown` waits for
    what was submitted when a fit ends normally.
    """

    def __init__(self, name: str) -> None:
        self._calls: queue.SimpleQueue = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable, *args) -> Future:
        future: Future = Future()
        self._calls.put((future, fn, args))
        return future

    def shutdown(self) -> None:
        self._calls.put(None)
        self._thread.join()

    def _loop(self) -> None:
        while (item := self._calls.get()) is not None:
            future, fn, args = item
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as err:  # re-raised by `flush` on the training thread
                    future.set_exception(err)
