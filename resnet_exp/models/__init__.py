"""Model builders: one entry point, `build_model`, for the four families.

Every layer has a positional name (`stem_conv`, `stage2_block1_conv1`,
`classifier`, ...), so the first and last weight layers have the same names in
every family, plain or residual, and logs and plots can refer to them by name.
"""

from __future__ import annotations

from dataclasses import fields
from enum import Enum
from typing import Any

import keras
from omegaconf import ListConfig

from resnet_exp.config.depths import FAMILIES, block_names, skipped_blocks
from resnet_exp.config.schema import ModelConfig
from resnet_exp.models.blocks import (
    SHORTCUTS,
    KernelInit,
    PadShortcut,
    basic_block,
    deleted_block,
    dense_block,
)
from resnet_exp.models.mlp import mlp
from resnet_exp.models.resnet import resnet_basic, resnet_cifar
from resnet_exp.models.vgg import vgg

__all__ = [
    "KernelInit",
    "ModelConfig",
    "PadShortcut",
    "basic_block",
    "build_model",
    "deleted_block",
    "dense_block",
    "mlp",
    "resnet_basic",
    "resnet_cifar",
    "vgg",
]

BUILDERS = {"resnet_cifar": resnet_cifar, "resnet_basic": resnet_basic, "mlp": mlp, "vgg": vgg}


def _plain(value: Any) -> Any:
    """Config enums and lists (`Shortcut.A`, a ListConfig) to plain values, for names and checks."""
    if isinstance(value, Enum):
        return value.value
    return list(value) if isinstance(value, ListConfig) else value


def build_model(
    spec: ModelConfig,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    seed: int | None = None,
    skip_blocks: frozenset[str] | set[str] = frozenset(),
) -> keras.Model:
    """Build `spec` (the `model` config): plain (`residual=False`) and residual twins match.

    Args:
        spec: A `ModelConfig`, or the composed config's `model` node; its defaults are
            the schema's, so `ModelConfig(name="resnet_cifar", depth=20)` is ResNet-20.
            Bad depths raise `DepthError`. Skips go on every block (`residual`), on none,
            or on exactly the blocks `skip_at` names.
        input_shape: (height, width, channels) for the conv families; the MLP takes any shape.
        seed: Seeds every kernel from its layer name, so twins built with the same
            seed start from identical weights in every layer they share.
        skip_blocks: Names of blocks to delete ("stage2_block1", "block3"): each is
            replaced by its shortcut path (`blocks.deleted_block`); for lesion studies.
    """
    spec = ModelConfig(**{f.name: _plain(getattr(spec, f.name)) for f in fields(ModelConfig)})
    if spec.name not in BUILDERS:
        raise ValueError(f"unknown model family {spec.name!r}; choose from {', '.join(FAMILIES)}")
    if spec.shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {spec.shortcut!r}")
    per_stage = spec.convs_per_stage if spec.name == "vgg" else spec.blocks_per_stage
    names = block_names(spec.name, spec.depth, per_stage)
    if spec.skip_at is None:
        skips = frozenset(names) if spec.residual else frozenset()
    else:
        skips = skipped_blocks(names, spec.skip_at)
    if skips and skips != frozenset(names):
        kind = "skip_at"  # some blocks: the run's name and tags say which
    else:
        kind = "residual" if skips or (spec.residual and spec.skip_at is None) else "plain"
    return BUILDERS[spec.name](
        spec,
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        init=KernelInit(spec.kernel_initializer, seed),
        skips=skips,
        kind=kind,
        skip_blocks=frozenset(skip_blocks),
    )
