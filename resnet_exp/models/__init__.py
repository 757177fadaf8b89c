"""Model builders: one entry point, `build_model`, for the three families.

Every layer has a positional name (`stem_conv`, `stage2_block1_conv1`,
`classifier`, ...), so the first and last weight layers have the same names in
every family, plain or residual, and logs and plots can refer to them by name.
"""

from __future__ import annotations

from collections.abc import Sequence
from enum import Enum
from typing import Any

import keras

from resnet_exp.config.depths import FAMILIES
from resnet_exp.models.blocks import (
    SHORTCUTS,
    KernelInit,
    PadShortcut,
    basic_block,
    deleted_block,
    dense_block,
)
from resnet_exp.models.mlp import mlp
from resnet_exp.models.resnet_basic import resnet_basic
from resnet_exp.models.resnet_cifar import resnet_cifar

__all__ = [
    "KernelInit",
    "PadShortcut",
    "basic_block",
    "build_model",
    "deleted_block",
    "dense_block",
    "mlp",
    "resnet_basic",
    "resnet_cifar",
]

_DEFAULT_SHORTCUT = {"resnet_cifar": "A", "resnet_basic": "B"}
_DEFAULT_BASE_FILTERS = {"resnet_cifar": 16, "resnet_basic": 64}


def _plain(value: Any) -> Any:
    """Config enums (`Shortcut.A`) to their plain values, so names and checks see "A"."""
    return value.value if isinstance(value, Enum) else value


def build_model(
    name: str,
    depth: int,
    *,
    input_shape: tuple[int, ...],
    num_classes: int,
    residual: bool = True,
    batch_norm: bool = True,
    activation: str = "relu",
    kernel_initializer: str = "he_normal",
    shortcut: str | None = None,
    width: int = 128,
    base_filters: int | None = None,
    blocks_per_stage: Sequence[int] | None = None,
    seed: int | None = None,
    skip_blocks: frozenset[str] | set[str] = frozenset(),
) -> keras.Model:
    """Build family `name` at `depth`; plain (`residual=False`) and residual twins match.

    Args:
        name: "resnet_cifar", "resnet_basic" or "mlp".
        depth: Weight layers; bad depths raise `architecture.DepthError`.
        input_shape: (height, width, channels) for the conv families; the MLP takes any shape.
        shortcut: "A" or "B"; None picks the family's default (A for resnet_cifar,
            B for resnet_basic). Ignored by the MLP.
        width: MLP hidden width. Ignored by the conv families.
        base_filters: First stage's filters; None picks 16 (resnet_cifar) or 64 (resnet_basic).
        seed: Seeds every kernel from its layer name, so twins built with the same
            seed start from identical weights in every layer they share.
        skip_blocks: Names of blocks to delete ("stage2_block1", "block3"): each is
            replaced by its shortcut path (`blocks.deleted_block`); for lesion studies.
    """
    name = str(_plain(name))
    init = KernelInit(str(_plain(kernel_initializer)), seed)
    common: dict[str, Any] = {
        "input_shape": tuple(input_shape),
        "num_classes": num_classes,
        "residual": residual,
        "batch_norm": batch_norm,
        "activation": str(_plain(activation)),
        "kernel_initializer": init,
        "skip_blocks": frozenset(skip_blocks),
    }
    if name == "mlp":
        return mlp(depth, width=width, **common)
    if name not in _DEFAULT_SHORTCUT:
        raise ValueError(f"unknown model family {name!r}; choose from {', '.join(FAMILIES)}")
    shortcut = str(_plain(shortcut)) if shortcut is not None else _DEFAULT_SHORTCUT[name]
    if shortcut not in SHORTCUTS:
        raise ValueError(f"shortcut must be one of {SHORTCUTS}, got {shortcut!r}")
    common["shortcut"] = shortcut
    common["base_filters"] = _DEFAULT_BASE_FILTERS[name] if base_filters is None else base_filters
    if name == "resnet_cifar":
        return resnet_cifar(depth, **common)
    return resnet_basic(depth, blocks_per_stage=blocks_per_stage, **common)
