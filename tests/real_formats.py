"""Tiny copies of CIFAR-10, CIFAR-100 and MNIST in their real distribution formats.

The files are written the way the originals are: CIFAR's python pickles with
bytes keys and (N, 3072) uint8 rows of R, G, B planes; MNIST's big-endian IDX
headers. Images carry their label in pixel values, so tests can check that
images and labels stay paired through loading and splitting.
"""

from __future__ import annotations

import gzip
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np


def _images(labels: np.ndarray, shape: tuple[int, int, int], seed: int) -> np.ndarray:
    """uint8 images, channels last, whose top-left pixel of channel 0 is the label."""
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 256, size=(len(labels), *shape), dtype=np.uint8)
    x[:, 0, 0, 0] = labels
    return x


def _labels(n: int, classes: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).permutation(np.arange(n) % classes)


def _pickle(path: Path, content: dict) -> None:
    path.write_bytes(pickle.dumps(content, protocol=2))


def _cifar_rows(x: np.ndarray) -> np.ndarray:
    return x.transpose(0, 3, 1, 2).reshape(len(x), -1)


def write_cifar10(root: Path, per_batch: int = 20, test: int = 20) -> Path:
    """A `cifar-10-batches-py` folder: data_batch_1..5, test_batch, batches.meta."""
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        y = _labels(per_batch, 10, i)
        x = _images(y, (32, 32, 3), i)
        _pickle(folder / f"data_batch_{i}", {b"data": _cifar_rows(x), b"labels": y.tolist()})
    y = _labels(test, 10, 99)
    _pickle(
        folder / "test_batch",
        {b"data": _cifar_rows(_images(y, (32, 32, 3), 99)), b"labels": y.tolist()},
    )
    _pickle(folder / "batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
    return folder


def write_cifar100(root: Path, train: int = 1000, test: int = 100) -> Path:
    """A `cifar-100-python` folder: train, test, meta; coarse label = fine // 5."""
    folder = root / "cifar-100-python"
    folder.mkdir(parents=True)
    for name, n, seed in (("train", train, 1), ("test", test, 2)):
        fine = _labels(n, 100, seed)
        x = _images(fine, (32, 32, 3), seed)
        _pickle(
            folder / name,
            {
                b"data": _cifar_rows(x),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist(),
            },
        )
    _pickle(folder / "meta", {b"fine_label_names": [], b"coarse_label_names": []})
    return folder


def tarball(folder: Path, name: str) -> Path:
    """The folder as its official tarball `name` packs it (`<folder>/<file>` members)."""
    path = folder.parent / name
    with tarfile.open(path, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    return path


def _idx(array: np.ndarray) -> bytes:
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_idx(root: Path, train: int = 100, test: int = 20, gz: bool = True) -> Path:
    """The four MNIST IDX files, gzipped (as distributed) or not."""
    root.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", train, 1), ("t10k", test, 2)):
        y = _labels(n, 10, seed)
        x = _images(y, (28, 28, 1), seed)[..., 0]
        for kind, array, dims in (("images", x, 3), ("labels", y, 1)):
            data = _idx(array)
            name = root / f"{prefix}-{kind}-idx{dims}-ubyte"
            if gz:
                Path(f"{name}.gz").write_bytes(gzip.compress(data))
            else:
                name.write_bytes(data)
    return root


# ---------------------------------------------------------------- broken copies


def edit_cifar_batch(path: Path, **entries) -> None:
    """Rewrite one CIFAR batch file with some entries replaced (`data=`, `labels=`, ...)."""
    batch = pickle.loads(path.read_bytes(), encoding="bytes")
    batch.update({key.encode(): value for key, value in entries.items()})
    _pickle(path, batch)


def truncate(path: Path, keep: float = 0.5) -> None:
    """Cut a file to a fraction of its bytes, as an interrupted copy leaves it."""
    raw = path.read_bytes()
    path.write_bytes(raw[: int(len(raw) * keep)])


def write_idx_file(path: Path, array: np.ndarray, gz: bool = False) -> None:
    """One IDX file of unsigned bytes holding `array` (e.g. labels out of range)."""
    data = _idx(array)
    path.write_bytes(gzip.compress(data) if gz else data)
