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
Parsing validates: a file that is truncated, of the wrong image size or dtype,
with a label count unlike its image count or labels outside the dataset's
classes is refused in one line naming it, by the same code whether
`resnet_exp.data.check` checks the copy before a run or the run loads it.

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
import zlib
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
    train_images: int  # in the official distribution, before the validation split
    files: tuple[str, ...]  # what a local copy must hold (IDX: each may end in .gz)
    folder: str  # the folder name inside the official tarball
    tarball: str | None = None  # the official tarball's name, where the copy may be one
    keras_files: tuple[str, ...] = ()  # what `keras.datasets` keeps in its cache (Keras 3.15)


CIFAR10_FILES = (*(f"data_batch_{i}" for i in range(1, 6)), "test_batch")
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
SPECS = {
    "cifar10": Spec(
        (32, 32, 3),
        10,
        50_000,
        CIFAR10_FILES,
        "cifar-10-batches-py",
        "cifar-10-python.tar.gz",
        ("cifar-10-batches-py-target_archive",),
    ),
    "cifar100": Spec(
        (32, 32, 3),
        100,
        50_000,
        ("train", "test"),
        "cifar-100-python",
        "cifar-100-python.tar.gz",
        ("cifar-100-python-target_archive",),
    ),
    "mnist": Spec((28, 28, 1), 10, 60_000, IDX_FILES, "mnist", keras_files=("mnist.npz",)),
    "fashion_mnist": Spec(
        (28, 28, 1),
        10,
        60_000,
        IDX_FILES,
        "fashion-mnist",
        keras_files=tuple(f"fashion-mnist/{f}.gz" for f in IDX_FILES),
    ),
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
    """Where `keras.datasets` keeps its downloads (Keras's own rule, without importing it:
    `$KERAS_HOME`, else `~/.keras`; `/tmp/.keras` where those are not writable)."""
    home = os.environ.get("KERAS_HOME")
    if not home:
        base = Path.home() if os.access(Path.home(), os.W_OK) else Path("/tmp")
        home = base / ".keras"
    home = Path(home).expanduser()
    if home.exists() and not os.access(home, os.W_OK):
        home = Path("/tmp/.keras")
    return home / "datasets"


def in_keras_cache(name: str) -> bool:
    """Whether `keras.datasets` would read `name` without downloading, as far as file names
    tell (Keras also checks a hash); a wrong guess costs a Keras import, never a wrong read."""
    cache = keras_cache_dir()
    return all((cache / file).is_file() for file in SPECS[name].keras_files)


def _expected(name: str) -> str:
    files, tarball = ", ".join(SPECS[name].files), SPECS[name].tarball
    if tarball:
        return f"a folder holding {files}, or {tarball}"
    return f"a folder holding {files} (each may end in .gz)"


def _why(err: BaseException) -> str:
    """An exception as a short phrase on one line, for a message about a file."""
    text = " ".join(str(err).split())[:160]
    return f"{type(err).__name__}: {text}" if text else type(err).__name__


# ---------------------------------------------------------------- a local copy

_TAR_ERRORS = (tarfile.TarError, EOFError, OSError, zlib.error)


@functools.lru_cache(maxsize=8)
def _tar_names(path: str, mtime_ns: int) -> frozenset[str]:
    """A tarball's file base names (the official tarballs hold one folder). Listing a
    gzipped tarball reads all of it: once per file version (`mtime_ns`) per process."""
    with tarfile.open(path) as tar:
        return frozenset(Path(m.name).name for m in tar.getmembers() if m.isfile())


def _tar_files(path: Path, wanted: set[str]) -> dict[str, bytes]:
    """The `wanted` files of a tarball by base name, in one pass over the compressed stream."""
    out = {}
    try:
        with tarfile.open(path, mode="r|*") as tar:
            for member in tar:
                name = Path(member.name).name
                if member.isfile() and name in wanted:
                    out[name] = tar.extractfile(member).read()
    except _TAR_ERRORS as err:
        raise DatasetUnavailable(f"tarball {path}: truncated or corrupt ({_why(err)})") from None
    return out


def missing_file(name: str, path: str) -> str | None:
    """None if `path` holds a complete local copy of `name`, else a one-line reason."""
    root = Path(path).expanduser()
    if not root.exists():
        return f"data.path={path}: no such file or directory"
    if root.is_file():
        if not tarfile.is_tarfile(root):
            return f"data.path={path}: not a folder or a tarball; expected {_expected(name)}"
        try:
            have = _tar_names(str(root.resolve()), root.stat().st_mtime_ns)
        except _TAR_ERRORS as err:
            return f"data.path={path}: truncated or corrupt tarball ({_why(err)})"
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


def _gunzip(raw: bytes, what: str) -> bytes:
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as err:
        raise DatasetUnavailable(f"{what}: truncated or corrupt gzip ({_why(err)})") from None


def _reader(root: Path, dataset: str) -> Callable[[str], tuple[bytes, str]]:
    """A function from a file name to its bytes (gunzipped) and a name for messages (the
    file's path), for a folder or a tarball that `missing_file` found complete."""
    files = SPECS[dataset].files
    in_tar = _tar_files(root, {*files, *(f"{f}.gz" for f in files)}) if root.is_file() else None

    def read(file: str) -> tuple[bytes, str]:
        if in_tar is not None:
            name = file if file in in_tar else f"{file}.gz"
            raw, what = in_tar[name], f"{dataset} file {name} in {root}"
        else:
            found = _find_in(root, dataset, file)
            name, raw, what = found.name, found.read_bytes(), f"{dataset} file {found}"
        return (_gunzip(raw, what) if name.endswith(".gz") else raw), what

    return read


def parse_idx(raw: bytes, what: str, ndim: int | None = None) -> np.ndarray:
    """An IDX file of unsigned bytes (the MNIST format): magic, dimensions, data; `ndim`
    dimensions when given (3 for images, 1 for labels)."""
    if len(raw) < 4:
        raise DatasetUnavailable(f"{what}: not an IDX file (too short)")
    zero, dtype, dims_n = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype != 0x08 or dims_n < 1:
        raise DatasetUnavailable(f"{what}: not an IDX file of unsigned bytes")
    if ndim is not None and dims_n != ndim:
        raise DatasetUnavailable(f"{what}: an IDX file of {dims_n} dimensions, expected {ndim}")
    if len(raw) < 4 + 4 * dims_n:
        raise DatasetUnavailable(f"{what}: truncated IDX header")
    dims = struct.unpack(f">{dims_n}I", raw[4 : 4 + 4 * dims_n])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * dims_n)
    expected = int(np.prod(dims))
    if data.size != expected:
        shape = "x".join(map(str, dims))
        cut = "truncated: " if data.size < expected else ""
        raise DatasetUnavailable(
            f"{what}: {cut}{data.size} bytes of data for shape {shape} ({expected} expected)"
        )
    return data.reshape(dims)


def checked_labels(labels: np.ndarray, what: str, classes: int, images: int) -> np.ndarray:
    """Labels as int64, refused unless integers in [0, classes), one per image: a label out
    of range fails deep inside TensorFlow's loss, mid-training, otherwise."""
    if labels.dtype.kind not in "iu" or labels.ndim != 1:
        raise DatasetUnavailable(
            f"{what}: labels of dtype {labels.dtype} and shape {labels.shape}, "
            "expected one integer per image"
        )
    if len(labels) != images:
        raise DatasetUnavailable(f"{what}: {images} images but {len(labels)} labels")
    low, high = (int(labels.min()), int(labels.max())) if len(labels) else (0, 0)
    if low < 0 or high >= classes:
        raise DatasetUnavailable(
            f"{what}: labels from {low} to {high}, expected 0 to {classes - 1} ({classes} classes)"
        )
    return labels.astype(np.int64, copy=False)


def _unpickle_batch(raw: bytes, what: str, label_key: str) -> tuple[object, object]:
    """A CIFAR batch's pixel rows and labels as stored (a dict with bytes keys)."""
    try:
        batch = pickle.loads(raw, encoding="bytes")
    except Exception as err:  # a truncated or foreign pickle fails in many ways
        raise DatasetUnavailable(f"{what}: not a CIFAR python batch ({_why(err)})") from None
    for key in (b"data", label_key.encode()):
        if not isinstance(batch, dict) or key not in batch:
            raise DatasetUnavailable(f"{what}: not a CIFAR python batch (no {key!r} entry)")
    return batch[b"data"], batch[label_key.encode()]


def _cifar_batch(
    raw: bytes, what: str, label_key: str, classes: int
) -> tuple[np.ndarray, np.ndarray]:
    """A CIFAR batch's images (N, 32, 32, 3) and labels, checked: uint8 rows of 3072 values
    (1024 R, then G, then B), as many labels as rows, each in [0, classes)."""
    data, labels = _unpickle_batch(raw, what, label_key)
    data = np.asarray(data)
    if data.dtype != np.uint8:
        raise DatasetUnavailable(f"{what}: pixels of dtype {data.dtype}, expected uint8")
    row = 32 * 32 * 3
    if data.ndim != 2 or data.shape[1] != row:
        shape = "x".join(map(str, data.shape))
        raise DatasetUnavailable(
            f"{what}: pixel array of shape {shape}, expected rows of {row} values (32x32x3 images)"
        )
    y = checked_labels(np.asarray(labels), what, classes, len(data))
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), y


def _idx_pair(
    read: Callable[[str], tuple[bytes, str]], name: str, prefix: str
) -> tuple[np.ndarray, np.ndarray]:
    """One split's IDX images (N, 28, 28, 1) and labels, checked against each other."""
    images, images_what = read(f"{prefix}-images-idx3-ubyte")
    x = parse_idx(images, images_what, ndim=3)
    height, width, _ = SPECS[name].shape
    if x.shape[1:] != (height, width):
        raise DatasetUnavailable(
            f"{images_what}: images of {x.shape[1]}x{x.shape[2]}, expected {height}x{width}"
        )
    labels, labels_what = read(f"{prefix}-labels-idx1-ubyte")
    y = parse_idx(labels, labels_what, ndim=1)
    return x[..., None], checked_labels(y, labels_what, SPECS[name].num_classes, len(x))


Part = tuple[np.ndarray, np.ndarray]  # images and labels of one file (or IDX pair)


def _local_parts(name: str, path: str, label_mode: str) -> tuple[list[Part], Part]:
    """Every file of a local copy parsed and checked: the training parts and the test part."""
    problem = missing_file(name, path)
    if problem:
        raise DatasetUnavailable(f"{name}: {problem}")
    read = _reader(Path(path).expanduser(), name)
    if name in ("mnist", "fashion_mnist"):
        return [_idx_pair(read, name, "train")], _idx_pair(read, name, "t10k")
    label_key = "labels" if name == "cifar10" else f"{label_mode}_labels"
    classes = num_classes(name, label_mode)
    parts = [_cifar_batch(*read(f), label_key, classes) for f in SPECS[name].files]
    return parts[:-1], parts[-1]  # the training batches, then the test batch


def local_arrays(name: str, path: str, label_mode: str = "fine") -> Arrays:
    """Read and check a local copy in the original format (see the module docstring)."""
    train, (x_test, y_test) = _local_parts(name, path, label_mode)
    xs, ys = zip(*train, strict=True)
    return Arrays(np.concatenate(xs), np.concatenate(ys), x_test, y_test)


def local_train_labels(name: str, path: str, label_mode: str = "fine") -> np.ndarray:
    """Check a local copy as `local_arrays` does, for its training labels only: the data
    check needs no 150 MB copy of CIFAR's images in training order."""
    train, _ = _local_parts(name, path, label_mode)
    return np.concatenate([y for _, y in train])


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
