"""Image datasets from files the tests write in the real formats: loading, splits, pipelines."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
from real_formats import tarball, write_cifar10, write_cifar100, write_idx

from resnet_exp.config.schema import DataConfig
from resnet_exp.data import files as datasets
from resnet_exp.data.files import DatasetUnavailable, local_arrays
from resnet_exp.data.pipelines import make_pipelines
from resnet_exp.data.splits import load_dataset, probe_batch
from resnet_exp.run.command_line import validate


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """One tiny copy of each format, shared by the module's tests (read-only)."""
    root = tmp_path_factory.mktemp("data")
    c10 = write_cifar10(root / "c10", per_batch=40)
    c100 = write_cifar100(root / "c100")
    return {
        "cifar10": c10,
        "cifar10_tar": tarball(c10, "cifar-10-python.tar.gz"),
        "cifar100": c100,
        "cifar100_tar": tarball(c100, "cifar-100-python.tar.gz"),
        "idx_gz": write_idx(root / "idx_gz", gz=True),
        "idx": write_idx(root / "idx", gz=False),
    }


def _paired(x: np.ndarray, y: np.ndarray) -> bool:
    """The generated images carry their label in one pixel: still paired with it?"""
    return bool((x[:, 0, 0, 0] == y).all())


@pytest.mark.parametrize("where", ["folder", "parent", "tarball"])
def test_cifar10_from_folder_its_parent_or_the_tarball(files, where):
    path = {
        "folder": files["cifar10"],
        "parent": files["cifar10"].parent,
        "tarball": files["cifar10_tar"],
    }[where]
    a = local_arrays("cifar10", str(path))
    assert a.x_train.shape == (200, 32, 32, 3) and a.x_test.shape == (20, 32, 32, 3)
    assert a.x_train.dtype == a.x_test.dtype == np.uint8
    assert a.y_train.dtype == a.y_test.dtype == np.int64
    assert _paired(a.x_train, a.y_train) and _paired(a.x_test, a.y_test)
    assert set(a.y_train) == set(range(10))


def test_cifar_pixels_are_decoded_channels_last(files):
    """CIFAR rows are 1024 R, then 1024 G, then 1024 B values, row-major."""
    import pickle

    raw = pickle.loads((files["cifar10"] / "data_batch_1").read_bytes(), encoding="bytes")
    row = np.asarray(raw[b"data"][0])
    x = local_arrays("cifar10", str(files["cifar10"])).x_train[0]
    np.testing.assert_array_equal(x[..., 1].ravel(), row[1024:2048])
    np.testing.assert_array_equal(x[2, :, 2], row[2048 + 2 * 32 : 2048 + 3 * 32])


@pytest.mark.parametrize("key", ["cifar100", "cifar100_tar"])
def test_cifar100_fine_and_coarse_labels(files, key):
    fine = local_arrays("cifar100", str(files[key]), "fine")
    coarse = local_arrays("cifar100", str(files[key]), "coarse")
    assert fine.y_train.max() == 99 and coarse.y_train.max() == 19
    assert _paired(fine.x_train, fine.y_train)
    np.testing.assert_array_equal(coarse.y_train, fine.y_train // 5)  # as the files say
    np.testing.assert_array_equal(coarse.y_test, fine.y_test // 5)
    assert datasets.num_classes("cifar100", "coarse") == 20


@pytest.mark.parametrize("key", ["idx_gz", "idx"])
@pytest.mark.parametrize("name", ["mnist", "fashion_mnist"])
def test_idx_files_gzipped_or_not(files, key, name):
    a = local_arrays(name, str(files[key]))
    assert a.x_train.shape == (100, 28, 28, 1) and a.x_test.shape == (20, 28, 28, 1)
    assert a.x_train.dtype == a.x_test.dtype == np.uint8
    assert a.y_train.dtype == a.y_test.dtype == np.int64
    assert _paired(a.x_train, a.y_train) and _paired(a.x_test, a.y_test)


def test_a_broken_folder_names_the_missing_file(files, tmp_path):
    folder = write_cifar10(tmp_path / "broken")
    (folder / "data_batch_3").unlink()
    problem = datasets.missing_file("cifar10", str(folder))
    assert "data_batch_3 missing" in problem and "\n" not in problem
    with pytest.raises(DatasetUnavailable, match="data_batch_3"):
        local_arrays("cifar10", str(folder))
    # at validation, before anything runs, as one line naming the key and the file
    line = validate(["data=cifar10", f"data.path={folder}"])
    assert line.startswith(f"data.path={folder}: data_batch_3 missing")
    assert "cifar-10-python.tar.gz" in line  # and how a complete copy looks
    assert validate(["data=mnist", f"data.path={tmp_path / 'nowhere'}"]).endswith(
        "no such file or directory"
    )


def test_a_corrupt_file_is_a_one_line_error(tmp_path):
    root = write_idx(tmp_path / "idx", gz=False)
    (root / "train-labels-idx1-ubyte").write_bytes(b"\x00\x00\x0d\x01" + b"\x00" * 8)
    with pytest.raises(DatasetUnavailable, match="not an IDX file of unsigned bytes"):
        local_arrays("mnist", str(root))
    root = write_cifar10(tmp_path / "c10")
    (root / "test_batch").write_bytes(gzip.compress(b"not a pickle"))
    with pytest.raises(DatasetUnavailable, match="not a CIFAR python batch"):
        local_arrays("cifar10", str(root))


@pytest.mark.parametrize(
    "args, expected",
    [
        (["data=cifar10", "data.label_mode=coarse"], "only data=cifar100 has coarse labels"),
        (["data=digits", "data.path=/tmp"], "data=digits reads no files"),
        (["data=digits", "data.augment=true"], "only image datasets"),
        (["trainer.steps=0"], "trainer.steps=0: must be > 0"),
        (
            ["trainer.steps=100", "optim.schedule.milestone_steps=[50,100]"],
            "must be below trainer.steps=100",
        ),
        (["optim.schedule.milestone_steps=[50,20]"], "increasing positive iterations"),
        (["data=cifar101"], "data=cifar101: no such option"),
    ],
)
def test_data_and_length_config_errors(args, expected):
    assert expected in validate(args)


def test_split_is_stratified_seeded_and_normalised_from_train_only(files):
    path = str(files["cifar10"])
    d = load_dataset(DataConfig(name="cifar10", val_fraction=0.1, path=path), seed=0)
    assert (len(d.x_train), len(d.x_val), len(d.x_test)) == (180, 20, 20)
    assert d.x_train.dtype == np.uint8 and d.num_classes == 10
    assert np.bincount(d.y_val, minlength=10).tolist() == [2] * 10  # stratified
    assert _paired(d.x_train, d.y_train) and _paired(d.x_val, d.y_val)
    again = load_dataset(DataConfig(name="cifar10", val_fraction=0.1, path=path), seed=0)
    other = load_dataset(DataConfig(name="cifar10", val_fraction=0.1, path=path), seed=1)
    np.testing.assert_array_equal(d.x_val, again.x_val)
    assert not np.array_equal(d.x_val, other.x_val)
    pixels = d.x_train.reshape(-1, 3).astype(np.float64)
    np.testing.assert_allclose(d.mean, pixels.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(d.std, pixels.std(axis=0), rtol=1e-5)
    everything = np.concatenate([d.x_train, d.x_val]).reshape(-1, 3).mean(axis=0)
    assert not np.allclose(d.mean, everything, rtol=1e-6)  # the val images are left out
    whole = load_dataset(DataConfig(name="cifar10", val_fraction=0.0, path=path), seed=0)
    assert len(whole.x_train) == 200 and len(whole.x_val) == 0


def _first_batch(dataset) -> np.ndarray:
    return next(iter(dataset))[0].numpy()


def test_pipelines_normalise_in_tf_data_and_augment_deterministically(files):
    d = load_dataset(
        DataConfig(name="cifar10", val_fraction=0.1, path=str(files["cifar10"])), seed=0
    )
    train, val = make_pipelines(d, batch_size=16, seed=3)
    x_val = _first_batch(val)
    assert x_val.dtype == np.float32 and x_val.shape == (16, 32, 32, 3)
    np.testing.assert_allclose(x_val, d.normalise(d.x_val[:16]), rtol=1e-6, atol=1e-6)

    aug, _ = make_pipelines(d, batch_size=16, seed=3, augment=True)
    aug_again, _ = make_pipelines(d, batch_size=16, seed=3, augment=True)
    first, second = [b[0].numpy() for b in aug.take(1)], [b[0].numpy() for b in aug.take(1)]
    assert first[0].shape == (16, 32, 32, 3) and first[0].dtype == np.float32
    # the same seed gives the same first epoch; each later epoch draws new crops and order
    np.testing.assert_array_equal(first[0], _first_batch(aug_again))
    assert not np.array_equal(first[0], second[0])
    augmented = first[0]
    assert not np.array_equal(_first_batch(train), augmented)
    # a crop of the zero-padded image: pixels are the originals' or the padding's
    originals = set(np.unique(d.normalise(d.x_train)).round(4)) | set(
        np.round(d.normalise(np.zeros((1, 1, 1, 3), np.uint8)).ravel(), 4)
    )
    assert set(np.unique(augmented).round(4)) <= originals


def test_probe_batch_is_fixed_unaugmented_and_normalised_like_training(files):
    d = load_dataset(
        DataConfig(name="cifar10", val_fraction=0.1, path=str(files["cifar10"])), seed=0
    )
    x, y = probe_batch(d, 16, seed=0)
    x2, _ = probe_batch(d, 16, seed=0)
    np.testing.assert_array_equal(x, x2)
    assert x.dtype == np.float32
    # every probe image is one training image, normalised, not cropped or flipped
    normalised = d.normalise(d.x_train)
    for image, label in zip(x, y, strict=True):
        match = np.flatnonzero(np.abs(normalised - image).max(axis=(1, 2, 3)) < 1e-6)
        assert len(match) == 1 and d.y_train[match[0]] == label
