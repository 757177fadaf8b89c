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

from resnet_exp.config.depths import FAMILIES, blocks_with_skips
from resnet_exp.config.schema import (
    ConfigError,
    ModelConfig,
    ResidualInit,
    residual_init_problem,
)
from resnet_exp.models.blocks import (
    SHORTCUTS,
    BranchInit,
    KernelInit,
    NetPlan,
    PadShortcut,
    Scalar,
    Scaled,
    basic_block,
    deleted_block,
    dense_block,
)
from resnet_exp.models.mlp import mlp
from resnet_exp.models.resnet import resnet_basic, resnet_cifar
from resnet_exp.models.vgg import vgg

__all__ = [
    "BranchInit",
    "KernelInit",
    "ModelConfig",
    "PadShortcut",
    "Scalar",
    "Scaled",
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
            or on exactly the blocks `skip_at` names; `residual_init` starts their branches
            (SkipInit, Fixup: nets without batch norm only, else a `ConfigError`).
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
    if spec.residual_init not in tuple(ResidualInit):
        inits = ", ".join(ResidualInit)
        raise ValueError(f"residual_init must be one of {inits}, got {spec.residual_init!r}")
    names, skips = blocks_with_skips(spec)
    # some blocks only: the run's name and tags say which
    kind = "plain" if not skips else "residual" if len(skips) == len(names) else "skip_at"
    problem = residual_init_problem(spec.residual_init, spec.batch_norm, bool(skips))
    if problem:
        raise ConfigError(problem)
    if spec.residual_init != "standard":
        kind = f"{kind}_{spec.residual_init}"  # resnet_cifar20_residual_fixup
    plan = NetPlan(
        input_shape=tuple(input_shape),
        num_classes=num_classes,
        init=KernelInit(spec.kernel_initializer, seed),
        skips=skips,
        skip_blocks=frozenset(skip_blocks),
        branch_init=BranchInit(spec.residual_init, len(skips)),
        name=f"{spec.name}{spec.depth}_{kind}",
    )
    return BUILDERS[spec.name](spec, plan)
