"""Datasets as arrays, then as `tf.data` pipelines.

Every dataset comes back as a `Dataset` of NumPy arrays split into train and
validation by a stratified split fixed by the seed, so the same seed gives the
same split for every depth and for plain and residual twins alike.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    name: str

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])


def digits_arrays() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's bundled 8x8 handwritten digits: shipped with the package, no download."""
    bunch = load_digits()
    x = (bunch.images.astype("float32") / 16.0)[..., np.newaxis]
    return x, bunch.target.astype("int64")


def synthetic_arrays(
    input_shape: tuple[int, ...], num_classes: int, num_samples: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """Gaussian clusters around one random centre per class: learnable, any shape, instant."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(num_classes, *input_shape)).astype("float32")
    y = np.arange(num_samples) % num_classes
    rng.shuffle(y)
    x = centres[y] + rng.normal(scale=1.0, size=(num_samples, *input_shape)).astype("float32")
    return x.astype("float32"), y.astype("int64")


def load_dataset(
    name: str,
    *,
    seed: int,
    val_fraction: float = 0.2,
    standardize: bool = True,
    input_shape: tuple[int, ...] = (8, 8, 1),
    num_classes: int = 10,
    num_samples: int = 512,
) -> Dataset:
    """Load `name` and split it; standardisation uses training statistics only."""
    if name == "digits":
        x, y = digits_arrays()
        num_classes = 10
    elif name == "synthetic":
        x, y = synthetic_arrays(tuple(input_shape), num_classes, num_samples, seed)
    else:
        raise ValueError(f"unknown dataset {name!r}; choose from digits, synthetic")
    x_train, x_val, y_train, y_val = train_test_split(
        x, y, test_size=val_fraction, random_state=seed, stratify=y
    )
    if standardize:
        mean, std = x_train.mean(), x_train.std() + 1e-7
        x_train, x_val = (x_train - mean) / std, (x_val - mean) / std
    return Dataset(
        x_train.astype("float32"),
        y_train,
        x_val.astype("float32"),
        y_val,
        num_classes=num_classes,
        name=name,
    )


def make_pipelines(data: Dataset, *, batch_size: int, seed: int, shuffle_buffer: int = 0):
    """Train (shuffled each epoch, seeded) and validation `tf.data` pipelines."""
    import tensorflow as tf

    buffer = shuffle_buffer or len(data.x_train)
    train = (
        tf.data.Dataset.from_tensor_slices((data.x_train, data.y_train))
        .shuffle(buffer, seed=seed, reshuffle_each_iteration=True)
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    val = (
        tf.data.Dataset.from_tensor_slices((data.x_val, data.y_val))
        .batch(batch_size)
        .prefetch(tf.data.AUTOTUNE)
    )
    return train, val


def probe_batch(data: Dataset, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed, class-balanced-by-sampling subset of the training set for gradient probes."""
    rng = np.random.default_rng(seed + 7919)
    size = min(size, len(data.x_train))
    index = np.sort(rng.choice(len(data.x_train), size=size, replace=False))
    return data.x_train[index], data.y_train[index]
