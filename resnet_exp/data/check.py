"""A run's data, checked before anything opens: before TensorFlow loads, before MLflow holds
a run, once for all the jobs of a sweep.

Without it, a bad file fails only once the run is open (after 8-11 s of TensorFlow import,
leaving a FAILED run in the store), some with a long traceback from scikit-learn or from
TensorFlow mid-training; and a batch larger than the training set trains silently on one
smaller batch. `check_jobs_data` reads each distinct dataset once with the loader's own
readers (`resnet_exp.data.files`, which validate as they parse: numpy and pickle, no
TensorFlow), downloads a missing `keras.datasets` dataset into the Keras cache (the one case
that imports Keras), and refuses in one line what a run could not use.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
from omegaconf import DictConfig, OmegaConf

from resnet_exp.data import files, splits
from resnet_exp.data.files import DatasetUnavailable


class DataError(DatasetUnavailable):
    """Data a run cannot use (a batch larger than its training split, a split that cannot
    be stratified); the message is one line."""


@dataclass(frozen=True)
class Source:
    """What a job reads: jobs with equal sources read the same training labels."""

    name: str
    path: str | None = None
    label_mode: str = "fine"
    num_samples: int = 0  # synthetic only
    num_classes: int = 0  # synthetic only


@dataclass(frozen=True)
class Use:
    """What a job asks of its source: jobs with equal uses pass or fail together."""

    source: Source
    val_fraction: float
    batch_size: int
    epochs: int | None = None  # None: trainer.steps sets the length (checked at validation)
    warmup_steps: int = 0
    milestone_steps: tuple[int, ...] = ()


def use_of(cfg: DictConfig) -> Use:
    """The parts of a job's config the data check depends on (not the seed, the model...)."""
    data, name = cfg.data, str(cfg.data.name)
    synthetic = name == "synthetic"
    source = Source(
        name,
        None if data.path is None else str(data.path),
        str(data.label_mode),
        int(data.num_samples) if synthetic else 0,
        int(data.num_classes) if synthetic else 0,
    )
    schedule = OmegaConf.select(cfg, "optim.schedule")
    by_epochs = OmegaConf.select(cfg, "trainer.steps") is None and schedule is not None
    return Use(
        source,
        float(data.val_fraction),
        int(cfg.trainer.batch_size),
        int(cfg.trainer.epochs) if by_epochs else None,
        int(schedule.warmup_steps) if by_epochs else 0,
        tuple(schedule.milestone_steps or ()) if by_epochs else (),
    )


def check_data(cfg: DictConfig) -> None:
    """Raise `DatasetUnavailable` (one line) unless the job `cfg` can read and use its data."""
    check_jobs_data([cfg])


def check_jobs_data(jobs: Iterable[DictConfig]) -> None:
    """`check_data` for every job, reading each distinct dataset once."""
    sizes: dict[Source, np.ndarray] = {}
    for use in dict.fromkeys(use_of(job) for job in jobs):
        if use.source not in sizes:
            sizes[use.source] = class_sizes(use.source)
        check_use(use, sizes[use.source])


def check_jobs_data_or_exit(jobs: Iterable[DictConfig]) -> None:
    """Print `data error: ...` on one line and exit 2 if any job's data cannot be used."""
    try:
        check_jobs_data(jobs)
    except DatasetUnavailable as err:
        print(f"data error: {err}", file=sys.stderr, flush=True)
        sys.exit(2)


def class_sizes(source: Source) -> np.ndarray:
    """Training images per class present, before the validation split; reading a local
    copy checks every file of it (a bad one raises `DatasetUnavailable`)."""
    if source.name == "digits":
        return _sizes(splits.digits_arrays()[1])
    if source.name == "synthetic":
        return _sizes(splits.synthetic_labels(source.num_samples, source.num_classes))
    if source.name not in files.SPECS:
        raise DataError(f"data={source.name}: unknown dataset")
    if source.path is not None:
        return _sizes(files.local_train_labels(source.name, source.path, source.label_mode))
    if not files.in_keras_cache(source.name):  # downloads it now, before any run opens
        return _sizes(files.keras_arrays(source.name, source.label_mode).y_train)
    return _official_sizes(source)


def _sizes(labels: np.ndarray) -> np.ndarray:
    counts = np.bincount(labels)
    return counts[counts > 0]


def _official_sizes(source: Source) -> np.ndarray:
    """Nominal class sizes (total / classes) of a cached `keras.datasets` set, not read: the
    official sets hold every class, the rarest with hundreds of images (MNIST's 5s: 5,421),
    so only their total matters to the checks, and it is exact."""
    classes = files.num_classes(source.name, source.label_mode)
    return np.full(classes, files.SPECS[source.name].train_images // classes)


def check_use(use: Use, sizes: np.ndarray) -> None:
    """Refuse a split scikit-learn cannot stratify, and a batch larger than the training
    split (the run would train on one smaller batch per epoch without a word)."""
    name, fraction, total = use.source.name, use.val_fraction, int(sizes.sum())
    problem = splits.split_problem(sizes, fraction)
    if problem:
        raise DataError(f"data.val_fraction={fraction} on {total} {name} images: {problem}")
    n_train, _ = splits.split_sizes(total, fraction)
    if use.batch_size > n_train:
        helps = fraction and use.batch_size <= total  # all the images would make one batch
        lower = f" (or lower data.val_fraction={fraction})" if helps else ""
        raise DataError(
            f"trainer.batch_size={use.batch_size} is larger than the training split "
            f"({n_train} images of {name}); use trainer.batch_size={n_train} or less{lower}"
        )
    if use.epochs is not None:
        _check_length(use, -(-n_train // use.batch_size) * use.epochs)


def _check_length(use: Use, total_steps: int) -> None:
    """A run set by `trainer.epochs` has its length in iterations only once the training
    split is known: warm-up and milestones must fall inside it, or the schedule never
    happens (validation checks them against `trainer.steps`, where that is set)."""
    length = f"the run's {total_steps} iterations ({use.epochs} epochs of {use.batch_size})"
    if use.warmup_steps >= total_steps:
        raise DataError(
            f"optim.schedule.warmup_steps={use.warmup_steps}: must be below {length}, "
            "else the whole run is warm-up"
        )
    late = [step for step in use.milestone_steps if step >= total_steps]
    if late:
        raise DataError(
            f"optim.schedule.milestone_steps={list(use.milestone_steps)}: {late[0]} is not "
            f"below {length}; the rate would never drop there"
        )
