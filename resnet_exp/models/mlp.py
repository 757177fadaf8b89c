"""A fully connected net with the same plain/residual switch as the ResNets.

Depth counts weight layers: a dense stem, n two-layer blocks, a classifier
(depth = 2n + 2). Without convolutions it shows whether what skip connections
do with depth is about the shortcut itself rather than about images.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_exp.config.depths import mlp_blocks
from resnet_exp.models.blocks import (
    KernelInit,
    classifier,
    deleted_block,
    dense,
    dense_block,
    norm_act,
)


def mlp(
    depth: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    residual: bool = True,
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str | KernelInit = "he_normal",
    width: int = 128,
    skip_blocks: frozenset[str] = frozenset(),
) -> keras.Model:
    """Build the MLP (or its plain twin) of `depth` weight layers; any input shape is flattened.

    Blocks named in `skip_blocks` ("block3") are deleted: their output is act(x).
    """
    n = mlp_blocks(depth)
    inputs = keras.Input(shape=tuple(input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    x = dense(
        x, width, batch_norm=batch_norm, kernel_initializer=kernel_initializer, name="stem_dense"
    )
    x = norm_act(
        x, batch_norm=batch_norm, activation=activation, bn_name="stem_bn", act_name="stem_act"
    )
    for b in range(1, n + 1):
        name = f"block{b}"
        common = {
            "residual": residual,
            "batch_norm": batch_norm,
            "activation": activation,
            "kernel_initializer": kernel_initializer,
            "name": name,
        }
        if name in skip_blocks:
            x = deleted_block(x, width, 1, **common)  # the width never changes: identity
        else:
            x = dense_block(x, width, **common)
    outputs = classifier(x, num_classes, kernel_initializer=kernel_initializer)
    kind = "residual" if residual else "plain"
    return keras.Model(inputs, outputs, name=f"mlp{depth}_{kind}")
