"""He et al. 2016's CIFAR ResNets (Sec. 4.2): depth 6n+2, three stages of n basic blocks.

Paper: "Deep Residual Learning for Image Recognition", https://arxiv.org/abs/1512.03385.
Stage filters are base_filters * 1, 2, 4 (16/32/64); the first block of stages 2
and 3 halves the feature map. Option "A" shortcuts by default, as in the paper,
so the plain and residual nets have the same parameters (Table 6: ResNet-20
0.27M, ResNet-56 0.85M).
"""

from __future__ import annotations

import keras

from resnet_exp.config.depths import cifar_blocks_per_stage
from resnet_exp.models.blocks import (
    KernelInit,
    conv_stages,
    conv_stem,
    image_input,
    pooled_classifier,
)


def resnet_cifar(
    depth: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    residual: bool = True,
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    shortcut: str = "A",
    base_filters: int = 16,
    skip_blocks: frozenset[str] = frozenset(),
) -> keras.Model:
    """Build the CIFAR ResNet (or its plain twin) of `depth` weight layers.

    Blocks named in `skip_blocks` ("stage2_block1") are deleted (`blocks.deleted_block`).
    """
    n = cifar_blocks_per_stage(depth)
    stages = [(base_filters, n, 1), (2 * base_filters, n, 2), (4 * base_filters, n, 2)]
    inputs = image_input(input_shape, "resnet_cifar")
    x = conv_stem(
        inputs,
        base_filters,
        batch_norm=batch_norm,
        activation=activation,
        kernel_initializer=kernel_initializer,
    )
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
    return keras.Model(inputs, outputs, name=f"resnet_cifar{depth}_{kind}")
