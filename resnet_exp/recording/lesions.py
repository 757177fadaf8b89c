"""Block lesions after training (Veit, Wilber & Belongie 2016, "Residual Networks Behave
Like Ensembles of Relatively Shallow Networks", https://arxiv.org/abs/1605.06431).

Does a residual net "fall back" to a shallower one? Veit et al. delete single
blocks of a trained net at test time: a ResNet barely notices (except at the
downsampling blocks), a plain net drops to chance. We measure the same thing
per run.

Deleting block B means building the same net again with B replaced by its
shortcut path (`models.blocks.deleted_block`: the identity for same-shape
blocks, the option A/B shortcut where the shape changes; plain blocks alike),
then copying every layer's weights from the trained model by layer name. The
trained model is only read, never modified, and nothing is retrained:
batch-norm layers keep their trained moving statistics, and accuracy is
measured in inference mode.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import keras
import numpy as np
import pandas as pd

from resnet_exp import contract
from resnet_exp.models.anatomy import BlockSpec, block_specs

# Builds the trained net's architecture with the named blocks deleted.
Builder = Callable[[frozenset[str]], keras.Model]


def lesioned_model(build: Builder, trained: keras.Model, skip: Iterable[str]) -> keras.Model:
    """`build(skip)` with every layer's weights (BN statistics included) copied from `trained`.

    Raises ValueError for a block name `trained` does not have, or a layer with
    weights that `trained` lacks (the builder is not the trained net's).
    """
    skip = frozenset(skip)
    unknown = skip - {b.name for b in block_specs(trained)}
    if unknown:
        raise ValueError(f"no block(s) {sorted(unknown)} in model {trained.name!r}")
    model = build(skip)
    trained_layers = {layer.name: layer for layer in trained.layers}
    for layer in model.layers:
        if not layer.weights:
            continue
        source = trained_layers.get(layer.name)
        if source is None:
            raise ValueError(f"layer {layer.name!r} of the lesioned net is not in {trained.name!r}")
        layer.set_weights(source.get_weights())  # get_weights copies: `trained` is untouched
    return model


def predict(model: keras.Model, x: np.ndarray, batch_size: int = 512) -> np.ndarray:
    """Inference-mode outputs, eagerly: one-off models are not worth tracing a function for."""
    return np.concatenate(
        [
            keras.ops.convert_to_numpy(model(x[i : i + batch_size], training=False))
            for i in range(0, len(x), batch_size)
        ]
    )


def accuracy(model: keras.Model, x: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean(np.argmax(predict(model, x), axis=-1) == np.asarray(y).ravel()))


def k_values_for(requested: Sequence[int], available: int) -> list[int]:
    """The requested k that can be drawn from `available` blocks, sorted and unique."""
    return sorted({int(k) for k in requested if 0 < int(k) <= available})


@dataclass
class LesionResult:
    intact_accuracy: float
    single: pd.DataFrame  # contract.LESION_COLUMNS: one row per block (lesion.csv)
    multi: pd.DataFrame  # contract.LESION_K_COLUMNS: one row per (k, draw) (lesion_k.csv)
    seconds: float

    def metrics(self) -> dict[str, float]:
        """Drops are intact accuracy minus lesioned accuracy (fractions, not points).

        Mean and max go over the non-downsampling blocks, whose deletion Veit et al.
        find harmless in ResNets; the downsampling blocks get their own mean.
        """
        same = self.single[~self.single["downsampling"]]
        down = self.single[self.single["downsampling"]]
        out = {
            contract.LESION_INTACT_ACCURACY: self.intact_accuracy,
            contract.LESION_TIME: self.seconds,
        }
        if len(same):
            out[contract.LESION_MEAN_DROP] = float(same["drop"].mean())
            out[contract.LESION_MAX_DROP] = float(same["drop"].max())
        if len(down):
            out[contract.LESION_DOWNSAMPLING_MEAN_DROP] = float(down["drop"].mean())
        return out


def lesion_study(
    build: Builder,
    trained: keras.Model,
    x: np.ndarray,
    y: np.ndarray,
    *,
    k_values: Sequence[int] = (1, 2, 4, 8),
    draws: int = 5,
    seed: int = 0,
) -> LesionResult:
    """Delete each block alone, then k random non-downsampling blocks at once (seeded draws).

    Random draws exclude the downsampling blocks, so that error vs k measures
    the "ensemble" blocks (Veit et al. 2016, Fig. 4) rather than the few blocks
    every net needs; k larger than the number of such blocks is skipped.
    """
    started = time.perf_counter()
    specs = block_specs(trained)
    intact = accuracy(trained, x, y)
    cache: dict[frozenset[str], float] = {}

    def deleted(names: Iterable[str]) -> float:
        key = frozenset(names)
        if key not in cache:
            cache[key] = accuracy(lesioned_model(build, trained, key), x, y)
        return cache[key]

    single = pd.DataFrame(
        [_single_row(spec, deleted([spec.name]), intact) for spec in specs],
        columns=contract.LESION_COLUMNS,
    )
    eligible = [s.name for s in specs if not s.downsampling]
    rng = np.random.default_rng(seed)
    rows = []
    for k in k_values_for(k_values, len(eligible)):
        for draw in range(draws):
            chosen = sorted(rng.choice(eligible, size=k, replace=False).tolist())
            acc = deleted(chosen)
            rows.append([k, draw, ";".join(chosen), acc, intact - acc])
    return LesionResult(
        intact_accuracy=intact,
        single=single,
        multi=pd.DataFrame(rows, columns=contract.LESION_K_COLUMNS),
        seconds=time.perf_counter() - started,
    )


def _single_row(spec: BlockSpec, acc: float, intact: float) -> list:
    return [spec.index, spec.name, spec.stage, spec.downsampling, acc, intact - acc]


def lesion_examples(
    x: np.ndarray, y: np.ndarray, max_examples: int
) -> tuple[np.ndarray, np.ndarray]:
    """The first `max_examples` of a (shuffled, stratified) validation split; 0 keeps all."""
    if max_examples and max_examples < len(x):
        return x[:max_examples], y[:max_examples]
    return x, y
