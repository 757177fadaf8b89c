"""Find a built model's blocks, and their inputs and branches, by their positional names.

Every family names a block's layers `{block}_conv1`/`{block}_dense1`, ...,
`{block}_bn2`, `{block}_add` (residual nets only) and `{block}_out`, and the
scalars of SkipInit (`{block}_skipinit`) and Fixup (`{block}_bias1a`, ...,
`{block}_bias2b`) where a residual branch has them, with
`{block}` = "stage2_block3" (conv families) or "block3" (mlp). Lesions and the
branch-magnitude probe read blocks through these names, never through a
parallel naming scheme or layer indices.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import keras

_BLOCK_OUT = re.compile(r"^(?:stage(\d+)_)?(block\d+)_out$")
_FIRST = ("_bias1a", "_conv1", "_dense1")  # Fixup's first bias takes x itself
# F(x) as added: SkipInit's gate, Fixup's last bias, batch norm, else the 2nd layer
_BRANCH_END = ("_skipinit", "_bias2b", "_bn2", "_conv2", "_dense2")


@dataclass(frozen=True)
class BlockSpec:
    """One block: `index` counts blocks from 1 in forward order; `stage` is 1 for the mlp."""

    index: int
    name: str
    stage: int
    downsampling: bool  # its output shape differs from its input's: a non-identity shortcut
    residual: bool


def _layer(model: keras.Model, name: str, suffixes: tuple[str, ...]) -> keras.layers.Layer:
    for suffix in suffixes:
        try:
            return model.get_layer(f"{name}{suffix}")
        except ValueError:
            continue
    raise ValueError(f"model {model.name!r} has no layer {name}{{{','.join(suffixes)}}}")


def block_input(model: keras.Model, name: str) -> Any:
    """The symbolic tensor block `name` receives (the input of its first layer: Fixup's
    `_bias1a`, else its first weight layer)."""
    return _layer(model, name, _FIRST).input


def branch_output(model: keras.Model, name: str) -> Any:
    """F(x): the residual branch's output as it is added (after SkipInit's gate or Fixup's
    scale and bias); for a plain block, its output."""
    if _has(model, f"{name}_add"):
        return _layer(model, name, _BRANCH_END).output
    return model.get_layer(f"{name}_out").output


def _has(model: keras.Model, layer_name: str) -> bool:
    return any(layer.name == layer_name for layer in model.layers)


def block_specs(model: keras.Model) -> list[BlockSpec]:
    """The blocks of an intact model built by `resnet_exp.models`, in forward order."""
    specs = []
    for layer in model.layers:
        match = _BLOCK_OUT.match(layer.name)
        if not match:
            continue
        name = layer.name[: -len("_out")]
        x_in = block_input(model, name)
        specs.append(
            BlockSpec(
                index=len(specs) + 1,
                name=name,
                stage=int(match.group(1) or 1),
                downsampling=tuple(x_in.shape[1:]) != tuple(layer.output.shape[1:]),
                residual=_has(model, f"{name}_add"),
            )
        )
    if not specs:
        raise ValueError(f"model {model.name!r} has no blocks named like 'stage1_block1_out'")
    return specs
