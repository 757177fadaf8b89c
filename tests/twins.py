"""Seeded twin fits: a callback that only observes must leave training bit for bit the same."""

from __future__ import annotations

from collections.abc import Callable

import keras
import numpy as np
import tensorflow as tf


def assert_training_unchanged(
    make_model: Callable[[], keras.Model],
    make_callback: Callable[[], keras.callbacks.Callback],
    x: np.ndarray,
    y: np.ndarray,
    *,
    seed: int,
    batch_size: int,
) -> None:
    """Fit two seeded twins, without and with the callback; compare losses and variables."""
    tf.config.experimental.enable_op_determinism()
    results = []
    for callbacks in ([], [make_callback()]):
        keras.utils.set_random_seed(seed)
        model = make_model()
        history = model.fit(x, y, batch_size=batch_size, epochs=2, callbacks=callbacks, verbose=0)
        results.append((history.history["loss"], [v.numpy() for v in model.variables]))
    (losses_plain, weights_plain), (losses_observed, weights_observed) = results
    assert losses_observed == losses_plain
    assert len(weights_observed) == len(weights_plain)
    for plain, observed in zip(weights_plain, weights_observed, strict=True):
        np.testing.assert_array_equal(observed, plain)


def kernel_variables(model: keras.Model) -> list[keras.Variable]:
    """Conv and dense kernels (no biases, no BN) in forward order.

    `model.layers` of a functional model is topological, so `stem_conv`/`stem_dense`
    comes first and `classifier` last. The gradient logger reads these by `.path`
    (e.g. "stage1_block1_conv1/kernel").
    """
    return [
        layer.kernel
        for layer in model.layers
        if isinstance(layer, keras.layers.Conv2D | keras.layers.Dense)
    ]
