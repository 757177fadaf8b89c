"""A run's checkpoint: the state at its last finished epoch, so a stopped run continues.

One file per MLflow run, `<checkpoint dir>/<config hash>/<run id>.npz`, rewritten at
every epoch's end (`callbacks.EpochCheckpoint`) and deleted once the run ends
FINISHED or FAILED. It holds

* every variable of the model (weights, batch-norm statistics) and of the optimiser
  (its iteration count, so the learning-rate schedule goes on where it was, and its
  momenta), in creation order, checked against shapes and dtypes when restored;
* `state`, a JSON text: the epoch reached, the epochs' logged values (history.csv's
  rows), the recorders' histories and profiles (`recording.gradients`,
  `recording.branches`), the divergence monitor's verdict, and who wrote it (host,
  process, Slurm job).

Why not `keras.callbacks.BackupAndRestore`: it writes the weights (as `.weights.h5`,
130-340 ms for ResNet-20/56 with the optimiser, a third of a digits epoch) and the
epoch in two files, each overwritten in place, so a kill between or during the two
writes leaves weights of one epoch labelled with another; it restores through a
private attribute (`model._initial_epoch`); it deletes its files when `fit` ends,
before the run is closed; and it has no room for the recorders. Here the variables
are read in one device-to-host copy per dtype (a few ms), written by a background
thread to a temporary file, and moved into place with `os.replace`: the file on disk
is always one whole epoch's state. `flush()` waits for the write in progress (the job
calls it before closing a stopped run).

No TensorFlow at import: `job.py` looks for a checkpoint before training imports.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

log = logging.getLogger(__name__)

FORMAT = 1
_STATE_KEY = "state"


def checkpoint_root(directory: str | None, tracking_uri: str) -> Path:
    """Where checkpoints go: `directory` if set, else next to a local store (a `checkpoints`
    folder beside `mlflow.db` or `mlruns/`), else `<project>/checkpoints` (a tracking server).

    On a cluster both are on the filesystem the jobs share, as the store and the
    project are; a node-local folder would strand a requeued job's checkpoint.
    """
    if directory:
        return Path(directory).expanduser().absolute()
    local = _local_store_path(tracking_uri)
    if local is not None:
        return local.absolute().parent / "checkpoints"
    from resnet_exp.tracking.store import project_root

    return project_root() / "checkpoints"


def _local_store_path(uri: str) -> Path | None:
    if uri.startswith("sqlite:///"):
        return Path(uri[len("sqlite:///") :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    if "://" not in uri and not uri.startswith("databricks"):
        return Path(uri)  # a bare path is a file store
    return None


def slurm_job() -> str | None:
    """This Slurm job's id (array jobs: `<array id>_<task>`), which a requeued job keeps."""
    array, task = os.environ.get("SLURM_ARRAY_JOB_ID"), os.environ.get("SLURM_ARRAY_TASK_ID")
    if array and task:
        return f"{array}_{task}"
    return os.environ.get("SLURM_JOB_ID")


def owner() -> dict[str, Any]:
    """Who writes a checkpoint: to tell a dead writer's RUNNING run from a live one."""
    return {"host": socket.gethostname(), "pid": os.getpid(), "slurm_job": slurm_job()}


def writer_gone(writer: dict[str, Any]) -> bool:
    """True when the process that wrote a checkpoint cannot still be running: this is its
    Slurm job, requeued, or it ran on this host and its process is gone. Anything else (a
    live process, another host) may still be training: its run is left alone."""
    slurm = slurm_job()
    if slurm and writer.get("slurm_job") == slurm:
        return True
    if writer.get("host") != socket.gethostname() or not writer.get("pid"):
        return False
    pid = int(writer["pid"])
    if pid == os.getpid():
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # someone else's live process
        return False
    return False


class Snapshot:
    """The model's and optimiser's variables, read in one device-to-host copy per dtype."""

    def __init__(self, model: Any) -> None:
        import tensorflow as tf

        optimizer = getattr(model, "optimizer", None)
        self.variables = [*model.weights, *(optimizer.variables if optimizer else [])]
        self.groups: dict[str, list[int]] = {}
        for index, variable in enumerate(self.variables):
            self.groups.setdefault(_dtype(variable), []).append(index)

        def reader(indices: list[int]):
            chosen = [self.variables[i] for i in indices]
            return tf.function(
                lambda: tf.concat(
                    [tf.reshape(tf.convert_to_tensor(v.value), [-1]) for v in chosen], 0
                ),
                autograph=False,
            )

        self._read = {dtype: reader(indices) for dtype, indices in self.groups.items()}

    def manifest(self) -> list[list[Any]]:
        return [[v.path, list(v.shape), _dtype(v)] for v in self.variables]

    def take(self) -> dict[str, np.ndarray]:
        return {dtype: read().numpy() for dtype, read in self._read.items()}

    def restore(self, arrays: dict[str, np.ndarray], manifest: list[list[Any]]) -> None:
        """Assign the saved values; `CheckpointMismatch` if the variables are not the same."""
        mine = [[list(shape), dtype] for _, shape, dtype in self.manifest()]
        theirs = [[list(shape), dtype] for _, shape, dtype in manifest]
        if mine != theirs:
            raise CheckpointMismatch(
                f"{len(theirs)} saved variables do not match this model's {len(mine)}"
            )
        for dtype, indices in self.groups.items():
            flat, offset = arrays[dtype], 0
            for i in indices:
                variable = self.variables[i]
                size = int(np.prod(variable.shape, dtype=np.int64))
                variable.assign(flat[offset : offset + size].reshape(variable.shape))
                offset += size


def _dtype(variable: Any) -> str:
    return str(getattr(variable.dtype, "name", variable.dtype))


class CheckpointMismatch(ValueError):
    """A checkpoint made by another model or optimiser: it cannot be restored."""


class Checkpoint:
    """One run's checkpoint file: written in the background, read whole, deleted at the end."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.saved_epoch: int | None = None  # the epoch on disk, once a write has finished
        self.seconds: list[float] = []  # each write's wall time, on the writer thread
        self._thread: threading.Thread | None = None
        self._failed: str | None = None

    @classmethod
    def of_run(cls, root: Path, digest: str, run_id: str) -> Checkpoint:
        return cls(Path(root) / digest / f"{run_id}.npz")

    def exists(self) -> bool:
        return self.path.is_file()

    def read_state(self) -> dict[str, Any] | None:
        """The JSON part (epoch, rows, recorders, writer), or None: no file, or unreadable."""
        try:
            with np.load(self.path, allow_pickle=False) as saved:
                state = json.loads(str(saved[_STATE_KEY]))
        except FileNotFoundError:
            return None
        except Exception as err:  # a truncated or foreign file: no checkpoint
            log.warning("checkpoint %s cannot be read (%s): ignored", self.path, err)
            return None
        if state.get("format") != FORMAT:
            log.warning("checkpoint %s has format %s: ignored", self.path, state.get("format"))
            return None
        return state

    def restore(self, model: Any) -> dict[str, Any]:
        """Put the saved variables into `model` (built, optimiser built); returns the state."""
        with np.load(self.path, allow_pickle=False) as saved:
            state = json.loads(str(saved[_STATE_KEY]))
            arrays = {k: saved[k] for k in saved.files if k != _STATE_KEY}
        Snapshot(model).restore(arrays, state["manifest"])
        self.saved_epoch = int(state["epoch"])
        return state

    def submit(self, arrays: dict[str, np.ndarray], state: dict[str, Any]) -> None:
        """Write this epoch's state in the background, once the previous write is done.

        The state is serialised now: the lists it holds go on growing on this thread.
        """
        self.flush()
        text = json.dumps({"format": FORMAT, **state})
        self._thread = threading.Thread(
            target=self._write,
            args=(arrays, text, int(state["epoch"])),
            name="checkpoint",
            daemon=True,
        )
        self._thread.start()

    def _write(self, arrays: dict[str, np.ndarray], state: str, epoch: int) -> None:
        start = time.perf_counter()
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(tmp, "wb") as f:
                np.savez(f, **arrays, **{_STATE_KEY: np.array(state)})
            os.replace(tmp, self.path)  # atomic: the file is always one whole epoch
        except Exception as err:  # a full disk must not fail the run: it loses the safety net
            with contextlib.suppress(OSError):
                tmp.unlink()
            if self._failed is None:
                log.warning("checkpoint %s not written: %s", self.path, err)
            self._failed = str(err)
            return
        self.saved_epoch = epoch
        self.seconds.append(time.perf_counter() - start)

    def flush(self) -> None:
        """Wait for the write in progress, if any."""
        thread, self._thread = self._thread, None
        if thread is not None:
            thread.join()

    def delete(self) -> None:
        """Remove the file (the run is over), and its config's folder if that is now empty."""
        self.flush()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        with contextlib.suppress(OSError):
            self.path.parent.rmdir()
        self.saved_epoch = None
