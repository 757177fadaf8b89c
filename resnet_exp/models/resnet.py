"""The two conv families on one generic builder, in the style of `keras.applications.resnet`.

`resnet_cifar`: He et al. 2016's CIFAR ResNets (Sec. 4.2, "Deep Residual Learning
for Image Recognition", https://arxiv.org/abs/1512.03385): depth 6n+2, three
stages of n basic blocks with base_filters * 1, 2, 4 filters (16/32/64); the
first block of stages 2 and 3 halves the feature map. Its preset
(`conf/model/resnet_cifar.yaml`) keeps the paper's option "A" shortcuts, so the
plain and residual nets have the same parameters (Table 6: ResNet-20 0.27M,
ResNet-56 0.85M).

`resnet_basic`: the seed article's basic-block ResNet (ResNet-18/34 style) for
small images: four stages of base_filters * 1, 2, 4, 8 filters (64..512) with
strides 1/2/2/2, after the stem and a 2x2 max-pool of stride 1 that keeps the
resolution of 32x32 inputs. Blocks per stage come from the depth ([2,2,2,2] is
ResNet-18, [3,4,6,3] ResNet-34). Its preset uses option "B", a 1x1 projection
where the shape changes, which gives the residual net parameters its plain twin
lacks (`model.shortcut=A` for an exact parameter match).
"""

from __future__ import annotations

import keras
from keras import layers

from resnet_exp.config.depths import basic_blocks_per_stage, cifar_blocks_per_stage
from resnet_exp.config.schema import ModelConfig
from resnet_exp.models.blocks import (
    NetPlan,
    conv_stages,
    conv_stem,
    image_input,
    pooled_classifier,
)

Stage = tuple[int, int, int]  # (filters, blocks, stride of the first block)


def resnet(
    spec: ModelConfig, stages: list[Stage], plan: NetPlan, *, stem_pool: bool = False
) -> keras.Model:
    """stem, `stages` of basic blocks (a shortcut on those in `skips`, their branches started
    by `branch_init`), pooled classifier; `skip_blocks` are deleted blocks."""
    options = {
        "batch_norm": spec.batch_norm,
        "activation": spec.activation,
        "kernel_initializer": plan.init,
    }
    inputs = image_input(plan.input_shape, spec.name)
    x = conv_stem(inputs, spec.base_filters, **options)
    if stem_pool:
        x = layers.MaxPooling2D(pool_size=2, strides=1, padding="same", name="stem_pool")(x)
    x = conv_stages(
        x,
        stages,
        skips=plan.skips,
        shortcut=spec.shortcut,
        skip_blocks=plan.skip_blocks,
        branch_init=plan.branch_init,
        **options,
    )
    outputs = pooled_classifier(
        x, plan.num_classes, kernel_initializer=plan.init, branch_init=plan.branch_init
    )
    return keras.Model(inputs, outputs, name=plan.name)


def resnet_cifar(spec: ModelConfig, plan: NetPlan) -> keras.Model:
    """He et al.'s CIFAR ResNet (or its plain twin) of `spec.depth` weight layers."""
    n = cifar_blocks_per_stage(spec.depth)
    f = spec.base_filters
    return resnet(spec, [(f, n, 1), (2 * f, n, 2), (4 * f, n, 2)], plan)


def resnet_basic(spec: ModelConfig, plan: NetPlan) -> keras.Model:
    """The basic-block ResNet (or its plain twin) of `spec.depth` weight layers."""
    blocks = basic_blocks_per_stage(spec.depth, spec.blocks_per_stage)
    stages = [(spec.base_filters * 2**i, n, 1 if i == 0 else 2) for i, n in enumerate(blocks)]
    return resnet(spec, stages, plan, stem_pool=True)
