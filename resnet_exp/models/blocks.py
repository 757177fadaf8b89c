"""Building blocks shared by every model family: plain and residual differ in one switch.

Each block is a plain function, tensor in and tensor out, in the style of
`keras.applications.resnet`, and every layer gets a positional name
(`stage2_block1_conv1`), so weights and gradients can be found by name.

The `residual` switch only decides whether the shortcut is added: a plain net
and its residual twin have the same layers otherwise. With option "A"
shortcuts (He et al. 2016, Sec. 3.3: identity, subsampled, zero-padded
channels) the shortcut has no parameters, so the twins have exactly the same
parameter count. Option "B" (1x1 projection where the shape changes) adds
parameters to the residual net only.

Without batch norm, `BranchInit` starts the residual branches as SkipInit (De &
Smith 2020, https://arxiv.org/abs/2002.10444) or Fixup (Zhang, Dauphin & Ma 2019,
https://arxiv.org/abs/1901.09321) do; blocks without a skip stay standard.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import keras
from keras import layers, ops

SHORTCUTS = ("A", "B")


@dataclass(frozen=True)
class KernelInit:
    """A kernel initializer, optionally seeded per layer from the layer's name.

    Seeding by name (not by position) keeps twins identical layer for layer
    even when one of them has extra layers (option "B" projections), and
    gives every layer its own draw instead of one repeated seeded tensor.
    """

    identifier: str = "he_normal"
    seed: int | None = None
    scale: float = 1.0  # Fixup's conv1: the same draw times L ** -1/2 (`Scaled`)

    def __call__(self, layer_name: str) -> keras.initializers.Initializer | str:
        init = self._seeded(layer_name)
        return init if self.scale == 1.0 else Scaled(init, self.scale)

    def _seeded(self, layer_name: str) -> keras.initializers.Initializer | str:
        if self.seed is None:
            return self.identifier
        init = keras.initializers.get(self.identifier)
        config = init.get_config()
        if "seed" not in config:  # deterministic initializers (zeros, ones, ...)
            return init
        config["seed"] = zlib.crc32(f"{self.seed}:{layer_name}".encode()) & 0x7FFFFFFF
        return type(init).from_config(config)


@keras.saving.register_keras_serializable(package="resnet_exp")
class Scaled(keras.initializers.Initializer):
    """`initializer`'s draw times `scale`, as the kernel's initializer.

    Scaling inside the initializer (rather than assigning to the kernel after the
    build) keeps the model's config the whole recipe: a saved model reloads and a
    seeded one rebuilds with the same kernel, exactly the unscaled draw times the
    float32 `scale`, the same draw a standard twin with the same seed starts from.
    """

    def __init__(self, initializer: Any, scale: float) -> None:
        self.initializer = keras.initializers.get(initializer)
        self.scale = float(scale)

    def __call__(self, shape: Any, dtype: Any = None) -> Any:
        value = self.initializer(shape, dtype=dtype)
        return ops.multiply(value, ops.cast(self.scale, value.dtype))

    def get_config(self) -> dict[str, Any]:
        return {"initializer": keras.initializers.serialize(self.initializer), "scale": self.scale}


@dataclass(frozen=True)
class BranchInit:
    """How the residual branches start (`model.residual_init`), for nets without batch norm.

    "standard": as every other layer. "skipinit" (De & Smith 2020): the branch's
    output times a learnable scalar `{block}_skipinit` that starts at 0, so at
    initialisation every residual block is its shortcut path. "fixup" (Zhang et al.
    2019, Sec. 3 and their fixup_resnet_cifar.py): scalar biases before each
    convolution and activation, a scalar scale and bias at the branch's end, branch
    layers without biases of their own, the first layer's kernel scaled by
    L^(-1/(2m-2)) = L^(-1/2) (L residual blocks of m = 2 layers) and the second's at
    zero; the classifier starts at zero behind a scalar bias. Blocks without a skip,
    stems and heads keep the standard initialisation. One difference from their code:
    a downsampling shortcut takes x, not x + bias1a, so that a deleted block
    (`deleted_block`) is still exactly the block's shortcut path.
    """

    method: str = "standard"
    residual_blocks: int = 1  # L: the net's blocks with a skip

    @property
    def skipinit(self) -> bool:
        return self.method == "skipinit"

    @property
    def fixup(self) -> bool:
        return self.method == "fixup"

    @property
    def fixup_scale(self) -> float:
        return max(self.residual_blocks, 1) ** -0.5


@dataclass(frozen=True)
class NetPlan:
    """What every family's builder takes besides its spec, decided once by `build_model`."""

    input_shape: tuple[int, ...]
    num_classes: int
    init: KernelInit  # every kernel's initializer, seeded by layer name
    skips: frozenset[str]  # the blocks with a shortcut
    skip_blocks: frozenset[str]  # the blocks deleted (lesions)
    branch_init: BranchInit
    name: str  # the Keras model's name: resnet_cifar20_residual, vgg13_skip_at_fixup, ...


def _initializer(kernel_initializer: str | KernelInit, name: str) -> Any:
    if isinstance(kernel_initializer, KernelInit):
        return kernel_initializer(name)
    return kernel_initializer


@keras.saving.register_keras_serializable(package="resnet_exp")
class Scalar(layers.Layer):
    """One learnable scalar added to its input (`mode="add"`) or multiplied into it ("multiply").

    SkipInit's gate and Fixup's biases and scale. Its weight is named `bias` or
    `scale`, never `kernel`, so the gradient recorders, which measure kernels,
    see the same weight layers as in the standard net.
    """

    def __init__(self, mode: str, initial: float, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if mode not in ("add", "multiply"):
            raise ValueError(f"mode must be 'add' or 'multiply', got {mode!r}")
        self.mode = mode
        self.initial = float(initial)

    def build(self, input_shape: tuple) -> None:
        self.value = self.add_weight(
            shape=(),
            initializer=keras.initializers.Constant(self.initial),
            name="bias" if self.mode == "add" else "scale",
        )

    def call(self, x: Any) -> Any:
        value = ops.cast(self.value, x.dtype)
        return ops.add(x, value) if self.mode == "add" else ops.multiply(x, value)

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        return input_shape

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode, "initial": self.initial}


def _scalar(x: Any, mode: str, initial: float, *, on: bool, name: str) -> Any:
    """`Scalar(mode, initial)` named `name` where `on`, else `x` untouched."""
    return Scalar(mode, initial, name=name)(x) if on else x


@keras.saving.register_keras_serializable(package="resnet_exp")
class PadShortcut(layers.Layer):
    """Option "A" shortcut: subsample by `stride` and zero-pad the channels.

    It has no weights, which is the point: the residual net gets no parameter
    that its plain twin lacks.
    """

    def __init__(self, stride: int, filters: int, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.stride = stride
        self.filters = filters

    def call(self, x: Any) -> Any:
        x = x[:, :: self.stride, :: self.stride, :]
        extra = self.filters - x.shape[-1]
        return ops.pad(x, [[0, 0], [0, 0], [0, 0], [0, extra]])

    def compute_output_shape(self, input_shape: tuple) -> tuple:
        def sub(n: int | None) -> int | None:
            return None if n is None else -(-n // self.stride)

        batch, height, width, _ = input_shape
        return (batch, sub(height), sub(width), self.filters)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "stride": self.stride, "filters": self.filters}


def norm(x: Any, *, batch_norm: bool, name: str) -> Any:
    """Batch norm if switched on, so BN can be ablated without touching the blocks."""
    return layers.BatchNormalization(name=name)(x) if batch_norm else x


def norm_act(x: Any, *, batch_norm: bool, activation: str, bn_name: str, act_name: str) -> Any:
    """The "[BN] then activation" step that follows every weight layer but a block's last."""
    x = norm(x, batch_norm=batch_norm, name=bn_name)
    return layers.Activation(activation, name=act_name)(x)


def conv(
    x: Any,
    filters: int,
    kernel_size: int,
    stride: int,
    *,
    batch_norm: bool,
    kernel_initializer: str | KernelInit,
    name: str,
    use_bias: bool | None = None,
) -> Any:
    """A "same"-padded convolution; the bias is dropped when BN follows (BN's beta replaces it)
    or when `use_bias=False` (Fixup's scalar biases replace it)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=not batch_norm if use_bias is None else use_bias,
        kernel_initializer=_initializer(kernel_initializer, name),
        name=name,
    )(x)


def dense(
    x: Any,
    units: int,
    *,
    batch_norm: bool,
    kernel_initializer: str | KernelInit,
    name: str,
    use_bias: bool | None = None,
) -> Any:
    """A dense layer; the bias is dropped when BN follows or `use_bias=False`, as for `conv`."""
    return layers.Dense(
        units,
        use_bias=not batch_norm if use_bias is None else use_bias,
        kernel_initializer=_initializer(kernel_initializer, name),
        name=name,
    )(x)


def _merge(y: Any, shortcut: Any | None, *, activation: str, name: str) -> Any:
    """Add the shortcut (residual nets only), then the block's output activation."""
    if shortcut is not None:
        y = layers.Add(name=f"{name}_add")([y, shortcut])
    return layers.Activation(activation, name=f"{name}_out")(y)


def conv_shortcut(
    x: Any,
    filters: int,
    stride: int,
    *,
    shortcut: str,
    batch_norm: bool,
    kernel_initializer: str | KernelInit,
    name: str,
) -> Any:
    """Identity where the shape is kept; option "A" (pad) or "B" (1x1 projection) otherwise."""
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    if stride == 1 and x.shape[-1] == filters:
        return x
    if shortcut == "A":
        return PadShortcut(stride, filters, name=f"{name}_shortcut")(x)
    x = conv(
        x,
        filters,
        1,
        stride,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=f"{name}_shortcut",
    )
    return norm(x, batch_norm=batch_norm, name=f"{name}_shortcut_bn")


# weight_layer(y, i, kernel_initializer, use_bias): a block's i-th conv or dense layer
WeightLayer = Callable[[Any, int, "str | KernelInit", "bool | None"], Any]


def _branch(
    x: Any,
    weight_layer: WeightLayer,
    *,
    residual: bool,
    branch_init: BranchInit,
    batch_norm: bool,
    activation: str,
    kernel_initializer: str | KernelInit,
    name: str,
) -> Any:
    """F(x), the two-layer branch both blocks share: layer 1, [BN], act, layer 2, [BN].

    With a skip, SkipInit ends it with `{name}_skipinit`, and Fixup puts its scalars
    around the layers (`{name}_bias1a`, `_bias1b`, `_bias2a`, `_scale`, `_bias2b`) and
    starts them from its kernels (`BranchInit`); a plain block stays standard.
    """
    fixup = residual and branch_init.fixup
    first = second = kernel_initializer
    use_bias = False if fixup else None  # Fixup's scalar biases replace the layers' own
    if fixup:  # the same seeded draw as the standard net's, scaled; the second layer at zero
        base = kernel_initializer
        base = base if isinstance(base, KernelInit) else KernelInit(base)
        first, second = replace(base, scale=branch_init.fixup_scale), "zeros"
    y = _scalar(x, "add", 0.0, on=fixup, name=f"{name}_bias1a")
    y = weight_layer(y, 1, first, use_bias)
    y = _scalar(y, "add", 0.0, on=fixup, name=f"{name}_bias1b")
    y = norm_act(
        y,
        batch_norm=batch_norm,
        activation=activation,
        bn_name=f"{name}_bn1",
        act_name=f"{name}_act1",
    )
    y = _scalar(y, "add", 0.0, on=fixup, name=f"{name}_bias2a")
    y = weight_layer(y, 2, second, use_bias)
    y = norm(y, batch_norm=batch_norm, name=f"{name}_bn2")
    y = _scalar(y, "multiply", 1.0, on=fixup, name=f"{name}_scale")
    y = _scalar(y, "add", 0.0, on=fixup, name=f"{name}_bias2b")
    skipinit = residual and branch_init.skipinit
    return _scalar(y, "multiply", 0.0, on=skipinit, name=f"{name}_skipinit")


def basic_block(
    x: Any,
    filters: int,
    stride: int,
    *,
    residual: bool,
    shortcut: str = "A",
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    branch_init: BranchInit = BranchInit(),
    name: str,
) -> Any:
    """conv3x3(stride)-[BN]-act-conv3x3-[BN], (+ shortcut if residual), act.

    Args:
        x: Input tensor (batch, height, width, channels).
        filters: Output channels of both convolutions.
        stride: Stride of the first convolution (2 halves height and width).
        residual: Add the shortcut; False gives the plain twin with the same layers.
        shortcut: "A" (parameter-free) or "B" (projection) where the shape changes.
        branch_init: How the residual branch starts (SkipInit, Fixup); plain blocks ignore it.
        name: Block prefix, e.g. "stage2_block1".

    Returns:
        The block's output tensor.
    """

    def layer(y: Any, i: int, init: str | KernelInit, use_bias: bool | None) -> Any:
        return conv(
            y,
            filters,
            3,
            stride if i == 1 else 1,
            batch_norm=batch_norm,
            kernel_initializer=init,
            use_bias=use_bias,
            name=f"{name}_conv{i}",
        )

    y = _branch(
        x,
        layer,
        residual=residual,
        branch_init=branch_init,
        batch_norm=batch_norm,
        activation=activation,
        kernel_initializer=kernel_initializer,
        name=name,
    )
    skip = None
    if residual:
        skip = conv_shortcut(
            x,
            filters,
            stride,
            shortcut=shortcut,
            batch_norm=batch_norm,
            kernel_initializer=kernel_initializer,
            name=name,
        )
    return _merge(y, skip, activation=activation, name=name)


def deleted_block(
    x: Any,
    filters: int,
    stride: int,
    *,
    residual: bool,
    shortcut: str = "A",
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    branch_init: BranchInit = BranchInit(),
    name: str,
) -> Any:
    """A lesioned block (Veit et al. 2016): its shortcut path alone, then its output activation.

    That is exactly what `basic_block` computes with its residual branch set to
    zero; with ReLU and an identity shortcut it is `x` itself (x >= 0 already).
    A plain block is replaced by the same path, so plain and residual nets are
    lesioned alike. A plain net has no trained projection, so where the shape
    changes its deleted block takes the parameter-free option "A" shortcut
    even when the net was built with "B". Layer names are the block's own
    (`{name}_shortcut`, `{name}_out`), so trained weights copy over by name.
    `branch_init` is accepted (the signature is `basic_block`'s) and unused: the
    branch and its scalars are gone, so a SkipInit block at initialisation (gate 0)
    computes exactly this.
    """
    skip = conv_shortcut(
        x,
        filters,
        stride,
        shortcut=shortcut if residual else "A",
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=name,
    )
    return _merge(skip, None, activation=activation, name=name)


def dense_block(
    x: Any,
    units: int,
    *,
    residual: bool,
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    branch_init: BranchInit = BranchInit(),
    name: str,
) -> Any:
    """dense-[BN]-act-dense-[BN], (+ x if residual), act: the MLP's version of `basic_block`.

    The width never changes inside the MLP, so the shortcut is always the identity.
    """
    if residual and x.shape[-1] != units:
        raise ValueError(f"{name}: identity shortcut needs width {units}, got {x.shape[-1]}")

    def layer(y: Any, i: int, init: str | KernelInit, use_bias: bool | None) -> Any:
        return dense(
            y,
            units,
            batch_norm=batch_norm,
            kernel_initializer=init,
            use_bias=use_bias,
            name=f"{name}_dense{i}",
        )

    y = _branch(
        x,
        layer,
        residual=residual,
        branch_init=branch_init,
        batch_norm=batch_norm,
        activation=activation,
        kernel_initializer=kernel_initializer,
        name=name,
    )
    return _merge(y, x if residual else None, activation=activation, name=name)


def image_input(input_shape: tuple[int, ...], family: str) -> keras.KerasTensor:
    """The conv families' input; a clear error for a flat (features,) shape."""
    if len(input_shape) != 3:
        raise ValueError(
            f"{family} needs an image input shape (height, width, channels), "
            f"got {tuple(input_shape)}; use the mlp family for flat features"
        )
    return keras.Input(shape=tuple(input_shape), name="input")


def conv_stem(
    x: Any,
    filters: int,
    *,
    batch_norm: bool,
    activation: str,
    kernel_initializer: str | KernelInit,
) -> Any:
    """conv3x3-[BN]-act: the first weight layer of both conv families, `stem_conv`."""
    x = conv(
        x,
        filters,
        3,
        1,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name="stem_conv",
    )
    return norm_act(
        x, batch_norm=batch_norm, activation=activation, bn_name="stem_bn", act_name="stem_act"
    )


def conv_stages(
    x: Any,
    stages: list[tuple[int, int, int]],
    *,
    skips: frozenset[str],
    shortcut: str,
    batch_norm: bool,
    activation: str,
    kernel_initializer: str | KernelInit,
    branch_init: BranchInit = BranchInit(),
    skip_blocks: frozenset[str] = frozenset(),
) -> Any:
    """Stack `basic_block`s; `stages` lists (filters, blocks, stride of the first block).

    Blocks named in `skips` have a shortcut, their branches started by `branch_init`;
    blocks named in `skip_blocks` (e.g. "stage2_block3") are deleted: `deleted_block`.
    """
    for s, (filters, blocks, stride) in enumerate(stages, start=1):
        for b in range(1, blocks + 1):
            name = f"stage{s}_block{b}"
            x = (deleted_block if name in skip_blocks else basic_block)(
                x,
                filters,
                stride if b == 1 else 1,
                residual=name in skips,
                shortcut=shortcut,
                batch_norm=batch_norm,
                activation=activation,
                kernel_initializer=kernel_initializer,
                branch_init=branch_init,
                name=name,
            )
    return x


def classifier(
    x: Any,
    num_classes: int,
    *,
    kernel_initializer: str | KernelInit,
    branch_init: BranchInit = BranchInit(),
) -> Any:
    """Softmax classifier, the last weight layer of every family, `classifier`.

    Always float32, so under mixed precision the softmax and the loss are too. Fixup
    starts its kernel and bias at zero behind a scalar bias, `classifier_bias`.
    """
    fixup = branch_init.fixup
    x = _scalar(x, "add", 0.0, on=fixup, name="classifier_bias")
    return layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer="zeros" if fixup else _initializer(kernel_initializer, "classifier"),
        name="classifier",
        dtype="float32",
    )(x)


def pooled_classifier(
    x: Any,
    num_classes: int,
    *,
    kernel_initializer: str | KernelInit,
    branch_init: BranchInit = BranchInit(),
) -> Any:
    """Global average pooling (`pool`) then the classifier, as in both conv families."""
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return classifier(
        x, num_classes, kernel_initializer=kernel_initializer, branch_init=branch_init
    )
