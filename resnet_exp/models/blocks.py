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
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
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

    def __call__(self, layer_name: str) -> keras.initializers.Initializer | str:
        if self.seed is None:
            return self.identifier
        init = keras.initializers.get(self.identifier)
        config = init.get_config()
        if "seed" not in config:  # deterministic initializers (zeros, ones, ...)
            return init
        config["seed"] = zlib.crc32(f"{self.seed}:{layer_name}".encode()) & 0x7FFFFFFF
        return type(init).from_config(config)


def _initializer(kernel_initializer: str | KernelInit, name: str) -> Any:
    if isinstance(kernel_initializer, KernelInit):
        return kernel_initializer(name)
    return kernel_initializer


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
) -> Any:
    """A "same"-padded convolution; the bias is dropped when BN follows (BN's beta replaces it)."""
    return layers.Conv2D(
        filters,
        kernel_size,
        strides=stride,
        padding="same",
        use_bias=not batch_norm,
        kernel_initializer=_initializer(kernel_initializer, name),
        name=name,
    )(x)


def dense(
    x: Any, units: int, *, batch_norm: bool, kernel_initializer: str | KernelInit, name: str
) -> Any:
    """A dense layer; the bias is dropped when BN follows, as for `conv`."""
    return layers.Dense(
        units,
        use_bias=not batch_norm,
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
    name: str,
) -> Any:
    """conv3x3(stride)-[BN]-act-conv3x3-[BN], (+ shortcut if residual), act.

    Args:
        x: Input tensor (batch, height, width, channels).
        filters: Output channels of both convolutions.
        stride: Stride of the first convolution (2 halves height and width).
        residual: Add the shortcut; False gives the plain twin with the same layers.
        shortcut: "A" (parameter-free) or "B" (projection) where the shape changes.
        name: Block prefix, e.g. "stage2_block1".

    Returns:
        The block's output tensor.
    """
    y = conv(
        x,
        filters,
        3,
        stride,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv1",
    )
    y = norm_act(
        y,
        batch_norm=batch_norm,
        activation=activation,
        bn_name=f"{name}_bn1",
        act_name=f"{name}_act1",
    )
    y = conv(
        y,
        filters,
        3,
        1,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=f"{name}_conv2",
    )
    y = norm(y, batch_norm=batch_norm, name=f"{name}_bn2")
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
    name: str,
) -> Any:
    """dense-[BN]-act-dense-[BN], (+ x if residual), act: the MLP's version of `basic_block`.

    The width never changes inside the MLP, so the shortcut is always the identity.
    """
    if residual and x.shape[-1] != units:
        raise ValueError(f"{name}: identity shortcut needs width {units}, got {x.shape[-1]}")
    y = dense(
        x,
        units,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=f"{name}_dense1",
    )
    y = norm_act(
        y,
        batch_norm=batch_norm,
        activation=activation,
        bn_name=f"{name}_bn1",
        act_name=f"{name}_act1",
    )
    y = dense(
        y,
        units,
        batch_norm=batch_norm,
        kernel_initializer=kernel_initializer,
        name=f"{name}_dense2",
    )
    y = norm(y, batch_norm=batch_norm, name=f"{name}_bn2")
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
    skip_blocks: frozenset[str] = frozenset(),
) -> Any:
    """Stack `basic_block`s; `stages` lists (filters, blocks, stride of the first block).

    Blocks named in `skips` have a shortcut; blocks named in `skip_blocks` (e.g.
    "stage2_block3") are deleted: `deleted_block`.
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
                name=name,
            )
    return x


def classifier(x: Any, num_classes: int, *, kernel_initializer: str | KernelInit) -> Any:
    """Softmax classifier, the last weight layer of every family, `classifier`.

    Always float32, so under mixed precision the softmax and the loss are too.
    """
    return layers.Dense(
        num_classes,
        activation="softmax",
        kernel_initializer=_initializer(kernel_initializer, "classifier"),
        name="classifier",
        dtype="float32",
    )(x)


def pooled_classifier(x: Any, num_classes: int, *, kernel_initializer: str | KernelInit) -> Any:
    """Global average pooling (`pool`) then the classifier, as in both conv families."""
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    return classifier(x, num_classes, kernel_initializer=kernel_initializer)
