"""VGG nets (Simonyan and Zisserman 2015, Table 1) for small images, with skips where asked.

Five stages of 3x3 convolutions with base_filters * 1, 2, 4, 8, 8 filters (64..512),
configurations A, B, D, E (`model.depth` 11, 13, 16, 19) or any `model.convs_per_stage`.
A stage's convolutions pair into blocks (`stage5_block1`: its two convolutions), each
the `basic_block` of the ResNets at stride 1, so `model.residual` adds a skip across
every block, exactly as in a ResNet; where a stage has an odd count, its first
convolution stands alone (`stage{s}_conv`) and changes the channels, so the blocks after
it keep their shape and their skips are identities. A 2x2 max-pool follows each stage
while the image is larger than 1x1 (32x32 inputs pool five times, the 8x8 digits three).

The head is two hidden dense layers of `model.width` (512 in `conf/model/vgg.yaml`) and
the classifier, so depth counts weight layers as the paper's table does (A = 8
convolutions + 3); each hidden layer has batch norm when the convolutions have it, and
no dropout, which would add noise to the gradients we measure.
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_exp.config.depths import vgg_convs_per_stage
from resnet_exp.config.schema import ModelConfig
from resnet_exp.models.blocks import (
    NetPlan,
    basic_block,
    classifier,
    conv,
    deleted_block,
    dense,
    image_input,
    norm_act,
)

STAGE_WIDTHS = (1, 2, 4, 8, 8)  # times base_filters


def vgg(spec: ModelConfig, plan: NetPlan) -> keras.Model:
    """The VGG net of `spec.depth` weight layers; blocks named in `skip_blocks` are deleted.

    `branch_init` starts the blocks with a skip and the classifier (SkipInit, Fixup); the
    lone convolutions and fc1/fc2 keep the standard initialisation."""
    options = {"batch_norm": spec.batch_norm, "kernel_initializer": plan.init}
    act = {"batch_norm": spec.batch_norm, "activation": spec.activation}
    inputs = image_input(plan.input_shape, "vgg")
    x = inputs
    for s, convs in enumerate(vgg_convs_per_stage(spec.depth, spec.convs_per_stage), start=1):
        filters = spec.base_filters * STAGE_WIDTHS[s - 1]
        if convs % 2:
            x = conv(x, filters, 3, 1, name=f"stage{s}_conv", **options)
            x = norm_act(x, bn_name=f"stage{s}_bn", act_name=f"stage{s}_act", **act)
        for b in range(1, convs // 2 + 1):
            name = f"stage{s}_block{b}"
            x = (deleted_block if name in plan.skip_blocks else basic_block)(
                x,
                filters,
                1,
                residual=name in plan.skips,
                shortcut=spec.shortcut,
                activation=spec.activation,
                branch_init=plan.branch_init,
                name=name,
                **options,
            )
        if x.shape[1] > 1 and x.shape[2] > 1:
            x = layers.MaxPooling2D(2, name=f"stage{s}_pool")(x)
    x = layers.Flatten(name="flatten")(x)
    for i in (1, 2):
        x = dense(x, spec.width, name=f"fc{i}", **options)
        x = norm_act(x, bn_name=f"fc{i}_bn", act_name=f"fc{i}_act", **act)
    outputs = classifier(
        x, plan.num_classes, kernel_initializer=plan.init, branch_init=plan.branch_init
    )
    return keras.Model(inputs, outputs, name=plan.name)
