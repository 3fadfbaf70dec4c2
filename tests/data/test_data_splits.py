"""Deterministic train / validation / test splits of real data."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from exitsearch.data import DataSpec, load_splits
from exitsearch.errors import ConfigError, DataError


def _row_counts(x: np.ndarray) -> Counter:
    """Multiset of images, each image as its raw bytes (duplicates in the data are counted)."""
    flat = np.ascontiguousarray(x.reshape(len(x), -1))
    return Counter(flat.view(np.dtype((np.void, flat.shape[1]))).ravel().tolist())


@pytest.fixture(scope="module")
def default_splits(fmnist):
    return load_splits(DataSpec())


def test_default_sizes(default_splits):
    s = default_splits
    assert (len(s.train), len(s.val), len(s.test)) == (50_000, 10_000, 10_000)
    assert s.classes == s.train.classes and s.num_classes == 10
    assert s.get("val") is s.val
    with pytest.raises(ConfigError, match="unknown split"):
        s.get("holdout")


def test_train_and_val_partition_the_training_set(default_splits, fmnist):
    s = default_splits
    full = fmnist[0]
    # As multisets of images (Fashion-MNIST holds a few duplicate images), train + val is the
    # original training set exactly: nothing is lost, nothing is counted twice.
    assert _row_counts(s.train.x) + _row_counts(s.val.x) == _row_counts(full.x)
    # the labels travel with their images
    counts = np.bincount(s.train.y, minlength=10) + np.bincount(s.val.y, minlength=10)
    assert counts.tolist() == np.bincount(full.y).tolist()
    # the test split is the dataset's own test set, untouched
    assert np.array_equal(s.test.x, fmnist[1].x) and np.array_equal(s.test.y, fmnist[1].y)


def test_same_seed_same_split_other_seed_other_split(default_splits):
    again = load_splits(DataSpec(seed=0))
    assert np.array_equal(again.val.x, default_splits.val.x)
    assert np.array_equal(again.train.y, default_splits.train.y)
    assert again.fingerprint() == default_splits.fingerprint()

    other = load_splits(DataSpec(seed=1))
    assert not np.array_equal(other.val.x, default_splits.val.x)
    assert other.fingerprint() != default_splits.fingerprint()
    # the test set does not depend on the split seed
    assert other.test.fingerprint() == default_splits.test.fingerprint()


def test_limit_keeps_the_first_samples_of_each_split(tiny_splits, default_splits):
    s = tiny_splits
    assert (len(s.train), len(s.val), len(s.test)) == (256, 256, 256)
    for name in ("train", "val", "test"):
        assert np.array_equal(s.get(name).x, default_splits.get(name).x[:256])
        assert np.array_equal(s.get(name).y, default_splits.get(name).y[:256])
    assert s.fingerprint() != default_splits.fingerprint()


def test_val_size(fmnist):
    s = load_splits(DataSpec(val_size=1_000))
    assert (len(s.train), len(s.val), len(s.test)) == (59_000, 1_000, 10_000)


def test_data_dir_with_small_copies(small_fmnist_dir):
    s = load_splits(DataSpec(data_dir=str(small_fmnist_dir)))
    assert (len(s.train), len(s.val), len(s.test)) == (500, 100, 100)


def test_npz_without_test_set_is_carved_three_ways(tmp_path):
    rng = np.random.default_rng(3)
    n = 60
    # every image distinct: its first pixel is its index
    x = rng.integers(0, 256, (n, 2, 5, 5), dtype=np.uint8)
    x[:, 0, 0, 0] = np.arange(n)
    y = np.arange(n) % 3
    path = tmp_path / "d.npz"
    np.savez(path, x=x, y=y)
    s = load_splits(DataSpec(source=str(path), seed=5))
    assert (len(s.train), len(s.val), len(s.test)) == (40, 10, 10)
    ids = [set(part.x[:, 0, 0, 0].tolist()) for part in (s.train, s.val, s.test)]
    assert set().union(*ids) == set(range(n))
    assert sum(len(i) for i in ids) == n
    for part in (s.train, s.val, s.test):  # labels stay with their images
        assert np.array_equal(part.y, part.x[:, 0, 0, 0].astype(np.int64) % 3)
    assert load_splits(DataSpec(source=str(path), seed=5)).fingerprint() == s.fingerprint()


def test_image_folder_source(tmp_path):
    from PIL import Image

    for c in ("a", "b"):
        (tmp_path / c).mkdir()
        for i in range(6):
            Image.fromarray(np.full((9, 9), 40 * i, dtype=np.uint8)).save(tmp_path / c / f"{i}.png")
    s = load_splits(DataSpec(source=str(tmp_path)), image_size=4, channels=1)
    assert len(s.train) + len(s.val) + len(s.test) == 12
    assert s.train.batch([0, 1]).shape == (2, 1, 4, 4)
    assert s.classes == ("a", "b")


def test_spec_kinds_and_round_trip():
    assert DataSpec().kind == "fashion-mnist"
    assert DataSpec(source="x/y.npz").kind == "npz"
    assert DataSpec(source="x/images").kind == "folder"
    assert DataSpec(source="x/shard-000000.tar").kind == "folder"  # not there: the catch-all
    spec = DataSpec(source="a.npz", val_size=10, seed=3, limit=5)
    assert DataSpec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("kwargs", [{"val_size": 0}, {"limit": 0}, {"limit": -3}])
def test_spec_checks_itself(kwargs):
    with pytest.raises(ConfigError):
        DataSpec(**kwargs)


def test_missing_sources(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_splits(DataSpec(source=str(tmp_path / "nope")))
    with pytest.raises(DataError, match="not found"):
        load_splits(DataSpec(source=str(tmp_path / "nope.npz")))


def test_too_few_samples_to_split(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x=np.zeros((4, 3, 3), dtype=np.uint8), y=np.array([0, 1, 0, 1]))
    with pytest.raises(DataError, match="validation"):
        load_splits(DataSpec(source=str(path)))
