"""Depth rules for every model family, free of TensorFlow.

The config validator and the model builders share these rules, so a depth that
the schema accepts is exactly a depth the builders can build, and a bad depth
is reported before TensorFlow is imported.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

FAMILIES = ("resnet_cifar", "resnet_basic", "mlp", "vgg")

# The seed article's named ResNets (basic blocks, four stages).
BASIC_LAYOUTS: dict[int, tuple[int, int, int, int]] = {
    10: (1, 1, 1, 1),
    18: (2, 2, 2, 2),
    34: (3, 4, 6, 3),
}


# Simonyan and Zisserman 2015, Table 1: convolutions per stage of configurations A, B, D, E;
# depth counts them and the three fully connected layers.
VGG_LAYOUTS: dict[int, tuple[int, ...]] = {
    11: (1, 1, 2, 2, 2),
    13: (2, 2, 2, 2, 2),
    16: (2, 2, 3, 3, 3),
    19: (2, 2, 4, 4, 4),
}
VGG_HEAD = 3  # fully connected layers: two hidden, the classifier


class DepthError(ValueError):
    """A depth that the chosen family cannot build; the message is one line."""


def _examples(values: Sequence[int]) -> str:
    return ", ".join(str(v) for v in values) + ", ..."


def cifar_blocks_per_stage(depth: int) -> int:
    """He et al. 2016's CIFAR family: depth = 6n + 2, n blocks in each of 3 stages."""
    if depth < 8 or (depth - 2) % 6:
        raise DepthError(
            f"resnet_cifar depth must be 6n+2 with n >= 1, got {depth}; "
            f"valid depths: {_examples([6 * n + 2 for n in range(1, 10)] + [110])}"
        )
    return (depth - 2) // 6


def basic_blocks_per_stage(depth: int, blocks_per_stage: Sequence[int] | None = None) -> list[int]:
    """Basic-block ResNet: depth = 2 * sum(blocks) + 2 (stem conv and classifier)."""
    if blocks_per_stage:
        blocks = [int(b) for b in blocks_per_stage]
        if len(blocks) != 4 or min(blocks) < 1:
            raise DepthError(
                f"resnet_basic blocks_per_stage must be 4 positive integers, got {blocks}"
            )
        implied = 2 * sum(blocks) + 2
        if depth != implied:
            raise DepthError(
                f"resnet_basic depth must equal 2*sum(blocks_per_stage)+2 = {implied} "
                f"for blocks_per_stage={blocks}, got {depth}"
            )
        return blocks
    if depth in BASIC_LAYOUTS:
        return list(BASIC_LAYOUTS[depth])
    if depth >= 10 and (depth - 2) % 8 == 0:
        return [(depth - 2) // 8] * 4
    valid = sorted(set(BASIC_LAYOUTS) | {8 * n + 2 for n in range(1, 6)})
    raise DepthError(
        f"resnet_basic depth must be 18, 34 or 8n+2 (or set model.blocks_per_stage), "
        f"got {depth}; valid depths: {_examples(valid)}"
    )


def mlp_blocks(depth: int) -> int:
    """MLP: a stem layer, n two-layer blocks and a classifier, so depth = 2n + 2."""
    if depth < 4 or depth % 2:
        raise DepthError(
            f"mlp depth must be 2n+2 with n >= 1 (an even number >= 4), got {depth}; "
            f"valid depths: {_examples([4, 6, 8, 10, 20, 50, 100, 200])}"
        )
    return (depth - 2) // 2


def vgg_convs_per_stage(depth: int, convs_per_stage: Sequence[int] | None = None) -> list[int]:
    """VGG: depth = sum(convolutions per stage) + 3 (two hidden dense layers, the classifier)."""
    if convs_per_stage:
        convs = [int(c) for c in convs_per_stage]
        if len(convs) != 5 or min(convs) < 1:
            raise DepthError(f"vgg convs_per_stage must be 5 positive integers, got {convs}")
        if depth != sum(convs) + VGG_HEAD:
            raise DepthError(
                f"vgg depth must equal sum(convs_per_stage)+{VGG_HEAD} = "
                f"{sum(convs) + VGG_HEAD} for convs_per_stage={convs}, got {depth}"
            )
        return convs
    if depth in VGG_LAYOUTS:
        return list(VGG_LAYOUTS[depth])
    raise DepthError(
        f"vgg depth must be 11, 13, 16 or 19 (Simonyan and Zisserman's A, B, D, E), or set "
        f"model.convs_per_stage (5 counts, depth = their sum + {VGG_HEAD}), got {depth}"
    )


def check_depth(family: str, depth: int, per_stage: Sequence[int] | None = None) -> None:
    """Raise DepthError (one-line message) unless `family` can be built at `depth`.

    `per_stage`: resnet_basic's blocks per stage, or vgg's convolutions per stage."""
    if family == "resnet_cifar":
        cifar_blocks_per_stage(depth)
    elif family == "resnet_basic":
        basic_blocks_per_stage(depth, per_stage)
    elif family == "mlp":
        mlp_blocks(depth)
    elif family == "vgg":
        vgg_convs_per_stage(depth, per_stage)
    else:
        raise DepthError(f"unknown model family {family!r}; choose from {', '.join(FAMILIES)}")


def block_names(family: str, depth: int, per_stage: Sequence[int] | None = None) -> list[str]:
    """The blocks of `family` at `depth` in forward order, named as the builders name them
    (and as `lesion.csv` and `branch_magnitude.csv` list them)."""
    check_depth(family, depth, per_stage)
    if family == "mlp":
        return [f"block{b}" for b in range(1, mlp_blocks(depth) + 1)]
    if family == "resnet_cifar":
        counts = [cifar_blocks_per_stage(depth)] * 3
    elif family == "resnet_basic":
        counts = basic_blocks_per_stage(depth, per_stage)
    else:
        counts = [c // 2 for c in vgg_convs_per_stage(depth, per_stage)]
    return [f"stage{s}_block{b}" for s, n in enumerate(counts, start=1) for b in range(1, n + 1)]


def skipped_blocks(names: list[str], skip_at: Sequence[str | int]) -> frozenset[str]:
    """The blocks `skip_at` names: block names, or negative indices from the last (-1)."""
    chosen = set()
    for entry in skip_at:
        text = str(entry).strip()
        if text.lstrip("-").isdigit() and text.startswith("-") and int(text) != 0:
            if -int(text) > len(names):
                raise DepthError(f"{text} counts back past the first of {len(names)} blocks")
            chosen.add(names[int(text)])
        elif text in names:
            chosen.add(text)
        else:
            raise DepthError(
                f"no block {text!r}; name a block ({', '.join(names)}) or count back from "
                f"the last (-1)"
            )
    return frozenset(chosen)


def blocks_with_skips(model: Any) -> tuple[list[str], frozenset[str]]:
    """(every block in forward order, the blocks with a skip) of a `model` config node:
    all of them when `residual` and no `skip_at`, none when plain, else those `skip_at` names.

    The builders, the config check and the run's name and tags all resolve skips here."""
    family = str(getattr(model.name, "value", model.name))
    per_stage = model.convs_per_stage if family == "vgg" else model.blocks_per_stage
    names = block_names(family, int(model.depth), per_stage)
    if model.skip_at is None:
        return names, frozenset(names) if model.residual else frozenset()
    return names, skipped_blocks(names, model.skip_at)
