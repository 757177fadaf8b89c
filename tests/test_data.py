"""The datasets' split and standardisation: training statistics only, the same split per seed."""

from __future__ import annotations

import numpy as np
import pytest

from resnet_exp.config.schema import DataConfig
from resnet_exp.data.splits import load_dataset, probe_batch

KWARGS = {"input_shape": [4, 4, 1], "num_classes": 3, "num_samples": 60, "val_fraction": 0.25}


def load(name: str, seed: int, **fields) -> object:
    return load_dataset(DataConfig(name=name, **fields), seed=seed)


@pytest.mark.parametrize(("name", "kwargs"), [("synthetic", KWARGS), ("digits", {})])
def test_standardisation_uses_training_statistics_only(name, kwargs):
    raw = load(name, 1, standardize=False, **kwargs)
    std = load(name, 1, standardize=True, **kwargs)
    # The split does not depend on standardisation: same labels in the same order.
    np.testing.assert_array_equal(std.y_train, raw.y_train)
    np.testing.assert_array_equal(std.y_val, raw.y_val)
    mean = raw.x_train.astype("float64").mean()
    sd = raw.x_train.astype("float64").std()
    np.testing.assert_allclose(std.x_train, (raw.x_train - mean) / sd, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(std.x_val, (raw.x_val - mean) / sd, rtol=1e-4, atol=1e-5)
    # Train statistics standardise the training set exactly; any leak of the
    # validation set into them would move these.
    assert abs(float(std.x_train.astype("float64").mean())) < 1e-5
    assert float(std.x_train.astype("float64").std()) == pytest.approx(1.0, abs=1e-5)


def test_split_is_stratified_disjoint_and_fixed_by_the_seed():
    a = load("synthetic", 2, standardize=False, **KWARGS)
    again = load("synthetic", 2, standardize=False, **KWARGS)
    other = load("synthetic", 3, standardize=False, **KWARGS)
    np.testing.assert_array_equal(a.x_train, again.x_train)
    assert not np.array_equal(a.x_train, other.x_train)
    assert (len(a.x_train), len(a.x_val)) == (45, 15)
    assert np.bincount(a.y_val).tolist() == [5, 5, 5]  # stratified: 20 of each class, 25%
    train_rows = {row.tobytes() for row in a.x_train}
    assert not any(row.tobytes() in train_rows for row in a.x_val)


def test_probe_batch_is_a_fixed_subset_of_the_training_set():
    data = load("synthetic", 0, **KWARGS)
    x, y = probe_batch(data, 8, seed=0)
    x2, _ = probe_batch(data, 8, seed=0)
    np.testing.assert_array_equal(x, x2)
    train_rows = {
        row.tobytes(): label for row, label in zip(data.x_train, data.y_train, strict=True)
    }
    assert len({row.tobytes() for row in x}) == 8
    assert all(train_rows[row.tobytes()] == label for row, label in zip(x, y, strict=True))
