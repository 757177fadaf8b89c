"""What every measured number was measured on, checked against arrays computed by hand.

* Augmentation: every augmented training image is one of the paper's 9x9 crop
  offsets x 2 flips of its 4-padded source (NumPy), and all the extremes occur;
  validation and probe inputs are the hand-normalised sources.
* Splits: the logged test metrics and the "test" dataset input come from the test
  file, the "validation" and "training" inputs from the training file's two splits.
* Lesions: the intact net scores 1.0 only on inputs normalised with the training
  split's statistics (labels are its own predictions on exactly those).
* Training length: `trainer.steps` / `trainer.epochs` give the hand-computed number
  of optimiser updates and of logged epochs, with a partial last batch.
"""

from __future__ import annotations

import io
import json
import math
import pickle
from collections import Counter
from pathlib import Path

import keras
import numpy as np
import pandas as pd
import pytest
from real_formats import write_cifar10

from resnet_exp.data.pipelines import make_pipelines
from resnet_exp.data.splits import Dataset, probe_batch
from resnet_exp.run.job import run_job
from resnet_exp.tracking.run_log import RunLog
from resnet_exp.training import fit as training

PAD = 4


def _hand_stats(x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images, in float64."""
    flat = x.reshape(-1, x.shape[-1]).astype(np.float64)
    return flat.mean(axis=0).astype("float32"), flat.std(axis=0).astype("float32")


def _hand_normalise(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    return (x.astype("float32") - mean) / std


def _spy(monkeypatch, name: str) -> list:
    """Wrap `resnet_exp.training.fit.<name>` so every value it returns is kept, then returned."""
    kept: list = []
    real = getattr(training, name)

    def spy(*args, **kwargs):
        value = real(*args, **kwargs)
        kept.append(value)
        return value

    monkeypatch.setattr(training, name, spy)
    return kept


def _steps(client, run_id: str, key: str) -> list[int]:
    return sorted(m.step for m in client.get_metric_history(run_id, key))


# ---------------------------------------------------------------- augmentation


def _distinct_images(n: int, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """uint8 images whose pixels are distinct and non-zero within each image (zero is padding)."""
    rng = np.random.default_rng(seed)
    size = int(np.prod(shape))
    return np.stack(
        [rng.permutation(np.arange(1, 256))[:size].reshape(shape) for _ in range(n)]
    ).astype(np.uint8)


def _augmentations(image: np.ndarray) -> dict[bytes, tuple[int, int, bool]]:
    """Every crop of the 4-padded image at offsets -4..4 (rows, columns), flipped or not."""
    h, w, _ = image.shape
    padded = np.pad(image, ((PAD, PAD), (PAD, PAD), (0, 0)))  # zeros
    out = {}
    for dy in range(2 * PAD + 1):
        for dx in range(2 * PAD + 1):
            crop = padded[dy : dy + h, dx : dx + w]
            for flip in (False, True):
                view = crop[:, ::-1] if flip else crop
                out[np.ascontiguousarray(view).tobytes()] = (dy - PAD, dx - PAD, flip)
    assert len(out) == (2 * PAD + 1) ** 2 * 2  # all distinct: any image identifies its state
    return out


def _as_source(x: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Undo the pipeline's normalisation by hand: back to integer pixel values."""
    raw = x.astype(np.float64) * std + mean
    assert np.abs(raw - np.rint(raw)).max() < 1e-3, "not (integer pixel - mean) / std"
    assert raw.min() > -0.5 and raw.max() < 255.5
    return np.rint(raw).astype(np.uint8)


def _image_dataset() -> Dataset:
    """12 training images (label = index), 4 validation ones; per-channel training stats."""
    shape = (8, 8, 3)
    x_train = _distinct_images(12, shape, seed=0)
    x_val = _distinct_images(4, shape, seed=1)
    mean, std = _hand_stats(x_train)
    return Dataset(
        x_train,
        np.arange(12, dtype=np.int64),
        x_val,
        np.arange(12, 16, dtype=np.int64),
        num_classes=16,
        name="hand",
        mean=mean,
        std=std,
    )


def test_augmentation_is_pad_4_random_crop_and_left_right_flip_only():
    data = _image_dataset()
    mean, std = data.mean.astype(np.float64), data.std.astype(np.float64)
    states = {label: _augmentations(image) for label, image in enumerate(data.x_train)}
    train, val = make_pipelines(data, batch_size=5, seed=3, augment=True)  # 12 = 5 + 5 + 2
    seen: list[tuple[int, int, bool]] = []
    per_image: dict[int, set] = {label: set() for label in states}
    for _ in range(20):  # the pipeline draws new crops and flips each epoch
        labels = []
        for x, y in train:
            x, y = np.asarray(x), np.asarray(y)
            assert x.dtype == np.float32 and x.shape[1:] == data.input_shape
            for image, label in zip(x, y, strict=True):
                pixels = _as_source(image, mean, std)
                state = states[int(label)].get(pixels.tobytes())
                assert state is not None, f"image {label} is no pad-4 crop/flip of its source"
                np.testing.assert_allclose(
                    image, _hand_normalise(pixels, data.mean, data.std), rtol=0, atol=1e-5
                )
                seen.append(state)
                per_image[int(label)].add(state)
                labels.append(int(label))
        assert sorted(labels) == data.y_train.tolist()  # each source image once an epoch
    rows, cols, flips = (Counter(s[i] for s in seen) for i in range(3))
    assert {-PAD, PAD} <= set(rows), f"row offsets seen: {sorted(rows)}"
    assert {-PAD, PAD} <= set(cols), f"column offsets seen: {sorted(cols)}"
    assert set(flips) == {False, True}
    assert all(len(s) > 1 for s in per_image.values())  # re-drawn, not fixed per image

    # the validation pipeline, even with augment=True: the sources, in order
    xs, ys = zip(*((np.asarray(x), np.asarray(y)) for x, y in val), strict=True)
    np.testing.assert_allclose(
        np.concatenate(xs), _hand_normalise(data.x_val, data.mean, data.std), rtol=0, atol=1e-5
    )
    assert np.concatenate(ys).tolist() == data.y_val.tolist()

    # without augmentation every training image is its source as it is
    plain, _ = make_pipelines(data, batch_size=5, seed=3, augment=False)
    for x, y in plain:
        for image, label in zip(np.asarray(x), np.asarray(y), strict=True):
            np.testing.assert_allclose(
                image,
                _hand_normalise(data.x_train[int(label)], data.mean, data.std),
                rtol=0,
                atol=1e-5,
            )

    # the gradient probe's batch: training images as they are, normalised
    x_probe, y_probe = probe_batch(data, 6, seed=3)
    assert len(set(y_probe.tolist())) == 6
    np.testing.assert_allclose(
        x_probe, _hand_normalise(data.x_train[y_probe], data.mean, data.std), rtol=0, atol=1e-5
    )


# ---------------------------------------------------------------- splits behind logged numbers


def _read_cifar10(folder: Path, file: str) -> tuple[np.ndarray, np.ndarray]:
    """One CIFAR-10 python batch read by hand: (N, 3072) R, G, B planes -> (N, 32, 32, 3)."""
    batch = pickle.loads((folder / file).read_bytes(), encoding="bytes")
    x = np.asarray(batch[b"data"], dtype=np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, np.asarray(batch[b"labels"], dtype=np.int64)


def _rows(x: np.ndarray) -> Counter:
    return Counter(row.tobytes() for row in x)


def _cross_entropy(probs: np.ndarray, y: np.ndarray) -> float:
    p = np.clip(probs[np.arange(len(y)), y].astype(np.float64), 1e-7, 1 - 1e-7)
    return float(-np.log(p).mean())


def test_test_metrics_and_dataset_inputs_come_from_their_own_split(
    make_cfg, client, tmp_path, monkeypatch
):
    import mlflow.data

    # 5 x 40 training images (val_fraction 0.1: 20 validation, 180 training), 30 test images
    folder = write_cifar10(tmp_path / "c10", per_batch=40, test=30)
    parts = [_read_cifar10(folder, f"data_batch_{i}") for i in range(1, 6)]
    x_files = np.concatenate([x for x, _ in parts])
    x_test, y_test = _read_cifar10(folder, "test_batch")
    n_val = math.ceil(0.1 * len(x_files))
    n_train = len(x_files) - n_val
    assert (n_train, n_val, len(x_test)) == (180, 20, 30)

    models = _spy(monkeypatch, "model_from_config")
    loaded = _spy(monkeypatch, "load_data")
    overrides = ["data=cifar10", f"data.path={folder}", "data.val_fraction=0.1"]
    overrides += ["model=mlp", "model.depth=4", "model.width=16"]
    overrides += ["trainer.epochs=2", "trainer.batch_size=32"]
    outcome = run_job(make_cfg(*overrides), overrides=overrides)
    assert outcome.status == "FINISHED"
    (model,) = models
    (data,) = loaded

    # the run's splits are what the files hold: training file = training + validation
    assert (len(data.x_train), len(data.x_val)) == (n_train, n_val)
    assert _rows(data.x_train) + _rows(data.x_val) == _rows(x_files)
    assert not set(_rows(data.x_val)) & set(_rows(x_test))

    # the dataset inputs: each context holds its own split
    inputs = client.get_run(outcome.run_id).inputs.dataset_inputs
    by_context = {}
    for entry in inputs:
        (context,) = [t.value for t in entry.tags if t.key == "mlflow.data.context"]
        by_context[context] = entry.dataset
    assert set(by_context) == {"training", "validation", "test"}
    expected = {
        "test": (x_test, y_test),  # straight from the test file
        "validation": (data.x_val, data.y_val),
        "training": (data.x_train, data.y_train),
    }
    rows = {"training": n_train, "validation": n_val, "test": len(x_test)}
    for context, (x, y) in expected.items():
        logged = by_context[context]
        assert logged.digest == mlflow.data.from_numpy(x, targets=y).digest, context
        profile = json.loads(logged.profile)
        assert profile["features_shape"][0] == profile["targets_shape"][0] == rows[context]
    assert len({d.digest for d in by_context.values()}) == 3

    # test_loss / test_accuracy: the trained net on the test file's images, normalised by hand
    # with the training split's per-channel statistics
    mean, std = _hand_stats(data.x_train)

    def scores(x: np.ndarray, y: np.ndarray) -> tuple[float, float]:
        probs = np.asarray(model(_hand_normalise(x, mean, std), training=False))
        np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
        return _cross_entropy(probs, y), float(np.mean(probs.argmax(axis=1) == y))

    test_loss, test_accuracy = scores(x_test, y_test)
    metrics = client.get_run(outcome.run_id).data.metrics
    assert metrics["test_loss"] == pytest.approx(test_loss, rel=1e-4)
    assert metrics["test_accuracy"] == pytest.approx(test_accuracy, abs=1e-6)
    assert _steps(client, outcome.run_id, "test_loss") == [2]
    # ... and could not match had they been measured on another split
    for x, y in ((data.x_val, data.y_val), (data.x_train, data.y_train)):
        other_loss, _ = scores(x, y)
        assert other_loss != pytest.approx(test_loss, rel=1e-3)


# ---------------------------------------------------------------- lesion inputs


def _lesion_csv(client, run_id: str, name: str) -> pd.DataFrame:
    import mlflow

    uri = f"{client.get_run(run_id).info.artifact_uri}/{name}"
    return pd.read_csv(io.StringIO(mlflow.artifacts.load_text(uri)))


def test_lesions_see_validation_images_normalised_with_training_statistics(make_cfg, client):
    """A net whose labels are its own predictions on the correctly normalised inputs.

    The validation images are far brighter than the training images, so the
    validation split's, all the data's, or no statistics give other inputs.
    """
    cfg = make_cfg(
        "model=resnet_cifar",
        "model.depth=8",
        "lesion.enabled=true",
        "lesion.k=[1]",
        "lesion.draws=1",
        "lesion.max_examples=0",
    )
    shape, classes = (8, 8, 3), 10
    rng = np.random.default_rng(3)
    x_train = rng.integers(0, 110, size=(64, *shape), dtype=np.uint8)
    levels = rng.integers(130, 246, size=(64, 1, 1, 3))
    x_val = np.clip(levels + rng.integers(-10, 11, size=(64, *shape)), 0, 255).astype(np.uint8)
    mean, std = _hand_stats(x_train)
    right = _hand_normalise(x_val, mean, std)

    keras.utils.set_random_seed(0)
    model = training.model_from_config(cfg, shape, classes)
    # spread the random net's predictions over the classes on exactly these inputs: the
    # classifier standardises each logit over the validation images
    head = model.get_layer("classifier")
    features = np.asarray(keras.Model(model.input, head.input)(right, training=False))
    kernel, bias = head.get_weights()
    logits = features @ kernel + bias
    centre, spread = logits.mean(axis=0), logits.std(axis=0)
    head.set_weights([kernel / spread, (bias - centre) / spread])

    def predictions(x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x.astype("float32"), training=False))

    probs = predictions(right)
    top2 = np.sort(probs, axis=1)[:, -2:]
    keep = top2[:, 1] - top2[:, 0] > 1e-4  # no near-ties that round-off could flip
    x_val, right, y_val = x_val[keep], right[keep], probs[keep].argmax(axis=1)
    assert len(y_val) >= 48 and len(set(y_val.tolist())) >= 4  # the test can fail
    all_mean, all_std = _hand_stats(np.concatenate([x_train, x_val]))
    val_mean, val_std = _hand_stats(x_val)
    for wrong in (
        x_val.astype("float32"),
        x_val / np.float32(255),
        _hand_normalise(x_val, val_mean, val_std),
        _hand_normalise(x_val, all_mean, all_std),
        (right - mean) / std,
    ):
        assert np.mean(predictions(wrong).argmax(axis=1) == y_val) < 0.9

    def dataset(x_val, y_val, x_test, y_test) -> Dataset:
        y_train = np.arange(len(x_train)) % classes
        return Dataset(
            x_train, y_train, x_val, y_val, classes, "hand", x_test, y_test, mean=mean, std=std
        )

    experiment = client.create_experiment("lesions")
    cases = {
        # the validation split; the test images (same pixels, wrong labels) are not used
        "validation": dataset(x_val, y_val, x_val, (y_val + 1) % classes),
        # no validation split: the test set instead
        "test": dataset(x_val[:0], y_val[:0], x_val, y_val),
    }
    for case, data in cases.items():
        run_id = client.create_run(experiment).info.run_id
        training._lesions(cfg, model, data, RunLog(client, run_id), step=1)
        metrics = client.get_run(run_id).data.metrics
        assert metrics["lesion_intact_accuracy"] == 1.0, case
        single = _lesion_csv(client, run_id, "lesion.csv")
        assert len(single) == 3
        np.testing.assert_allclose(single["accuracy"] + single["drop"], 1.0, atol=1e-9)
        multi = _lesion_csv(client, run_id, "lesion_k.csv")
        np.testing.assert_allclose(multi["accuracy"] + multi["drop"], 1.0, atol=1e-9)


# ---------------------------------------------------------------- training length


NUM_SAMPLES, VAL_FRACTION, BATCH = 90, 0.2, 32
N_TRAIN = NUM_SAMPLES - math.ceil(VAL_FRACTION * NUM_SAMPLES)  # 72: 32 + 32 + 8
STEPS_PER_EPOCH = math.ceil(N_TRAIN / BATCH)  # 3


@pytest.mark.parametrize(
    ("length", "updates"),
    [
        ("trainer.steps=2", 2),  # less than one epoch
        ("trainer.steps=6", 2 * STEPS_PER_EPOCH),  # exactly two epochs
        ("trainer.steps=7", 2 * STEPS_PER_EPOCH + 1),  # two epochs and one step
        ("trainer.epochs=2", 2 * STEPS_PER_EPOCH),
    ],
)
def test_a_run_makes_exactly_the_requested_optimiser_updates(
    length, updates, make_cfg, client, monkeypatch
):
    assert N_TRAIN % BATCH  # the last batch of an epoch is partial
    models = _spy(monkeypatch, "model_from_config")
    overrides = [
        "data=synthetic",
        f"data.num_samples={NUM_SAMPLES}",
        f"data.val_fraction={VAL_FRACTION}",
        "model=mlp",
        "model.depth=4",
        "model.width=8",
        f"trainer.batch_size={BATCH}",
        length,
    ]
    if length.startswith("trainer.steps"):
        overrides.append("trainer.epochs=5")  # trainer.steps replaces it
    outcome = run_job(make_cfg(*overrides), overrides=overrides)
    assert outcome.status == "FINISHED"
    (model,) = models
    assert int(model.optimizer.iterations.numpy()) == updates
    (training_input,) = [
        d.dataset
        for d in client.get_run(outcome.run_id).inputs.dataset_inputs
        if any(t.value == "training" for t in d.tags)
    ]
    assert json.loads(training_input.profile)["features_shape"][0] == N_TRAIN
    epochs = math.ceil(updates / STEPS_PER_EPOCH)
    assert _steps(client, outcome.run_id, "train_loss") == list(range(1, epochs + 1))
