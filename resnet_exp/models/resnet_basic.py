"""The seed article's basic-block ResNet (ResNet-18/34 style) for small images.

Four stages of base_filters * 1, 2, 4, 8 filters (64..512) with strides
1/2/2/2, after a 3x3 stem and a 2x2 max-pool of stride 1 that keeps the
resolution of 32x32 inputs. Blocks per stage come from the depth ([2,2,2,2] is
ResNet-18, [3,4,6,3] ResNet-34). Option "B" by default: a 1x1 projection where
the shape changes, which gives the residual net parameters its plain twin lacks
(pass shortcut="A" for an exact parameter match).
"""

from __future__ import annotations

from collections.abc import Sequence

import keras
from keras import layers

from resnet_exp.config.depths import basic_blocks_per_stage
from resnet_exp.models.blocks import (
    KernelInit,
    conv_stages,
    conv_stem,
    image_input,
    pooled_classifier,
)


def resnet_basic(
    depth: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    residual: bool = True,
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    shortcut: str = "B",
    base_filters: int = 64,
    blocks_per_stage: Sequence[int] | None = None,
    skip_blocks: frozenset[str] = frozenset(),
) -> keras.Model:
    """Build the basic-block ResNet (or its plain twin) of `depth` weight layers.

    Blocks named in `skip_blocks` ("stage2_block1") are deleted (`blocks.deleted_block`).
    """
    blocks = basic_blocks_per_stage(depth, blocks_per_stage)
    stages = [(base_filters * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    inputs = image_input(input_shape, "resnet_basic")
    x = conv_stem(
        inputs,
        base_filters,
        batch_norm=batch_norm,
        activation=activation,
        kernel_initializer=kernel_initializer,
    )
    x = layers.MaxPooling2D(pool_size=2, strides=1, padding="same", name="stem_pool")(x)
    x = conv_stages(
        x,
        stages,
        residual=residual,
        shortcut=shortcut,
        batch_norm=batch_norm,
        activation=activation,
        kernel_initializer=kernel_initializer,
        skip_blocks=skip_blocks,
    )
    outputs = pooled_classifier(x, num_classes, kernel_initializer=kernel_initializer)
    kind = "residual" if residual else "plain"
    return keras.Model(inputs, outputs, name=f"resnet_basic{depth}_{kind}")
