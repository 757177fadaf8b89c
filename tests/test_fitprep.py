"""build_for_fit: the first train step traces once, and training is unchanged."""

from __future__ import annotations

import keras
import numpy as np
import tensorflow as tf
from test_gradients import conv_net

from resnet_exp.training.prepare import build_for_fit


def _fit(prebuild: bool):
    rng = np.random.default_rng(0)
    x = rng.normal(size=(64, 8, 8, 1)).astype("float32")
    y = rng.integers(0, 10, 64)
    data = tf.data.Dataset.from_tensor_slices((x, y)).batch(16)
    keras.utils.set_random_seed(31)
    model = conv_net(dropout=0.3)
    model.compile(
        optimizer=keras.optimizers.SGD(0.1, momentum=0.9),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    if prebuild:
        build_for_fit(model, data.element_spec)
        assert model.optimizer.built
    traces = []
    step = model.train_step
    model.train_step = lambda batch: traces.append(1) or step(batch)
    history = model.fit(data, epochs=2, verbose=0)
    return len(traces), history.history, [v.numpy() for v in model.variables]


def test_one_trace_and_identical_training():
    tf.config.experimental.enable_op_determinism()
    traces_plain, history_plain, weights_plain = _fit(prebuild=False)
    traces_built, history_built, weights_built = _fit(prebuild=True)
    assert traces_plain == 2  # Keras's own fit: variables created in the trace, traced twice
    assert traces_built == 1
    assert history_built == history_plain
    for plain, built in zip(weights_plain, weights_built, strict=True):
        np.testing.assert_array_equal(built, plain)
