"""Loss landscapes around the trained weights, with filter-normalised random directions
(Li, Xu, Taylor, Studer & Goldstein, "Visualizing the Loss Landscape of Neural Nets",
NeurIPS 2018, https://arxiv.org/abs/1712.09913), as in issue 18.

Two seeded Gaussian directions d1, d2 over the trainable variables are filter
normalised (Li et al., Sec. 4): each filter of a direction is rescaled to the norm
of the same filter of the weights, so a step of 1 moves every filter by its own
size, and nets whose weights differ in scale (batch norm makes a net invariant to
its kernels' scale) are compared in the same units. A filter is the last axis's
slice of a kernel, where Keras keeps the outputs: one output channel of a conv
kernel (kh, kw, in, out), one output unit's column of a Dense kernel (in, out).
One-dimensional variables (biases, BN's gamma and beta) and scalars (Fixup's,
SkipInit's) get a zero direction by default, as in Li et al.; with
`include_bias_bn=True` each is one filter: random, scaled to its own norm (their
code copies the weights themselves into the direction instead; ours stays random
and independent between d1 and d2).

The loss and accuracy of w0 + alpha * d1 + beta * d2 are computed on a fixed
subset over a grid of `grid` points per axis in [-span, span]: a 1D slice along d1
and a 2D surface. Batch norm runs in inference mode with the trained moving
statistics (Li et al. evaluate with `net.eval()` too): the measured function is
the trained net's, and moving along a direction changes the weights only, so the
moving statistics, though they no longer match the perturbed activations exactly,
stay those the net was trained to. (A training-mode surface would renormalise
every perturbed net with the subset's own statistics and hide part of the change.)

Everything runs through one compiled function of (alpha, beta, x, y), traced once
per `LandscapeProbe` whatever the grid: the weights are computed as tensors and
passed to `Model.stateless_call`, so no variable is ever assigned and the model
is untouched, bit for bit.

Cost: grid^2 forward passes over the subset (21 x 21 on 1,000 examples is 441,000
example-forwards, where one training epoch on the digits is 1,437 forward and
backward passes). Measured (`python scripts/dev/bench_curvature.py --depths 20 56
--repeats 2`, 1 thread, shared 2-core machine): a 21 x 21 surface on 1,000 examples
took 52-53x the CPU time of one epoch at batch 128 (31-33x in wall time) at depths
20 and 56. The cost is proportional to grid^2 * examples: about one epoch's worth
is grid^2 * examples ~ 8,500 (a 21-point slice on 400 examples, or 9 x 9 on 100).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from resnet_exp import contract
from resnet_exp.recording.curvature import call_kwargs, mean_loss
from resnet_exp.recording.gradients import as_input, ensure_built, resolve_loss

# CSV columns of the two tables, as the runs log them.
SLICE_COLUMNS = contract.LANDSCAPE_1D_COLUMNS
SURFACE_COLUMNS = contract.LANDSCAPE_2D_COLUMNS


# ---------------------------------------------------------------- directions


def is_bias_or_bn(shape: Sequence[int]) -> bool:
    """Biases, BN's gamma/beta and scalars: the variables Li et al. leave out (ndim <= 1)."""
    return len(shape) <= 1


def filter_normalize(
    direction: np.ndarray, weights: np.ndarray, *, include_bias_bn: bool = False
) -> np.ndarray:
    """`direction` with each filter rescaled to the norm of the same filter of `weights`.

    Filters are slices along the last axis (see the module doc); a variable with
    ndim <= 1 is zeroed, or (`include_bias_bn`) treated as one filter. Norms are
    computed in float64; the result has `weights`' dtype.
    """
    w = np.asarray(weights, dtype=np.float64)
    d = np.asarray(direction, dtype=np.float64)
    if is_bias_or_bn(w.shape):
        if not include_bias_bn:
            return np.zeros_like(weights)
        filters_w, filters_d = w.reshape(-1, 1), d.reshape(-1, 1)
    else:
        filters_w, filters_d = w.reshape(-1, w.shape[-1]), d.reshape(-1, w.shape[-1])
    norm_w = np.linalg.norm(filters_w, axis=0)
    norm_d = np.linalg.norm(filters_d, axis=0)
    scale = np.divide(norm_w, norm_d, out=np.zeros_like(norm_w), where=norm_d > 0)
    return (filters_d * scale).reshape(w.shape).astype(np.asarray(weights).dtype)


def random_direction(
    weights: Sequence[np.ndarray], seed: int | Sequence[int], *, include_bias_bn: bool = False
) -> list[np.ndarray]:
    """A seeded Gaussian direction, one array per variable, filter normalised to `weights`."""
    rng = np.random.default_rng(seed)
    return [
        filter_normalize(rng.standard_normal(np.shape(w)), w, include_bias_bn=include_bias_bn)
        for w in weights
    ]


def model_directions(
    model: keras.Model, *, count: int = 2, seed: int = 0, include_bias_bn: bool = False
) -> list[list[np.ndarray]]:
    """`count` directions for `model.trainable_variables`; direction i is seeded by
    (seed, i), so d1 is the same whether one or two are drawn."""
    weights = [np.asarray(v.numpy()) for v in model.trainable_variables]
    return [
        random_direction(weights, (seed, i), include_bias_bn=include_bias_bn) for i in range(count)
    ]


# ---------------------------------------------------------------- summaries


def grid_values(grid: int, span: float) -> np.ndarray:
    """`grid` points from -span to span, with 0 exactly at the centre (so the centre is w0)."""
    if grid < 3 or grid % 2 == 0:
        raise ValueError(f"grid must be odd and >= 3 (the centre on the grid), got {grid}")
    if not span > 0:
        raise ValueError(f"span must be > 0, got {span}")
    half = grid // 2
    return span * np.arange(-half, half + 1) / half


def landscape_sharpness(slice_frame: pd.DataFrame, radius: float) -> float:
    """The mean loss rise at distance `radius` on both sides of the centre of a 1D slice:
    (L(-r) + L(r)) / 2 - L(0), linearly interpolated between grid points.

    A difference in loss units, not a ratio: a trained net's centre loss is near 0,
    where a ratio would measure the centre rather than the walls. Distances are
    filter-normalised, so nets with different weight scales compare. One random
    direction: average several seeds for a stable figure.
    """
    alpha = slice_frame["alpha"].to_numpy()
    loss = slice_frame["loss"].to_numpy()
    if not 0 < radius <= np.max(np.abs(alpha)):
        raise ValueError(f"radius {radius} must be in (0, {np.max(np.abs(alpha))}]")
    left, centre, right = np.interp([-radius, 0.0, radius], alpha, loss)
    return float((left + right) / 2 - centre)


def surface_curvatures(surface_frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Eigenvalues (min, max) of the surface's own 2x2 Hessian at every grid point, from
    central finite differences; NaN on the border. Arrays indexed [alpha, beta]."""
    table = surface_frame.pivot(index="alpha", columns="beta", values="loss")
    loss = table.to_numpy(dtype=np.float64)
    ha = float(np.diff(table.index.to_numpy()).mean())
    hb = float(np.diff(table.columns.to_numpy()).mean())
    low = np.full(loss.shape, np.nan)
    high = np.full(loss.shape, np.nan)
    c = loss[1:-1, 1:-1]
    faa = (loss[2:, 1:-1] - 2 * c + loss[:-2, 1:-1]) / ha**2
    fbb = (loss[1:-1, 2:] - 2 * c + loss[1:-1, :-2]) / hb**2
    fab = (loss[2:, 2:] - loss[2:, :-2] - loss[:-2, 2:] + loss[:-2, :-2]) / (4 * ha * hb)
    mean, radius = (faa + fbb) / 2, np.sqrt(((faa - fbb) / 2) ** 2 + fab**2)
    low[1:-1, 1:-1], high[1:-1, 1:-1] = mean - radius, mean + radius
    return low, high


def with_curvatures(surface_frame: pd.DataFrame) -> pd.DataFrame:
    """The frame with `curvature_min`/`curvature_max` columns (`surface_curvatures`; NaN on
    the border), for a map of the surface's non-convexity."""
    low, high = surface_curvatures(surface_frame)
    table = surface_frame.pivot(index="alpha", columns="beta", values="loss")
    index = pd.MultiIndex.from_product([table.index, table.columns], names=["alpha", "beta"])
    columns = pd.DataFrame(
        {"curvature_min": low.ravel(), "curvature_max": high.ravel()}, index=index
    )
    return surface_frame.join(columns, on=["alpha", "beta"])


def landscape_nonconvexity(surface_frame: pd.DataFrame, rtol: float = 0.01) -> float:
    """The fraction of interior grid points where the surface is not locally convex.

    At each interior point the 2x2 Hessian of the plotted surface (central finite
    differences in alpha and beta) is non-convex when its smaller eigenvalue is
    negative by more than `rtol` times the largest |eigenvalue| anywhere on the
    surface (float32 losses leave noise in second differences on flat plateaus). 0:
    convex-looking everywhere on the grid; 1: nowhere.

    Why not Li et al.'s map of |lambda_min / lambda_max| of the full Hessian: that
    costs a Lanczos run (hundreds of Hessian-vector products) per grid point, while
    the surface's own curvature comes free with the losses already computed. It is
    a witness, not a bound: the restriction of a convex function to a plane is
    convex, so non-convexity in the plane is non-convexity of the loss, but a
    convex-looking plane does not prove the loss convex. It grows with `span` (every
    bounded bowl turns concave at its rim), so compare nets at equal span and grid.
    """
    low, high = surface_curvatures(surface_frame)
    interior = ~np.isnan(low)
    scale = np.nanmax(np.abs(np.concatenate([low[interior], high[interior]])))
    if not scale > 0:
        return 0.0
    return float(np.mean(low[interior] < -rtol * scale))


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class LossSlice:
    """The loss along d1 (`SLICE_COLUMNS`), its sharpness at `radius`, and its wall time."""

    frame: pd.DataFrame
    sharpness: float
    radius: float
    seconds: float


@dataclass(frozen=True)
class LossSurface:
    """The loss over the (d1, d2) plane (`SURFACE_COLUMNS`), its non-convexity, wall time."""

    frame: pd.DataFrame
    nonconvexity: float
    seconds: float


@dataclass(frozen=True)
class Landscape:
    slice: LossSlice
    surface: LossSurface | None
    centre_loss: float
    centre_accuracy: float
    seconds: float  # all of it, drawing the directions and tracing included

    def metrics(self) -> dict[str, float]:
        """The run's metrics (`contract.LANDSCAPE_*`)."""
        out = {
            contract.LANDSCAPE_SHARPNESS: self.slice.sharpness,
            contract.LANDSCAPE_CENTRE_LOSS: self.centre_loss,
            contract.LANDSCAPE_TIME: self.seconds,
        }
        if self.surface is not None:
            out[contract.LANDSCAPE_NONCONVEXITY] = self.surface.nonconvexity
        return out


# ---------------------------------------------------------------- the probe


class LandscapeProbe:
    """Loss and accuracy of w0 + alpha * d1 + beta * d2 on a fixed subset, one compiled function.

    w0 is a copy of the trainable variables taken at construction, the directions
    are drawn then (`model_directions`), and the moving statistics are copied too:
    later changes to the model do not move the probe's centre.

    Args:
        model: The trained model; only read.
        x, y: The subset (normalised, not augmented); y as class indices or one-hot.
            Accuracy is the argmax's agreement with y: a classifier with one output
            per class (softmax or logits).
        loss: The loss; None uses the compiled model's loss.
        seed: Seeds the directions (d1 by (seed, 0), d2 by (seed, 1)).
        include_bias_bn: Give biases and BN parameters a direction too (module doc).
        batch_size: Examples per forward pass; the last batch may be smaller (the
            function takes any batch size, so it is not retraced).
        directions: Two directions (lists of arrays per trainable variable) to use instead.

    `traces` counts the function's traces: 1 after the first point, whatever follows.
    """

    def __init__(
        self,
        model: keras.Model,
        x: Any,
        y: Any,
        loss: Any = None,
        *,
        seed: int = 0,
        include_bias_bn: bool = False,
        batch_size: int = 500,
        directions: Sequence[Sequence[np.ndarray]] | None = None,
    ):
        x, y = as_input(x), as_input(y)
        ensure_built(model, x)
        self.model = model
        self.loss_fn = resolve_loss(model, loss)
        self.num_examples = int(tf.nest.flatten(x)[0].shape[0])
        if directions is None:
            directions = model_directions(model, seed=seed, include_bias_bn=include_bias_bn)
        if len(directions) != 2:
            raise ValueError(f"need two directions, got {len(directions)}")
        self.directions = [[np.asarray(a) for a in d] for d in directions]
        self._w0 = [tf.constant(v.numpy()) for v in model.trainable_variables]
        self._state = [tf.constant(v.numpy()) for v in model.non_trainable_variables]
        self._d = [
            [tf.constant(a, dtype=w.dtype) for a, w in zip(d, self._w0, strict=True)]
            for d in self.directions
        ]
        self._kwargs = call_kwargs(model, False)
        self._structure = [x, y]
        self._batches = [
            tf.nest.flatten(tf.nest.map_structure(lambda t, i=i: t[i : i + batch_size], [x, y]))
            for i in range(0, self.num_examples, batch_size)
        ]
        self.traces = 0
        specs = [tf.TensorSpec([None, *t.shape[1:]], t.dtype) for t in tf.nest.flatten([x, y])]
        self._fn = tf.function(
            self._sums,
            input_signature=[tf.TensorSpec([], tf.float32), tf.TensorSpec([], tf.float32), *specs],
            autograph=False,
        )

    def _sums(self, alpha: tf.Tensor, beta: tf.Tensor, *flat: tf.Tensor) -> tf.Tensor:
        """[sum of losses, correct predictions] over one batch at w0 + alpha d1 + beta d2."""
        self.traces += 1  # Python runs this body only when tracing
        x, y = tf.nest.pack_sequence_as(self._structure, list(flat))
        weights = [
            w + tf.cast(alpha, w.dtype) * d1 + tf.cast(beta, w.dtype) * d2
            for w, d1, d2 in zip(self._w0, *self._d, strict=True)
        ]
        y_pred, _discarded_state = self.model.stateless_call(
            weights, self._state, x, **self._kwargs
        )
        count = tf.cast(tf.shape(y_pred)[0], tf.float32)
        predicted = tf.argmax(y_pred, axis=-1)
        if y.shape.rank == y_pred.shape.rank and y.shape[-1] == y_pred.shape[-1] != 1:
            labels = tf.argmax(y, axis=-1)  # one-hot
        else:
            labels = tf.cast(tf.reshape(y, [-1]), predicted.dtype)
        correct = tf.reduce_sum(tf.cast(tf.equal(predicted, labels), tf.float32))
        return tf.stack([mean_loss(self.loss_fn, y, y_pred) * count, correct])

    def evaluate(self, alpha: float, beta: float = 0.0) -> tuple[float, float]:
        """(mean loss, accuracy) on the subset at w0 + alpha * d1 + beta * d2."""
        a, b = tf.constant(alpha, tf.float32), tf.constant(beta, tf.float32)
        totals = np.zeros(2)
        for batch in self._batches:
            totals += self._fn(a, b, *batch).numpy().astype(np.float64)
        return float(totals[0] / self.num_examples), float(totals[1] / self.num_examples)

    def slice(self, grid: int = 21, span: float = 1.0, radius: float | None = None) -> LossSlice:
        """The loss along d1 at `grid` points in [-span, span]; sharpness at `radius`
        (default span / 2; see `landscape_sharpness`)."""
        started = time.perf_counter()
        radius = span / 2 if radius is None else radius
        rows = [(a, *self.evaluate(a)) for a in grid_values(grid, span)]
        frame = pd.DataFrame(rows, columns=SLICE_COLUMNS)
        return LossSlice(
            frame, landscape_sharpness(frame, radius), radius, time.perf_counter() - started
        )

    def surface(self, grid: int = 21, span: float = 1.0, rtol: float = 0.01) -> LossSurface:
        """The loss over the grid x grid plane; non-convexity with `rtol`
        (see `landscape_nonconvexity`)."""
        started = time.perf_counter()
        values = grid_values(grid, span)
        rows = [(a, b, *self.evaluate(a, b)) for a in values for b in values]
        frame = with_curvatures(pd.DataFrame(rows, columns=SURFACE_COLUMNS[:4]))
        return LossSurface(
            frame, landscape_nonconvexity(frame, rtol), time.perf_counter() - started
        )


# ---------------------------------------------------------------- one call


def loss_landscape(
    model: keras.Model,
    x: Any,
    y: Any,
    loss: Any = None,
    *,
    grid: int = 21,
    span: float = 1.0,
    surface: bool = True,
    seed: int = 0,
    include_bias_bn: bool = False,
    batch_size: int = 500,
) -> Landscape:
    """The slice and (unless `surface=False`) the surface, from one probe and one trace.

    The slice is the surface's beta = 0 row when both are computed (the same points,
    not evaluated twice); its `seconds` is then 0 and the surface's covers both.
    """
    started = time.perf_counter()
    probe = LandscapeProbe(
        model, x, y, loss, seed=seed, include_bias_bn=include_bias_bn, batch_size=batch_size
    )
    plane = None
    if surface:
        plane = probe.surface(grid, span)
        row = plane.frame[plane.frame["beta"] == 0.0]
        frame = row[SLICE_COLUMNS].reset_index(drop=True)
        line = LossSlice(frame, landscape_sharpness(frame, span / 2), span / 2, 0.0)
    else:
        line = probe.slice(grid, span)
    centre = line.frame[line.frame["alpha"] == 0.0].iloc[0]
    return Landscape(
        slice=line,
        surface=plane,
        centre_loss=float(centre["loss"]),
        centre_accuracy=float(centre["accuracy"]),
        seconds=time.perf_counter() - started,
    )
