"""A fully connected net with the same plain/residual switch as the ResNets.

Depth counts weight layers: a dense stem, n two-layer blocks, a classifier
(depth = 2n + 2). Without convolutions it shows whether what skip connections
do with depth is about the shortcut itself rather than about images.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_exp.config.depths import mlp_blocks
from resnet_exp.config.schema import ModelConfig
from resnet_exp.models.blocks import (
    NetPlan,
    classifier,
    deleted_block,
    dense,
    dense_block,
    norm_act,
)


def mlp(spec: ModelConfig, plan: NetPlan) -> keras.Model:
    """The MLP (or its plain twin) of `spec.depth` weight layers; any input shape is flattened.

    Blocks named in `skip_blocks` ("block3") are deleted: their output is act(x).
    `branch_init` starts the blocks with a skip and the classifier (SkipInit, Fixup).
    """
    n, width = mlp_blocks(spec.depth), spec.width
    options = {"batch_norm": spec.batch_norm, "kernel_initializer": plan.init}
    inputs = keras.Input(shape=tuple(plan.input_shape), name="input")
    x = layers.Flatten(name="flatten")(inputs)
    x = dense(x, width, name="stem_dense", **options)
    x = norm_act(
        x,
        batch_norm=spec.batch_norm,
        activation=spec.activation,
        bn_name="stem_bn",
        act_name="stem_act",
    )
    for b in range(1, n + 1):
        name = f"block{b}"
        common = {
            "residual": name in plan.skips,
            "activation": spec.activation,
            "name": name,
            **options,
        }
        if name in plan.skip_blocks:
            x = deleted_block(x, width, 1, **common)  # the width never changes: identity
        else:
            x = dense_block(x, width, branch_init=plan.branch_init, **common)
    outputs = classifier(
        x, plan.num_classes, kernel_initializer=plan.init, branch_init=plan.branch_init
    )
    return keras.Model(inputs, outputs, name=plan.name)
