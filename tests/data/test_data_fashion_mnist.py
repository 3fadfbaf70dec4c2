"""Fashion-MNIST from its IDX files: the real Debian copy, and damaged copies of it."""

from __future__ import annotations

import gzip
import re
import shutil
from pathlib import Path

import numpy as np
import pytest

from exitsearch.data import FASHION_MNIST_CLASSES, FASHION_MNIST_DIR, load_fashion_mnist
from exitsearch.data.idx import read_idx
from exitsearch.errors import DataError

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"


def test_real_files_load(fmnist):
    train, test = fmnist
    assert (len(train), len(test)) == (60_000, 10_000)
    assert train.x.shape == (60_000, 1, 28, 28) and test.x.shape == (10_000, 1, 28, 28)
    assert train.x.dtype == np.uint8
    assert train.classes == FASHION_MNIST_CLASSES and train.num_classes == 10
    for data in (train, test):
        assert set(np.unique(data.y).tolist()) == set(range(10))
    # Fashion-MNIST is balanced: 6,000 training and 1,000 test images per class
    assert np.bincount(train.y).tolist() == [6_000] * 10
    assert np.bincount(test.y).tolist() == [1_000] * 10
    assert train.image_shape == (1, 28, 28)


def test_gzip_and_plain_idx_agree(tmp_path, fmnist):
    _, test = fmnist
    plain = tmp_path / TEST_LABELS
    plain.write_bytes(gzip.decompress((FASHION_MNIST_DIR / f"{TEST_LABELS}.gz").read_bytes()))
    assert np.array_equal(read_idx(plain, expect_ndim=1), test.y)
    assert np.array_equal(read_idx(FASHION_MNIST_DIR / f"{TEST_LABELS}.gz"), test.y)


def test_data_dir_pointing_to_copies(small_fmnist_dir, fmnist):
    train, test = load_fashion_mnist(small_fmnist_dir)
    assert len(train) == 600 and len(test) == 100
    assert np.array_equal(train.x, fmnist[0].x[:600])
    assert np.array_equal(test.y, fmnist[1].y[:100])
    assert str(small_fmnist_dir) in train.origin


def test_gzip_copy_of_real_labels_is_read(tmp_path):
    dst = tmp_path / f"{TEST_LABELS}.gz"
    shutil.copy(FASHION_MNIST_DIR / dst.name, dst)
    labels = read_idx(dst, expect_ndim=1)
    assert labels.shape == (10_000,) and labels.max() == 9


def test_truncated_gzip_file_names_the_file(tmp_path):
    dst = tmp_path / f"{TEST_LABELS}.gz"
    data = (FASHION_MNIST_DIR / dst.name).read_bytes()
    dst.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=re.escape(str(dst))):
        read_idx(dst)


def test_truncated_idx_file_names_the_file(fmnist_copy):
    path = fmnist_copy / TRAIN_IMAGES
    data = path.read_bytes()
    path.write_bytes(data[:-100])
    with pytest.raises(DataError, match="truncated") as info:
        load_fashion_mnist(fmnist_copy)
    assert str(path) in str(info.value)


def test_truncated_header_names_the_file(tmp_path):
    path = tmp_path / TRAIN_IMAGES
    path.write_bytes(bytes([0, 0, 8, 3, 0, 0]))
    with pytest.raises(DataError, match=re.escape(str(path))):
        read_idx(path)


def test_wrong_magic_names_the_file(fmnist_copy):
    path = fmnist_copy / TRAIN_LABELS
    data = bytearray(path.read_bytes())
    data[0:4] = b"\x1f\x8bAB"
    path.write_bytes(bytes(data))
    with pytest.raises(DataError, match="magic") as info:
        load_fashion_mnist(fmnist_copy)
    assert str(path) in str(info.value)


def test_missing_file_names_the_file(fmnist_copy):
    (fmnist_copy / TRAIN_LABELS).unlink()
    with pytest.raises(DataError, match="not found") as info:
        load_fashion_mnist(fmnist_copy)
    assert TRAIN_LABELS in str(info.value)


def test_missing_folder(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_fashion_mnist(tmp_path / "nowhere")


def test_label_count_mismatch_names_the_file(fmnist_copy, idx_writer):
    labels = read_idx(fmnist_copy / TRAIN_LABELS)
    idx_writer(fmnist_copy / TRAIN_LABELS, labels[:-1])
    with pytest.raises(DataError, match="labels") as info:
        load_fashion_mnist(fmnist_copy)
    assert str(fmnist_copy / TRAIN_LABELS) in str(info.value)
    assert str(len(labels) - 1) in str(info.value)


def test_mislabeled_file_names_the_file(fmnist_copy, idx_writer):
    labels = read_idx(fmnist_copy / TEST_LABELS).copy()
    labels[7] = 10
    idx_writer(fmnist_copy / TEST_LABELS, labels)
    with pytest.raises(DataError, match="label 10") as info:
        load_fashion_mnist(fmnist_copy)
    assert str(fmnist_copy / TEST_LABELS) in str(info.value)


def test_images_file_in_place_of_labels_is_refused(fmnist_copy):
    shutil.copy(fmnist_copy / TRAIN_IMAGES, fmnist_copy / TRAIN_LABELS)
    with pytest.raises(DataError, match="dimensions") as info:
        load_fashion_mnist(fmnist_copy)
    assert TRAIN_LABELS in str(info.value)


def test_padded_idx_file_is_refused(tmp_path: Path, idx_writer):
    path = idx_writer(tmp_path / "labels", np.arange(10, dtype=np.uint8))
    path.write_bytes(path.read_bytes() + b"\x00")
    with pytest.raises(DataError, match="padded"):
        read_idx(path)


def test_read_idx_big_endian_types(tmp_path):
    # IDX stores multi-byte values big-endian; the reader returns native-order arrays
    values = np.array([[1, -2], [300, 40_000]], dtype=">i4")
    raw = bytes([0, 0, 0x0C, 2]) + np.array([2, 2], dtype=">u4").tobytes() + values.tobytes()
    path = tmp_path / "ints.idx"
    path.write_bytes(raw)
    out = read_idx(path)
    assert out.dtype.isnative
    assert out.tolist() == [[1, -2], [300, 40_000]]
