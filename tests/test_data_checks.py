"""The data check before a run opens (`resnet_exp.data.check`): real files in the real
formats, broken the ways copies break; one line naming the file, and no TensorFlow."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from omegaconf import DictConfig, OmegaConf
from real_formats import (
    edit_cifar_batch,
    tarball,
    truncate,
    write_cifar10,
    write_cifar100,
    write_idx,
    write_idx_file,
)
from sklearn.model_selection import train_test_split

from resnet_exp.config.schema import DataConfig
from resnet_exp.data import files
from resnet_exp.data.check import DataError, check_data, check_jobs_data, use_of
from resnet_exp.data.files import DatasetUnavailable, local_arrays
from resnet_exp.data.splits import load_dataset, split_sizes
from resnet_exp.run.command_line import compose_jobs

ROOT = Path(__file__).resolve().parents[1]


def job(name: str, batch_size: int = 32, **data) -> DictConfig:
    """A job's config as far as the check reads it: `data` (the schema's) and the batch."""
    return OmegaConf.create(
        {
            "data": OmegaConf.structured(DataConfig(name=name, **data)),
            "trainer": {"batch_size": batch_size},
            "seed": 0,
        }
    )


def refused(cfg: DictConfig) -> str:
    """The check's one-line message for `cfg`, which must be refused."""
    with pytest.raises(DatasetUnavailable) as err:
        check_data(cfg)
    message = str(err.value)
    assert "\n" not in message
    return message


def same_from_loader(cfg: DictConfig, message: str) -> None:
    """The run's loader refuses the file with the same words: one parser for both."""
    with pytest.raises(DatasetUnavailable) as err:
        load_dataset(cfg.data, seed=0)
    assert str(err.value) == message


@pytest.fixture
def c10(tmp_path) -> Path:
    return write_cifar10(tmp_path / "c10", per_batch=40)


@pytest.fixture
def idx(tmp_path) -> Path:
    return write_idx(tmp_path / "mnist", gz=False)


# ---------------------------------------------------------------- good copies pass


def test_good_copies_pass(tmp_path, c10):
    c100 = write_cifar100(tmp_path / "c100")
    for cfg in (
        job("cifar10", path=str(c10), val_fraction=0.1),
        job("cifar10", path=str(tarball(c10, "cifar-10-python.tar.gz")), val_fraction=0.1),
        job("cifar100", path=str(c100), val_fraction=0.1),
        job("cifar100", path=str(c100), val_fraction=0.1, label_mode="coarse"),
        job("mnist", path=str(write_idx(tmp_path / "idx_gz")), val_fraction=0.1),
        job("fashion_mnist", path=str(write_idx(tmp_path / "idx", gz=False)), val_fraction=0.1),
        job("digits", batch_size=1437),
        job("synthetic", batch_size=409, num_samples=512),
    ):
        check_data(cfg)


# ---------------------------------------------------------------- the bad inputs


def test_cifar_rows_of_the_wrong_size(c10):
    batch = c10 / "data_batch_2"
    edit_cifar_batch(batch, data=np.zeros((200, 3000), np.uint8), labels=[0] * 200)
    cfg = job("cifar10", path=str(c10))
    message = refused(cfg)
    assert message == (
        f"cifar10 file {batch}: pixel array of shape 200x3000, "
        "expected rows of 3072 values (32x32x3 images)"
    )
    same_from_loader(cfg, message)


def test_more_images_than_labels(c10):
    batch = c10 / "data_batch_1"
    edit_cifar_batch(batch, data=np.zeros((200, 3072), np.uint8), labels=[1] * 150)
    cfg = job("cifar10", path=str(c10))
    message = refused(cfg)
    assert message == f"cifar10 file {batch}: 200 images but 150 labels"
    same_from_loader(cfg, message)


def test_cifar_labels_outside_the_classes(c10):
    batch = c10 / "data_batch_4"
    edit_cifar_batch(batch, labels=[10 + i % 10 for i in range(40)])
    cfg = job("cifar10", path=str(c10))
    message = refused(cfg)
    assert message == f"cifar10 file {batch}: labels from 10 to 19, expected 0 to 9 (10 classes)"
    same_from_loader(cfg, message)


def test_cifar100_fine_labels_checked_against_the_coarse_classes(tmp_path):
    """data.label_mode=coarse has 20 classes: fine labels under the coarse key are refused."""
    c100 = write_cifar100(tmp_path / "c100")
    fine = local_arrays("cifar100", str(c100)).y_test
    edit_cifar_batch(c100 / "test", coarse_labels=list(fine))
    message = refused(job("cifar100", path=str(c100), label_mode="coarse"))
    assert message.endswith("expected 0 to 19 (20 classes)") and "cifar-100-python/test" in message
    check_data(job("cifar100", path=str(c100), label_mode="fine"))  # its fine labels are good


def test_mnist_labels_outside_the_classes(idx):
    labels = idx / "t10k-labels-idx1-ubyte"
    write_idx_file(labels, np.arange(20) % 12)  # 10 and 11 among them
    cfg = job("mnist", path=str(idx))
    message = refused(cfg)
    assert message == f"mnist file {labels}: labels from 0 to 11, expected 0 to 9 (10 classes)"
    same_from_loader(cfg, message)


def test_idx_images_and_labels_of_different_counts(idx):
    labels = idx / "train-labels-idx1-ubyte"
    write_idx_file(labels, np.arange(90) % 10)
    assert refused(job("mnist", path=str(idx))) == f"mnist file {labels}: 100 images but 90 labels"


def test_idx_images_of_the_wrong_size(idx):
    images = idx / "train-images-idx3-ubyte"
    write_idx_file(images, np.zeros((100, 32, 32), np.uint8))
    message = refused(job("fashion_mnist", path=str(idx)))
    assert message == f"fashion_mnist file {images}: images of 32x32, expected 28x28"


def test_a_truncated_cifar_batch(c10):
    batch = c10 / "data_batch_5"
    truncate(batch, 0.6)
    message = refused(job("cifar10", path=str(c10)))
    assert message.startswith(f"cifar10 file {batch}: not a CIFAR python batch (")


def test_pixels_of_the_wrong_dtype(c10):
    batch = c10 / "test_batch"
    edit_cifar_batch(batch, data=np.zeros((20, 3072), np.float32))
    message = refused(job("cifar10", path=str(c10)))
    assert message == f"cifar10 file {batch}: pixels of dtype float32, expected uint8"


def test_an_idx_file_with_a_bad_magic_number(idx):
    labels = idx / "train-labels-idx1-ubyte"
    labels.write_bytes(b"\x00\x00\x0d\x01" + labels.read_bytes()[4:])  # 0x0d: float data
    message = refused(job("mnist", path=str(idx)))
    assert message == f"mnist file {labels}: not an IDX file of unsigned bytes"


@pytest.mark.parametrize("keep", [0.5, 0.001])  # the data, or the header itself
def test_a_truncated_idx_file(idx, keep):
    images = idx / "t10k-images-idx3-ubyte"
    truncate(images, keep)
    message = refused(job("mnist", path=str(idx)))
    assert message.startswith(f"mnist file {images}: truncated")


def test_a_truncated_gzip_and_a_truncated_tarball(tmp_path, c10):
    root = write_idx(tmp_path / "gz", gz=True)
    truncate(root / "train-images-idx3-ubyte.gz", 0.5)
    message = refused(job("mnist", path=str(root)))
    assert message.startswith(f"mnist file {root / 'train-images-idx3-ubyte.gz'}: truncated")
    tar = tarball(c10, "cifar-10-python.tar.gz")
    truncate(tar, 0.5)
    assert "truncated or corrupt" in refused(job("cifar10", path=str(tar)))


# ---------------------------------------------------------------- the batch and the split


def test_a_batch_larger_than_the_training_split_of_digits():
    """The issue's command line, composed as the entry point composes it."""
    (cfg,) = compose_jobs(["data=digits", "trainer.batch_size=100000"]).jobs
    assert refused(cfg) == (
        "trainer.batch_size=100000 is larger than the training split (1437 images of digits); "
        "use trainer.batch_size=1437 or less"
    )
    check_data(job("digits", batch_size=1437))  # exactly the split: one full batch


def test_a_batch_larger_than_the_split_of_a_local_copy_or_synthetic_data(c10):
    # 200 images, 0.1 held out: 180 for training; all 200 at data.val_fraction=0
    message = refused(job("cifar10", batch_size=181, path=str(c10), val_fraction=0.1))
    assert message == (
        "trainer.batch_size=181 is larger than the training split (180 images of cifar10); "
        "use trainer.batch_size=180 or less (or lower data.val_fraction=0.1)"
    )
    check_data(job("cifar10", batch_size=200, path=str(c10), val_fraction=0.0))
    message = refused(job("synthetic", batch_size=100, num_samples=96))
    assert "training split (76 images of synthetic)" in message


def test_the_training_split_is_the_one_split_makes():
    """`split_sizes` is scikit-learn's rule for a fractional test size, which `split` used
    before it took `split_sizes`'s count (the same rule stratified or not)."""
    for n in (20, 97, 1797, 50_000):
        y = np.arange(n)
        for fraction in (0.05, 0.1, 0.2, 0.3, 1 / 3, 0.55, 0.999):
            try:
                x_train, _ = train_test_split(y, test_size=fraction, random_state=0)
            except ValueError:  # "the resulting train set will be empty"
                x_train = []
            assert split_sizes(n, fraction)[0] == len(x_train), (n, fraction)
    assert split_sizes(1797, 0.0) == (1797, 0)


def test_a_split_that_cannot_be_stratified():
    """scikit-learn refuses these with a traceback mid-run; the check, in one line."""
    message = refused(job("synthetic", batch_size=4, num_samples=20, val_fraction=0.2))
    assert message == (
        "data.val_fraction=0.2 on 20 synthetic images: a validation split of 4 images for "
        "10 classes; a stratified split needs one image per class in each"
    )
    message = refused(job("synthetic", batch_size=1, num_samples=15, val_fraction=0.5))
    assert "a class with one image" in message


# ---------------------------------------------------------------- sweeps and costs


def test_a_sweep_reads_each_dataset_once(c10, monkeypatch):
    reads = []
    real = files.local_train_labels
    monkeypatch.setattr(files, "local_train_labels", lambda *a: reads.append(a) or real(*a))
    jobs = [job("cifar10", batch_size=b, path=str(c10), val_fraction=0.1) for b in (16, 32) * 3]
    for seed, cfg in enumerate(jobs):
        cfg.seed = seed  # seeds and models do not change what the check finds
    check_jobs_data([*jobs, job("digits")])
    assert len(reads) == 1
    assert len({use_of(cfg) for cfg in jobs}) == 2
    with pytest.raises(DataError, match="batch_size=181"):  # any job's failure stops them all
        check_jobs_data([*jobs, job("cifar10", batch_size=181, path=str(c10), val_fraction=0.1)])


def _python(code: str, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, **env},
        timeout=300,
    )


def test_checking_local_or_cached_data_imports_no_tensorflow(c10, tmp_path):
    cache = tmp_path / "keras" / "datasets"
    (cache / "fashion-mnist").mkdir(parents=True)
    for name in files.SPECS["fashion_mnist"].keras_files:  # what Keras's cache would hold
        (cache / name).write_bytes(b"")
    code = f"""
        import sys
        from omegaconf import OmegaConf
        from resnet_exp.data.check import check_jobs_data
        jobs = [
            {{"data": {{"name": "cifar10", "path": {str(c10)!r}, "label_mode": "fine",
                       "val_fraction": 0.1}}, "trainer": {{"batch_size": 64}}}},
            {{"data": {{"name": "fashion_mnist", "path": None, "label_mode": "fine",
                       "val_fraction": 0.1}}, "trainer": {{"batch_size": 64}}}},
            {{"data": {{"name": "digits", "path": None, "label_mode": "fine",
                       "val_fraction": 0.2}}, "trainer": {{"batch_size": 64}}}},
        ]
        check_jobs_data([OmegaConf.create(j) for j in jobs])
        loaded = [m for m in ("tensorflow", "keras") if m in sys.modules]
        print("loaded:", loaded)
    """
    done = _python(code, KERAS_HOME=str(tmp_path / "keras"))
    assert done.returncode == 0, done.stderr
    assert "loaded: []" in done.stdout


@pytest.mark.slow  # Keras's import (TensorFlow) in the subprocess: about 10 s
def test_an_offline_download_fails_in_one_line_before_anything(tmp_path):
    """Nothing cached and no network (a proxy that refuses): the check tries the download."""
    code = """
        from omegaconf import OmegaConf
        from resnet_exp.data.check import check_jobs_data_or_exit
        job = {"data": {"name": "cifar100", "path": None, "label_mode": "fine",
                        "val_fraction": 0.1}, "trainer": {"batch_size": 64}}
        check_jobs_data_or_exit([OmegaConf.create(job)])
    """
    proxy = "http://127.0.0.1:9"  # the discard port: nothing listens, the connection is refused
    done = _python(code, KERAS_HOME=str(tmp_path / "keras"), https_proxy=proxy, HTTPS_PROXY=proxy)
    assert done.returncode == 2
    lines = [line for line in done.stderr.splitlines() if line.startswith("data error:")]
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(
        f"data error: cifar100: not in the Keras cache ({tmp_path / 'keras' / 'datasets'}) "
        "and the download failed (URL fetch failure"
    )
    assert lines[0].endswith("(a folder holding train, test, or cifar-100-python.tar.gz)")


# ---------------------------------------------------------------- end to end: one line, no run

BROKEN = {
    "rows of 3000": lambda c10: edit_cifar_batch(
        c10 / "data_batch_1", data=np.zeros((40, 3000), np.uint8), labels=[0] * 40
    ),
    "labels 10-19": lambda c10: edit_cifar_batch(
        c10 / "data_batch_1", labels=list(range(10, 20)) * 4
    ),
    "truncated": lambda c10: truncate(c10 / "test_batch"),
}


@pytest.mark.slow  # the entry point in a subprocess, per case
@pytest.mark.parametrize(
    "case, mode", [*((case, "run") for case in BROKEN), ("labels 10-19", "sweep")]
)
def test_bad_data_is_one_line_and_leaves_no_run(case, mode, c10, tmp_path):
    """The entry point checks the data before the store is opened: exit 2, one line naming
    the file, and no store file at all (so no FAILED run in it)."""
    from conftest import run_train

    BROKEN[case](c10)
    store = tmp_path / "never-opened.db"
    sweep = ["-m", "model.residual=true,false"] if mode == "sweep" else []
    result = run_train(
        *sweep,
        "data=cifar10",
        f"data.path={c10}",
        "model.depth=8",
        "trainer.batch_size=16",
        env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"},
        cwd=tmp_path,
    )
    assert result.returncode == 2, result.stderr[-2000:]
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("data error: cifar10 file "), result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert not store.exists()


def test_a_batch_larger_than_the_split_is_refused_by_the_entry_point(tmp_path):
    from conftest import run_train

    store = tmp_path / "never-opened.db"
    result = run_train(
        "trainer.batch_size=100000", env={"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}
    )
    assert result.returncode == 2
    assert result.stderr.strip() == (
        "data error: trainer.batch_size=100000 is larger than the training split "
        "(1437 images of digits); use trainer.batch_size=1437 or less"
    )
    assert not store.exists()


def test_warm_up_and_milestones_must_fall_inside_a_run_set_by_epochs():
    """Digits' 1,437 training images in batches of 128 are 12 iterations an epoch: 2 epochs
    are 24, so a warm-up of 24 is the whole run and a milestone at 24 never comes."""

    def with_schedule(**schedule) -> DictConfig:
        cfg = job("digits", batch_size=128)
        cfg.trainer.epochs, cfg.trainer.steps = 2, None
        cfg.optim = {"schedule": {"warmup_steps": 0, "milestone_steps": None, **schedule}}
        return cfg

    check_data(with_schedule(warmup_steps=23, milestone_steps=[10, 23]))
    assert refused(with_schedule(warmup_steps=24)).startswith(
        "optim.schedule.warmup_steps=24: must be below the run's 24 iterations (2 epochs of 128)"
    )
    assert refused(with_schedule(milestone_steps=[10, 24])).startswith(
        "optim.schedule.milestone_steps=[10, 24]: 24 is not below the run's 24 iterations"
    )
