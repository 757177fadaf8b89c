"""Datasets as NumPy arrays, split into training and validation.

Every dataset comes back as a `Dataset` of NumPy arrays split into train and
validation by a stratified split fixed by the seed, so the same seed gives the
same split for every depth and for plain and residual twins alike.

The small datasets (digits, synthetic) are standardised floats already. The
image datasets (`resnet_exp.data.files`) stay uint8 in memory (CIFAR-10 as
float32 would be 600 MB a copy) with a test split; they are normalised per
channel in the pipeline (`resnet_exp.data.pipelines`), with statistics of the
training split only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from sklearn.datasets import load_digits
from sklearn.model_selection import train_test_split

from resnet_exp.config.schema import DataConfig
from resnet_exp.data import files as datasets


@dataclass(frozen=True)
class Dataset:
    x_train: np.ndarray
    y_train: np.ndarray
    x_val: np.ndarray
    y_val: np.ndarray
    num_classes: int
    name: str
    x_test: np.ndarray | None = None
    y_test: np.ndarray | None = None
    mean: np.ndarray | None = None  # per channel, of the training split; None: x is ready
    std: np.ndarray | None = None

    @property
    def input_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    def normalise(self, x: np.ndarray) -> np.ndarray:
        """`x` as the network sees it (float32, normalised), for arrays outside the pipeline."""
        if self.mean is None:
            return x
        return ((x.astype("float32") - self.mean) / self.std).astype("float32")


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
    y = synthetic_labels(num_samples, num_classes)
    rng.shuffle(y)
    x = centres[y] + rng.normal(scale=1.0, size=(num_samples, *input_shape)).astype("float32")
    return x.astype("float32"), y.astype("int64")


def synthetic_labels(num_samples: int, num_classes: int) -> np.ndarray:
    """The synthetic set's labels before shuffling: each class in turn, so the data check
    knows the class sizes without generating the images."""
    return np.arange(num_samples) % num_classes


def split_sizes(n: int, val_fraction: float) -> tuple[int, int]:
    """(training, validation) sizes `split` gives `n` examples: scikit-learn's rule for a
    fractional test size (validation rounded up), decided here so the data check uses it."""
    n_val = math.ceil(val_fraction * n) if val_fraction else 0
    return n - n_val, n_val


def split_problem(class_sizes: np.ndarray, val_fraction: float) -> str | None:
    """Why `split` cannot split labels of these class sizes (classes present only), or None:
    scikit-learn's stratified split refuses these with a traceback, mid-run."""
    n_train, n_val = split_sizes(int(class_sizes.sum()), val_fraction)
    if n_train == 0:
        return "no images left for training"
    if val_fraction == 0:
        return None
    classes = len(class_sizes)
    if class_sizes.min() < 2:
        return "a class with one image; a stratified validation split needs two per class"
    for part, size in (("training", n_train), ("validation", n_val)):
        if size < classes:
            return (
                f"a {part} split of {size} images for {classes} classes; "
                "a stratified split needs one image per class in each"
            )
    return None


def split(
    x: np.ndarray, y: np.ndarray, val_fraction: float, seed: int
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Stratified train/validation split fixed by the seed; no validation at fraction 0."""
    if val_fraction == 0:
        return x, x[:0], y, y[:0]
    _, n_val = split_sizes(len(y), val_fraction)
    return train_test_split(x, y, test_size=n_val, random_state=seed, stratify=y)


def channel_stats(x: np.ndarray, chunk: int = 4096) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and std of uint8 images, in float64 chunks (no full float copy)."""
    channels = x.shape[-1]
    total = np.zeros(channels)
    squares = np.zeros(channels)
    for start in range(0, len(x), chunk):
        part = x[start : start + chunk].reshape(-1, channels).astype(np.float64)
        total += part.sum(axis=0)
        squares += np.square(part).sum(axis=0)
    count = x.size / channels
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean**2, 0.0)) + 1e-7
    return mean.astype("float32"), std.astype("float32")


def image_dataset(spec: DataConfig, seed: int) -> Dataset:
    """An image dataset (`resnet_exp.data.files`): uint8 splits, per-channel training stats."""
    name, label_mode = str(spec.name), str(spec.label_mode)
    arrays = datasets.load_arrays(name, None if spec.path is None else str(spec.path), label_mode)
    x_train, x_val, y_train, y_val = split(arrays.x_train, arrays.y_train, spec.val_fraction, seed)
    channels = x_train.shape[-1]
    if spec.standardize:
        mean, std = channel_stats(x_train)
    else:  # scaled to [0, 1] only
        mean, std = np.zeros(channels, "float32"), np.full(channels, 255.0, "float32")
    return Dataset(
        x_train,
        y_train,
        x_val,
        y_val,
        num_classes=datasets.num_classes(name, label_mode),
        name=name,
        x_test=arrays.x_test,
        y_test=arrays.y_test,
        mean=mean,
        std=std,
    )


def load_dataset(spec: DataConfig, *, seed: int) -> Dataset:
    """Load the dataset `spec` (the `data` config, or a `DataConfig` with the schema's
    defaults) and split it; standardisation uses training statistics only."""
    name, num_classes = str(spec.name), int(spec.num_classes)
    if name in datasets.SPECS:
        return image_dataset(spec, seed)
    if name == "digits":
        x, y = digits_arrays()
        num_classes = 10
    elif name == "synthetic":
        x, y = synthetic_arrays(tuple(spec.input_shape), num_classes, spec.num_samples, seed)
    else:
        raise ValueError(
            f"unknown dataset {name!r}; choose from digits, synthetic, {', '.join(datasets.SPECS)}"
        )
    x_train, x_val, y_train, y_val = split(x, y, spec.val_fraction, seed)
    if spec.standardize:
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


def probe_batch(data: Dataset, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """A fixed subset of the training set, drawn uniformly without replacement and seeded,
    for the gradient probe and the branch magnitudes (classes appear in their training
    proportions on average, not exactly). Never augmented, and normalised exactly as the
    training inputs are."""
    rng = np.random.default_rng(seed + 7919)
    size = min(size, len(data.x_train))
    index = np.sort(rng.choice(len(data.x_train), size=size, replace=False))
    return data.normalise(data.x_train[index]), data.y_train[index]
