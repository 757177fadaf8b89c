"""GradientRecorder on models nobody here wrote: subclassed, Sequential, keras.applications."""

from __future__ import annotations

import keras
import numpy as np
import pytest
import tensorflow as tf
from keras import layers
from twins import assert_training_unchanged

from resnet_exp.recording.gradients import GradientRecorder, kernel_gradient_norms

NUM_CLASSES = 10


class HeadFirst(keras.Model):
    """Creates its head before its body, builds lazily, and has a `training` argument."""

    def __init__(self):
        super().__init__(name="head_first")
        self.head = layers.Dense(NUM_CLASSES, activation="softmax", name="head")
        self.body = layers.Conv2D(4, 3, padding="same", name="body")
        self.norm = layers.BatchNormalization(name="norm")
        self.middle = layers.Conv2D(4, 3, padding="same", name="middle")
        self.pool = layers.GlobalAveragePooling2D()

    def call(self, x, training=False):
        x = keras.ops.relu(self.norm(self.body(x), training=training))
        return self.head(self.pool(self.middle(x)))


class NoTrainingArg(keras.Model):
    """`call(self, x)` with no `training` argument, which Keras's own `fit` accepts."""

    def __init__(self):
        super().__init__(name="no_training_arg")
        self.body = layers.Conv2D(4, 3, padding="same", name="body")
        self.norm = layers.BatchNormalization(name="norm")
        self.pool = layers.GlobalAveragePooling2D()
        self.head = layers.Dense(NUM_CLASSES, activation="softmax", name="head")

    def call(self, x):
        return self.head(self.pool(keras.ops.relu(self.norm(self.body(x)))))


@pytest.fixture(scope="module")
def images() -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.normal(size=(64, 8, 8, 1)).astype("float32"), rng.integers(0, NUM_CLASSES, 64)


def compiled(model: keras.Model) -> keras.Model:
    model.compile(optimizer=keras.optimizers.SGD(0.05), loss="sparse_categorical_crossentropy")
    return model


def reference_at_init(make_model, seed: int, x, y, *, training: bool | None):
    """Gradient norms from a plain tape on an identically seeded copy, by layer name."""
    keras.utils.set_random_seed(seed)
    model = make_model()
    kwargs = {} if training is None else {"training": training}
    model(x[:1], **kwargs)  # eager build; the probe batch is what we differentiate
    loss_fn = keras.losses.SparseCategoricalCrossentropy()
    kernels = [v for v in model.trainable_variables if v.path.endswith("/kernel")]
    with tf.GradientTape() as tape:
        loss = loss_fn(y, model(x, **kwargs))
    grads = tape.gradient(loss, kernels)
    return {
        v.path.split("/")[-2]: float(np.linalg.norm(g)) for v, g in zip(kernels, grads, strict=True)
    }


def test_lazily_built_subclassed_model_with_head_created_first(images):
    x, y = images
    keras.utils.set_random_seed(11)
    model = compiled(HeadFirst())
    assert not model.built
    recorder = GradientRecorder(x[:32], y[:32])
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[recorder], verbose=0)

    short = [name.split("/")[-1] for name in recorder.layer_names]
    assert short == ["body", "middle", "head"]  # forward order, not creation order
    assert recorder.first_layer.endswith("body") and recorder.last_layer.endswith("head")
    assert sorted(recorder.history) == [0, 1]
    reference = reference_at_init(HeadFirst, 11, x[:32], y[:32], training=True)
    assert recorder.history[0]["grad_first_norm"] == pytest.approx(reference["body"], rel=1e-4)
    assert recorder.history[0]["grad_last_norm"] == pytest.approx(reference["head"], rel=1e-4)


def test_call_without_training_argument_is_probed_as_keras_fits_it(images):
    x, y = images
    keras.utils.set_random_seed(12)
    model = compiled(NoTrainingArg())
    recorder = GradientRecorder(x[:32], y[:32])
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[recorder], verbose=0)

    assert [n.split("/")[-1] for n in recorder.layer_names] == ["body", "head"]
    reference = reference_at_init(NoTrainingArg, 12, x[:32], y[:32], training=None)
    assert recorder.history[0]["grad_first_norm"] == pytest.approx(reference["body"], rel=1e-4)


def test_building_a_lazy_model_early_changes_nothing_in_training(images):
    x, y = images
    assert_training_unchanged(
        lambda: compiled(HeadFirst()),
        lambda: GradientRecorder(x[:32], y[:32]),
        x,
        y,
        seed=13,
        batch_size=16,
    )


def test_unbuilt_sequential_model(images):
    x, y = images
    model = compiled(
        keras.Sequential(
            [
                layers.Flatten(),
                layers.Dense(16, activation="relu", name="hidden"),
                layers.Dense(NUM_CLASSES, activation="softmax", name="out"),
            ],
            name="seq",
        )
    )
    recorder = GradientRecorder(x[:32], y[:32])
    model.fit(x, y, batch_size=32, epochs=1, callbacks=[recorder], verbose=0)
    assert recorder.layer_names == ["seq/hidden", "seq/out"]  # variable paths, as logged
    assert (recorder.first_layer, recorder.last_layer) == ("seq/hidden", "seq/out")


def test_keras_applications_model():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(16, 32, 32, 3)).astype("float32")
    y = rng.integers(0, NUM_CLASSES, 16)
    model = keras.applications.MobileNet(
        input_shape=(32, 32, 3), alpha=0.25, weights=None, classes=NUM_CLASSES
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    names, grads, _, _ = kernel_gradient_norms(model, x[:8], y[:8])
    assert (names[0], names[-1]) == ("conv1", "conv_preds")
    assert np.isfinite(grads).all() and (grads > 0).all()


def test_explicit_first_and_last_layers_and_a_clear_error_for_a_wrong_name(images):
    x, y = images
    model = compiled(HeadFirst())
    recorder = GradientRecorder(x[:32], y[:32], first_layer="middle", last_layer="head")
    recorder.set_model(model)
    metrics = recorder.measure(0)
    grads = {row["layer_name"].split("/")[-1]: row["grad_norm"] for row in recorder.profile}
    assert metrics["grad_first_norm"] == grads["middle"]
    assert metrics["grad_first_last_ratio"] == grads["middle"] / grads["head"]

    wrong = GradientRecorder(x[:32], y[:32], first_layer="stem")
    wrong.set_model(model)
    with pytest.raises(ValueError, match=r"first_layer='stem' matches no kernel; choose from"):
        wrong.measure(0)
