"""Curvature of the data loss at the trained weights, on a fixed batch: Hessian eigenvalues,
trace and spectral density from Hessian-vector products (issue 18).

Sharp minima (a large top eigenvalue or trace of the loss Hessian) are what the
"skip connections smooth the landscape" story is about; these are the standard
matrix-free estimates, as PyHessian computes them (Yao, Gholami, Keutzer & Mahoney
2020, "PyHessian: Neural Networks Through the Lens of the Hessian",
https://arxiv.org/abs/1912.07145):

* the top eigenvalue (and optionally the top k, by deflation) by power iteration;
* the trace by Hutchinson's estimator with Rademacher vectors, with its standard error;
* the spectral density by stochastic Lanczos quadrature (SLQ): a table of
  eigenvalue nodes and weights, one block per random start, that sums to 1.

What is differentiated is the mean data loss over the batch (`resolve_loss`: the
compiled loss, or `loss=`), with respect to every trainable variable (kernels,
biases, BN's gamma and beta, Fixup's scalars); regularisers (`model.losses`) are
left out, so the curvature is the data's, whatever the weight decay.

Batch norm runs in inference mode by default: with the trained moving statistics
each example's loss is a fixed function of the weights, so the Hessian is that of
the loss the trained net is evaluated on, it does not depend on which other
examples share the batch, and it matches the loss landscape (`landscape.py`).
`training=True` differentiates the training-mode loss instead (batch statistics,
and their own dependence on the weights, in the Hessian): the curvature the
optimiser sees, the one to use at initialisation, when the moving statistics are
still their defaults (mean 0, variance 1) and the inference-mode net is not the
net any training step sees. Inference mode needs trained moving statistics: a net
whose inference-mode loss is far above its training loss (moving statistics that
lag the weights, early in training at a high rate) has the curvature of that
broken net. Training mode runs the model's `exact_moments_twin`, because
TensorFlow's batch moments have wrong second derivatives (`ExactMomentsBatchNorm`;
on a ResNet-20 on digits the model's own double backprop missed 6-7% of a product
and 4% of the trace).

The Hessian is the autodiff one: for ReLU nets it is the Hessian of the piece the
weights are on (a ReLU's second derivative is 0 away from its kink), as in
PyHessian; finite differences of gradients would add the kinks crossed within
the step and do not converge to it.

One compiled `tf.function` computes a Hessian-vector product (double backprop by
default, or forward-over-reverse), through `Model.stateless_call`: the model's
variables are read, never written, so weights and BN statistics stay bit for bit
what they were. It is traced once per `HessianProbe`; every algorithm here calls
it with a flat float32 vector, so power iteration, Hutchinson and Lanczos share
that one trace. The algorithms themselves run in NumPy on flat vectors and take
any operator with `size` and `matvec`.
"""

from __future__ import annotations

import inspect
import time
from dataclasses import dataclass, replace
from typing import Any, Protocol

import keras
import numpy as np
import pandas as pd
import tensorflow as tf

from resnet_exp import contract
from resnet_exp.recording.gradients import as_input, ensure_built, resolve_loss

MODES = ("reverse", "forward")  # double backprop; forward-over-reverse
# The density table's CSV columns: one row per Lanczos node of one random start.
DENSITY_COLUMNS = ["run", "eigenvalue", "weight"]
# Lanczos stops early when the Krylov space is exhausted: beta below this times the
# largest |alpha| or beta so far (float32 products leave ~1e-7 of noise).
_BREAKDOWN = 1e-5


class Operator(Protocol):
    """A symmetric linear operator on flat vectors: what the algorithms below need."""

    size: int

    def matvec(self, v: np.ndarray) -> np.ndarray: ...


def call_kwargs(model: keras.Model, training: bool) -> dict[str, bool]:
    """`training=` for `stateless_call`, omitted when `model.call` does not take it (as `fit`)."""
    return {"training": training} if "training" in inspect.signature(model.call).parameters else {}


def mean_loss(loss_fn: Any, y: Any, y_pred: Any) -> tf.Tensor:
    """The batch's mean loss in float32: functions give one loss per example, Loss objects a
    reduced value; the mean makes both the "sum_over_batch_size" loss `fit` reports."""
    return tf.reduce_mean(tf.cast(loss_fn(y, y_pred), tf.float32))


class ExactMomentsBatchNorm(keras.layers.BatchNormalization):
    """Batch norm whose training-mode batch moments have exact second derivatives.

    TensorFlow's `tf.nn.moments`, which Keras's batch norm calls, computes the
    variance around `stop_gradient(mean)`: the gradient is exact (the variance's
    derivative in the mean is zero there) but the second derivative loses a
    -2/N^2 term, so double backprop through it gives a wrong Hessian
    (tests/test_curvature.py checks that this is still so). This layer computes
    the same moments without the stop, and does not update the moving statistics
    (the probe discards state anyway). Inference mode, frozen layers, masks: the
    parent's `call`, unchanged.
    """

    def call(self, inputs: Any, training: bool | None = None, mask: Any = None) -> Any:
        if not (training and self.trainable) or mask is not None:
            return super().call(inputs, training=training, mask=mask)
        x = keras.ops.cast(inputs, keras.backend.result_type(inputs.dtype, "float32"))
        axis = self.axis % len(x.shape)
        axes = [i for i in range(len(x.shape)) if i != axis]
        mean = keras.ops.mean(x, axis=axes, keepdims=True)
        variance = keras.ops.mean(keras.ops.square(x - mean), axis=axes, keepdims=True)
        shape = [1] * len(x.shape)
        shape[axis] = x.shape[axis]
        outputs = (x - mean) * keras.ops.rsqrt(variance + self.epsilon)
        if self.scale:
            outputs = outputs * keras.ops.reshape(keras.ops.cast(self.gamma, x.dtype), shape)
        if self.center:
            outputs = outputs + keras.ops.reshape(keras.ops.cast(self.beta, x.dtype), shape)
        return keras.ops.cast(outputs, self.compute_dtype)


def _layers(model: keras.Model) -> list[keras.layers.Layer]:
    """Every layer of `model`, nested models' layers included."""
    found, stack = [], list(model.layers)
    while stack:
        layer = stack.pop(0)
        found.append(layer)
        stack[:0] = list(getattr(layer, "layers", []))
    return found


def exact_moments_twin(model: keras.Model) -> keras.Model:
    """A clone of `model` (new variables, never assigned) whose batch-norm layers are
    `ExactMomentsBatchNorm`; its variables line up with `model`'s one for one, so
    `stateless_call` runs it with `model`'s values. Functional and Sequential models."""

    def clone(layer: keras.layers.Layer) -> keras.layers.Layer:
        if isinstance(layer, keras.layers.BatchNormalization):
            if type(layer) is not keras.layers.BatchNormalization or layer.renorm:
                raise ValueError(
                    f"layer {layer.name!r}: only plain batch norm (no subclass, no "
                    "renormalisation) has an exact-moments replacement"
                )
            return ExactMomentsBatchNorm.from_config(layer.get_config())
        return layer.__class__.from_config(layer.get_config())

    try:
        twin = keras.models.clone_model(model, clone_function=clone, recursive=True)
    except ValueError as err:  # a subclassed model
        raise ValueError(
            f"training=True needs a functional or Sequential model to differentiate twice "
            f"through batch norm ({err})"
        ) from err
    for mine, theirs in (
        (model.trainable_variables, twin.trainable_variables),
        (model.non_trainable_variables, twin.non_trainable_variables),
    ):
        if [(v.path, tuple(v.shape)) for v in mine] != [(v.path, tuple(v.shape)) for v in theirs]:
            raise ValueError(f"the clone of {model.name!r} does not line up with it")
    return twin


def _needs_twin(model: keras.Model, training: bool) -> bool:
    """Whether the Hessian passes through batch moments (see `ExactMomentsBatchNorm`)."""
    for layer in _layers(model):
        if isinstance(layer, keras.layers.LayerNormalization | keras.layers.GroupNormalization):
            raise ValueError(
                f"layer {layer.name!r}: second derivatives through tf.nn.moments are wrong "
                "in TensorFlow, and only batch norm has an exact replacement here"
            )
    return training and any(
        isinstance(layer, keras.layers.BatchNormalization) and layer.trainable
        for layer in _layers(model)
    )


class HessianProbe:
    """Hessian-vector products of the mean data loss on (x, y) at the model's current weights.

    Args:
        model: A built (or buildable from `x`) Keras model; only read.
        x, y: The fixed batch (normalised, not augmented), used whole.
        loss: The loss; None uses the compiled model's loss.
        training: Batch norm in training mode (see the module doc); False by default.
            The model then runs as its `exact_moments_twin` (same values, exact
            second derivatives through the batch statistics).
        mode: "reverse" (double backprop: the gradient of <grad, v>; the faster) or
            "forward" (forward-over-reverse: the JVP of the gradient along v; 1.4x
            slower for a depth-56 ResNet on CPU). Both are exact.
        jit_compile: Compile the product with XLA (8x slower for a depth-56 ResNet on
            CPU; both measured with scripts/dev/bench_curvature.py's setting).

    `size` is the number of trainable parameters; `traces` counts how often the
    product was traced (1 after the first call, whatever follows); `loss` is the
    batch's loss at the weights of the latest product (the probe reads the weights at
    each call, so a probe reused after training reports the trained net's loss).
    """

    def __init__(
        self,
        model: keras.Model,
        x: Any,
        y: Any,
        loss: Any = None,
        *,
        training: bool = False,
        mode: str = "reverse",
        jit_compile: bool = False,
    ):
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
        self.x, self.y = as_input(x), as_input(y)
        ensure_built(model, self.x)
        self.model = model
        self._runner = exact_moments_twin(model) if _needs_twin(model, training) else model
        self.loss_fn = resolve_loss(model, loss)
        self.training = training
        self.mode = mode
        self._trainable = list(model.trainable_variables)
        self._non_trainable = list(model.non_trainable_variables)
        if not self._trainable:
            raise ValueError(f"Model {model.name!r} has no trainable variable.")
        self._shapes = [tuple(v.shape) for v in self._trainable]
        self._sizes = [int(np.prod(s)) for s in self._shapes]
        self.size = int(sum(self._sizes))
        self.names = [v.path for v in self._trainable]
        self._kwargs = call_kwargs(model, training)
        self.traces = 0
        self.loss: float | None = None
        self.products = 0  # Hessian-vector products computed
        self._fn = tf.function(
            self._product,
            input_signature=[
                tf.TensorSpec([self.size], tf.float32),
                *(tf.TensorSpec.from_tensor(t) for t in tf.nest.flatten([self.x, self.y])),
            ],
            autograph=False,
            jit_compile=jit_compile,
        )

    def _product(self, v: tf.Tensor, *flat_data: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:
        self.traces += 1  # Python runs this body only when tracing
        x, y = tf.nest.pack_sequence_as([self.x, self.y], list(flat_data))
        # the model's values, read at call time: the runner (the model or its twin) is
        # called statelessly with them, so no variable of either is ever written
        trainable = [tf.convert_to_tensor(w.value) for w in self._trainable]
        non_trainable = [tf.convert_to_tensor(w.value) for w in self._non_trainable]
        vs = [
            tf.cast(tf.reshape(part, shape), w.dtype)
            for part, shape, w in zip(
                tf.split(v, self._sizes), self._shapes, trainable, strict=True
            )
        ]
        zero = tf.UnconnectedGradients.ZERO

        def gradient() -> tuple[list, tf.Tensor]:
            with tf.GradientTape() as tape:
                tape.watch(trainable)
                y_pred, _discarded_state = self._runner.stateless_call(
                    trainable, non_trainable, x, **self._kwargs
                )
                loss = mean_loss(self.loss_fn, y, y_pred)
            return tape.gradient(loss, trainable, unconnected_gradients=zero), loss

        if self.mode == "reverse":
            with tf.GradientTape() as outer:
                outer.watch(trainable)
                grads, loss = gradient()
                dot = tf.add_n(
                    [
                        tf.reduce_sum(tf.cast(g * u, tf.float32))
                        for g, u in zip(grads, vs, strict=True)
                    ]
                )
            products = outer.gradient(dot, trainable, unconnected_gradients=zero)
        else:
            with tf.autodiff.ForwardAccumulator(trainable, vs) as accumulator:
                grads, loss = gradient()
            products = accumulator.jvp(grads, unconnected_gradients=zero)
        flat = tf.concat([tf.reshape(tf.cast(p, tf.float32), [-1]) for p in products], axis=0)
        return flat, loss

    def matvec(self, v: np.ndarray) -> np.ndarray:
        """H v for a flat vector of `size` entries (float64 out, float32 inside)."""
        product, loss = self._fn(
            tf.convert_to_tensor(np.asarray(v, dtype=np.float32)),
            *tf.nest.flatten([self.x, self.y]),
        )
        self.products += 1
        self.loss = float(loss)
        return product.numpy().astype(np.float64)

    def split(self, v: np.ndarray) -> list[np.ndarray]:
        """A flat vector as one array per trainable variable (shaped like it)."""
        parts = np.split(np.asarray(v), np.cumsum(self._sizes)[:-1])
        return [p.reshape(s) for p, s in zip(parts, self._shapes, strict=True)]


# ---------------------------------------------------------------- results


@dataclass(frozen=True)
class TopEigenvalues:
    """The k eigenvalues of largest magnitude, largest first, by power iteration with deflation.

    For a trained net the top one is positive (a minimum's sharpest direction);
    power iteration finds the largest |eigenvalue|, which PyHessian reports too.
    `iterations[i]` is the number of Hessian-vector products eigenvalue i took,
    `converged[i]` whether it met the tolerance before `max_iterations`, and
    `residuals[i]` = |Hv - λv| at its last product: H is symmetric, so some eigenvalue
    (of the deflated operator) lies within that distance of λ, converged or not.
    """

    eigenvalues: np.ndarray
    iterations: np.ndarray
    converged: np.ndarray
    residuals: np.ndarray
    eigenvectors: np.ndarray  # (k, size), unit norm
    seconds: float

    @property
    def top(self) -> float:
        return float(self.eigenvalues[0])


@dataclass(frozen=True)
class TraceEstimate:
    """Hutchinson's trace estimate: the mean of v'Hv over Rademacher v, with its standard error
    (sample standard deviation over sqrt(samples)); `values` holds each sample's v'Hv."""

    trace: float
    stderr: float
    values: np.ndarray
    size: int  # n, the number of parameters: trace / n is the mean eigenvalue
    seconds: float


@dataclass(frozen=True)
class SpectralDensity:
    """The SLQ estimate of the eigenvalue density, as nodes and weights (`DENSITY_COLUMNS`).

    Weights sum to 1 over the whole table (each run's sum to 1 / runs): the density is
    sum_j weight_j * delta(t - eigenvalue_j). Its mean, sum_j weight_j * eigenvalue_j,
    estimates trace / size; `smoothed` spreads it over a grid for a figure.
    """

    nodes: pd.DataFrame
    size: int
    seconds: float

    @property
    def mean(self) -> float:
        return float((self.nodes["weight"] * self.nodes["eigenvalue"]).sum())

    def smoothed(self, grid: np.ndarray, sigma: float) -> np.ndarray:
        """The density on `grid`: each node a Gaussian of width `sigma` (PyHessian's plot)."""
        grid = np.asarray(grid, dtype=np.float64)[:, None]
        nodes = self.nodes["eigenvalue"].to_numpy()[None, :]
        kernel = np.exp(-0.5 * ((grid - nodes) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
        return kernel @ self.nodes["weight"].to_numpy()


@dataclass(frozen=True)
class Curvature:
    """What `hessian_curvature` measures on one batch, each part with its own wall time."""

    top: TopEigenvalues
    trace: TraceEstimate
    density: SpectralDensity | None
    loss: float  # the batch's data loss at the weights
    size: int
    training: bool
    seconds: float  # all of it, the trace of the product included

    def metrics(self) -> dict[str, float]:
        """The run's metrics (`contract.CURVATURE_METRICS`)."""
        return {
            contract.HESSIAN_TOP_EIG: self.top.top,
            contract.HESSIAN_TOP_EIG_ITERATIONS: float(self.top.iterations[0]),
            contract.HESSIAN_TOP_EIG_RESIDUAL: float(self.top.residuals[0]),
            contract.HESSIAN_TRACE: self.trace.trace,
            contract.HESSIAN_TRACE_STDERR: self.trace.stderr,
            contract.HESSIAN_BATCH_LOSS: self.loss,
            contract.CURVATURE_TIME: self.seconds,
        }

    def row(self, epoch: int, examples: int) -> dict[str, Any]:
        """One row of `curvature.csv` (`contract.CURVATURE_COLUMNS`, then eig_2 .. eig_k)."""
        row = dict(
            zip(
                contract.CURVATURE_COLUMNS,
                [
                    epoch,
                    "training" if self.training else "inference",
                    examples,
                    self.size,
                    self.top.top,
                    int(self.top.iterations[0]),
                    bool(self.top.converged[0]),
                    float(self.top.residuals[0]),
                    self.trace.trace,
                    self.trace.stderr,
                    self.loss,
                    self.seconds,
                ],
                strict=True,
            )
        )
        for i, value in enumerate(self.top.eigenvalues[1:], start=2):
            row[f"eig_{i}"] = float(value)
        return row


# ---------------------------------------------------------------- algorithms


def _rademacher(rng: np.random.Generator, n: int) -> np.ndarray:
    return rng.integers(0, 2, size=n).astype(np.float64) * 2.0 - 1.0


def _orthogonalise(v: np.ndarray, basis: list[np.ndarray]) -> np.ndarray:
    for u in basis:
        v = v - (u @ v) * u
    return v


def power_iteration(
    op: Operator, *, k: int = 1, iterations: int = 100, rtol: float = 1e-3, seed: int = 0
) -> TopEigenvalues:
    """The k eigenvalues of largest magnitude, by power iteration with deflation.

    Each eigenvalue starts from a seeded Gaussian vector and iterates v <- Hv / |Hv|,
    kept orthogonal to the eigenvectors already found (PyHessian's deflation), until the
    Rayleigh quotient v'Hv changes by at most `rtol` of its magnitude between two
    products, or `iterations` products were spent on it.
    """
    if k < 1 or iterations < 1:
        raise ValueError(f"k and iterations must be >= 1, got k={k}, iterations={iterations}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    values, counts, done, vectors, residuals = [], [], [], [], []
    for _ in range(k):
        v = _orthogonalise(rng.standard_normal(op.size), vectors)
        v /= np.linalg.norm(v)
        value, converged, used, residual = np.nan, False, 0, np.nan
        for used in range(1, iterations + 1):  # noqa: B007 (the count is the result)
            w = _orthogonalise(op.matvec(v), vectors)
            new = float(v @ w)
            residual = float(np.linalg.norm(w - new * v))  # v is a unit vector
            converged = abs(new - value) <= rtol * abs(new)  # False while value is nan
            value = new
            norm = np.linalg.norm(w)
            if norm == 0.0:  # v is in the null space: its eigenvalue is 0, exactly
                converged = True
                break
            v = w / norm
            if converged:
                break
        values.append(value)
        residuals.append(residual)
        counts.append(used)
        done.append(converged)
        vectors.append(v)
    order = np.argsort(-np.abs(values), kind="stable")  # deflation finds them roughly in order
    return TopEigenvalues(
        eigenvalues=np.asarray(values)[order],
        iterations=np.asarray(counts)[order],
        converged=np.asarray(done)[order],
        residuals=np.asarray(residuals)[order],
        eigenvectors=np.asarray(vectors)[order],
        seconds=time.perf_counter() - started,
    )


def hutchinson_trace(op: Operator, *, samples: int = 20, seed: int = 0) -> TraceEstimate:
    """tr(H) ~ mean of v'Hv over `samples` Rademacher vectors v (Hutchinson 1989).

    Unbiased; its variance is 2 * sum of the off-diagonal H_ij squared per sample, so
    the standard error (sample std / sqrt(samples)) is estimated from the samples.
    """
    if samples < 2:
        raise ValueError(f"samples must be >= 2 for a standard error, got {samples}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    values = np.empty(samples)
    for i in range(samples):
        v = _rademacher(rng, op.size)
        values[i] = v @ op.matvec(v)
    return TraceEstimate(
        trace=float(values.mean()),
        stderr=float(values.std(ddof=1) / np.sqrt(samples)),
        values=values,
        size=op.size,
        seconds=time.perf_counter() - started,
    )


def _lanczos(op: Operator, v: np.ndarray, steps: int) -> tuple[np.ndarray, np.ndarray]:
    """Lanczos with full reorthogonalisation from unit `v`: the tridiagonal's (alpha, beta).

    The basis is kept in float32 (steps x size), half the memory of float64, as
    precise as the float32 products it orthogonalises against.
    """
    basis = np.empty((steps, op.size), dtype=np.float32)
    alphas: list[float] = []
    betas: list[float] = []
    scale = 0.0
    for j in range(steps):
        basis[j] = v
        w = op.matvec(v)
        alpha = float(w @ v)
        alphas.append(alpha)
        w = w - alpha * v - (betas[-1] * basis[j - 1] if j else 0.0)
        for _ in range(2):  # "twice is enough" (Parlett): orthogonal to working precision
            w = w - (basis[: j + 1] @ w.astype(np.float32)) @ basis[: j + 1]
        beta = float(np.linalg.norm(w))
        scale = max(scale, abs(alpha), beta)
        if j == steps - 1 or beta <= _BREAKDOWN * scale:  # done, or the Krylov space is
            break
        betas.append(beta)
        v = w / beta
    return np.asarray(alphas), np.asarray(betas)


def lanczos_density(
    op: Operator, *, runs: int = 1, steps: int = 50, seed: int = 0
) -> SpectralDensity:
    """Stochastic Lanczos quadrature (Ubaru, Chen & Saad 2017; PyHessian's density).

    Per run: `steps` Lanczos steps from a normalised Rademacher vector v give a
    tridiagonal T = Q diag(theta) Q'; its Ritz values theta_j are the nodes and
    Q[0, j]^2 their weights, the Gauss quadrature of the spectral measure v'delta(t-H)v,
    whose expectation is the eigenvalue density. Runs are averaged (weights / runs).
    Costs `runs * steps` products (fewer if the Krylov space is exhausted first) and keeps
    a steps x size float32 basis (170 MB for 50 steps at depth 56).
    """
    if runs < 1 or steps < 1:
        raise ValueError(f"runs and steps must be >= 1, got runs={runs}, steps={steps}")
    started = time.perf_counter()
    rng = np.random.default_rng(seed)
    rows = []
    for run in range(runs):
        v = _rademacher(rng, op.size)
        alphas, betas = _lanczos(op, v / np.linalg.norm(v), min(steps, op.size))
        tridiagonal = np.diag(alphas) + np.diag(betas, 1) + np.diag(betas, -1)
        theta, q = np.linalg.eigh(tridiagonal)
        rows += [(run, float(t), float(w / runs)) for t, w in zip(theta, q[0] ** 2, strict=True)]
    return SpectralDensity(
        nodes=pd.DataFrame(rows, columns=DENSITY_COLUMNS),
        size=op.size,
        seconds=time.perf_counter() - started,
    )


# ---------------------------------------------------------------- one call


def hessian_curvature(
    model: keras.Model, x: Any, y: Any, loss: Any = None, *, training: bool = False, **settings
) -> Curvature:
    """`measure_curvature` on a new `HessianProbe` (`settings`: its keywords); `seconds`
    includes the probe's trace. One algorithm alone: `power_iteration(HessianProbe(...))`,
    `hutchinson_trace`, `lanczos_density`.
    """
    started = time.perf_counter()
    result = measure_curvature(HessianProbe(model, x, y, loss, training=training), **settings)
    return replace(result, seconds=time.perf_counter() - started)


def measure_curvature(
    probe: HessianProbe,
    *,
    iterations: int = 20,
    rtol: float = 1e-3,
    top_k: int = 1,
    samples: int = 20,
    density_runs: int = 0,
    lanczos_steps: int = 50,
    seed: int = 0,
) -> Curvature:
    """Top eigenvalue(s), trace and (with `density_runs` > 0) the SLQ density on the probe's
    batch at the weights as they are now. A run measuring at several epochs reuses one probe,
    so its product is traced once (the probe reads the weights at each call).

    Cost: at most `top_k * iterations + samples + density_runs * lanczos_steps`
    Hessian-vector products on the batch. Measured (`python
    scripts/dev/bench_curvature.py --depths 20 56 --repeats 2`, 1 thread): a product
    costs about 1.5x a training step's CPU time per example, and tracing plus the
    first call about 16 products' worth, so 20 iterations and 20 samples on 256
    examples took 16-17x the CPU time of one epoch (1,437 examples, batch 128) at
    depths 20 and 56 (10x in wall time). The parts use seeds derived from `seed`,
    so each is reproducible alone.
    """
    started = time.perf_counter()
    top = power_iteration(probe, k=top_k, iterations=iterations, rtol=rtol, seed=seed)
    trace = hutchinson_trace(probe, samples=samples, seed=seed + 1)
    density = None
    if density_runs > 0:
        density = lanczos_density(probe, runs=density_runs, steps=lanczos_steps, seed=seed + 2)
    return Curvature(
        top=top,
        trace=trace,
        density=density,
        loss=float(probe.loss),
        size=probe.size,
        training=probe.training,
        seconds=time.perf_counter() - started,
    )
