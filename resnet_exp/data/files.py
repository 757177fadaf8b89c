"""The literature's image datasets as uint8 arrays: from the Keras cache or a local copy.

Two sources, one job each:

- `keras_arrays`: `keras.datasets` downloads a dataset once into the Keras cache
  (`$KERAS_HOME/datasets`, default `~/.keras/datasets`) and reads it from there after.
- `local_arrays`: a copy in the dataset's original distribution format, for
  machines without internet: the CIFAR-10/100 python-pickle folders as their
  tarballs unpack (or the tarball itself), and the MNIST/Fashion-MNIST IDX files,
  gzipped or not.

When neither works, `DatasetUnavailable` says in one line which dataset, where
it looked and how to provide it. `missing_file` checks a local copy without
parsing it (and without TensorFlow), so a bad `data.path` fails at validation.

CIFAR's files are Python pickles, the format its authors distribute; as with
any pickle, load only copies you trust.
"""

from __future__ import annotations

import functools
import gzip
import os
import pickle
import socket
import struct
import tarfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np


class DatasetUnavailable(RuntimeError):
    """A dataset that cannot be read or fetched; the message is one line."""


@dataclass(frozen=True)
class Spec:
    shape: tuple[int, int, int]
    num_classes: int
    files: tuple[str, ...]  # what a local copy must hold (IDX: each may end in .gz)
    folder: str  # the folder name inside the official tarball
    tarball: str | None = None  # the official tarball's name, where the copy may be one


CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPECS = {
    "cifar10": Spec(
        (32, 32, 3), 10, CIFAR10_FILES, "cifar-10-batches-py", "cifar-10-python.tar.gz"
    ),
    "cifar100": Spec(
        (32, 32, 3), 100, ("train", "test"), "cifar-100-python", "cifar-100-python.tar.gz"
    ),
    "mnist": Spec((28, 28, 1), 10, IDX_FILES, "mnist"),
    "fashion_mnist": Spec((28, 28, 1), 10, IDX_FILES, "fashion-mnist"),
}
CIFAR100_CLASSES = {"fine": 100, "coarse": 20}
DOWNLOAD_TIMEOUT_S = 30  # per socket operation: a blocked network fails in seconds, not minutes


@dataclass(frozen=True)
class Arrays:
    """Train and test images (N, H, W, C) uint8 and labels int64, as distributed."""

    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray


def num_classes(name: str, label_mode: str = "fine") -> int:
    return CIFAR100_CLASSES[label_mode] if name == "cifar100" else SPECS[name].num_classes


def keras_cache_dir() -> Path:
    """Where `keras.datasets` keeps its downloads (Keras's own rule, without importing it)."""
    return Path(os.environ.get("KERAS_HOME") or Path.home() / ".keras") / "datasets"


def _expected(name: str) -> str:
    files, tarball = ", ".join(SPECS[name].files), SPECS[name].tarball
    if tarball:
        return f"a folder holding {files}, or {tarball}"
    return f"a folder holding {files} (each may end in .gz)"


# ---------------------------------------------------------------- a local copy


@functools.lru_cache(maxsize=8)
def _tar_names(path: str, mtime_ns: int) -> frozenset[str]:
    """A tarball's file base names (the official tarballs hold one folder). Listing a
    gzipped tarball reads all of it: once per file version (`mtime_ns`) per process."""
    with tarfile.open(path) as tar:
        return frozenset(Path(m.name).name for m in tar.getmembers() if m.isfile())


def _tar_files(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The `wanted` files of a tarball by base name, in one pass over the compressed stream."""
    out = {}
    with tarfile.open(path, mode="r|*") as tar:
        for member in tar:
            name = Path(member.name).name
            if member.isfile() and name in wanted:
                out[name] = tar.extractfile(member).read()
    return out


def missing_file(name: str, path: str) -> str | None:
    """None if `path` holds a complete local copy of `name`, else a one-line reason."""
    root = Path(path).expanduser()
    if not root.exists():
        return f"data.path={path}: no such file or directory"
    if root.is_file():
        if not tarfile.is_tarfile(root):
            return f"data.path={path}: not a folder or a tarball; expected {_expected(name)}"
        have = _tar_names(str(root.resolve()), root.stat().st_mtime_ns)
        absent = [f for f in SPECS[name].files if f not in have and f"{f}.gz" not in have]
        where = f"tarball {root}"
    else:
        absent = [f for f in SPECS[name].files if _find_in(root, name, f) is None]
        where = str(root)
    if absent:
        return f"data.path={path}: {absent[0]} missing in {where}; expected {_expected(name)}"
    return None


def _find_in(root: Path, dataset: str, file: str) -> Path | None:
    for folder in (root, root / SPECS[dataset].folder):
        for candidate in (folder / file, folder / f"{file}.gz"):
            if candidate.is_file():
                return candidate
    return None


def _reader(root: Path, dataset: str) -> Callable[[str], bytes]:
    """A function from a file name to its bytes (gunzipped), for a folder or a tarball
    that `missing_file` found complete."""
    files = SPECS[dataset].files
    in_tar = _tar_files(root, {*files, *(f"{f}.gz" for f in files)}) if root.is_file() else None

    def read(file: str) -> bytes:
        if in_tar is not None:
            name = file if file in in_tar else f"{file}.gz"
            raw = in_tar[name]
        else:
            found = _find_in(root, dataset, file)
            name, raw = found.name, found.read_bytes()
        return gzip.decompress(raw) if name.endswith(".gz") else raw

    return read


def parse_idx(raw: bytes, what: str) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format): magic, dimensions, data."""
    if len(raw) < 4:
        raise DatasetUnavailable(f"{what}: not an IDX file (too short)")
    zero, dtype, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or ndim < 1:
        raise DatasetUnavailable(f"{what}: not an IDX file of unsigned bytes")
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetUnavailable(f"{what}: {data.size} bytes of data for shape {dims}")
    return data.reshape(dims)


def _cifar_batch(raw: bytes, what: str, label_key: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        batch = pickle.loads(raw, encoding="bytes")
        data = np.asarray(batch[b"data"], dtype=np.uint8)
        labels = np.asarray(batch[label_key.encode()], dtype=np.int64)
    except (pickle.UnpicklingError, KeyError, EOFError, TypeError, ValueError) as err:
        raise DatasetUnavailable(f"{what}: not a CIFAR python batch ({err!r})") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def local_arrays(name: str, path: str, label_mode: str = "fine") -> Arrays:
    """Read a local copy in the original format (see the module docstring)."""
    problem = missing_file(name, path)
    if problem:
        raise DatasetUnavailable(f"{name}: {problem}")
    read = _reader(Path(path).expanduser(), name)
    if name in ("mnist", "fashion_mnist"):
        x_train, y_train, x_test, y_test = (parse_idx(read(f), f"{name} {f}") for f in IDX_FILES)
        return Arrays(
            x_train[..., None], y_train.astype(np.int64), x_test[..., None], y_test.astype(np.int64)
        )
    label_key = "labels" if name == "cifar10" else f"{label_mode}_labels"
    batches = [_cifar_batch(read(f), f"{name} {f}", label_key) for f in SPECS[name].files]
    xs, ys = zip(*batches, strict=True)  # the training batches, then the test batch
    return Arrays(np.concatenate(xs[:-1]), np.concatenate(ys[:-1]), xs[-1], ys[-1])


# ---------------------------------------------------------------- the Keras cache


def keras_arrays(name: str, label_mode: str = "fine") -> Arrays:
    """`keras.datasets.<name>.load_data()`: the cached copy, or one download into the cache."""
    import keras

    module = getattr(keras.datasets, name)
    kwargs = {"label_mode": label_mode} if name == "cifar100" else {}
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(DOWNLOAD_TIMEOUT_S)
    try:
        (x_train, y_train), (x_test, y_test) = module.load_data(**kwargs)
    except Exception as err:  # Keras raises a bare Exception for a failed download
        reason = " ".join(str(err).split())[:200]
        raise DatasetUnavailable(
            f"{name}: not in the Keras cache ({keras_cache_dir()}) and the download failed "
            f"({reason}); copy it and pass data.path=DIR ({_expected(name)})"
        ) from None
    finally:
        socket.setdefaulttimeout(previous)
    if x_train.ndim == 3:  # MNIST-like: add the channel axis
        x_train, x_test = x_train[..., None], x_test[..., None]
    return Arrays(
        x_train.astype(np.uint8, copy=False),
        y_train.reshape(-1).astype(np.int64),
        x_test.astype(np.uint8, copy=False),
        y_test.reshape(-1).astype(np.int64),
    )


@functools.lru_cache(maxsize=1)
def load_arrays(name: str, path: str | None = None, label_mode: str = "fine") -> Arrays:
    """The dataset from `path` when given, else from Keras; kept for the next job of a sweep."""
    if name not in SPECS:
        raise DatasetUnavailable(f"{name}: not an image dataset; choose from {', '.join(SPECS)}")
    arrays = local_arrays(name, path, label_mode) if path else keras_arrays(name, label_mode)
    for x in (arrays.x_train, arrays.x_test):
        if x.shape[1:] != SPECS[name].shape:
            raise DatasetUnavailable(
                f"{name}: images of shape {x.shape[1:]}, expected {SPECS[name].shape}"
            )
    return arrays
