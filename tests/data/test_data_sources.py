"""User data: .npz arrays and folders of images, written for real into tmp_path."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from exitsearch.data import ArrayDataset, Preprocess, load_image_folder, load_npz
from exitsearch.errors import DataError


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def _save_npz(path: Path, **arrays: np.ndarray) -> Path:
    np.savez(path, **arrays)
    return path


# ------------------------------------------------------------------------------------- npz
def test_npz_uint8_nhw(tmp_path, rng):
    x = rng.integers(0, 256, (12, 9, 7), dtype=np.uint8)
    y = rng.integers(0, 4, 12)
    train, test = load_npz(_save_npz(tmp_path / "d.npz", x=x, y=y))
    assert test is None
    assert train.x.shape == (12, 1, 9, 7) and train.x.dtype == np.uint8
    assert np.array_equal(train.x[:, 0], x)
    assert np.array_equal(train.y, y) and train.y.dtype == np.int64
    assert train.classes == tuple(str(i) for i in range(int(y.max()) + 1))


def test_npz_nhwc_becomes_nchw(tmp_path, rng):
    x = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    train, _ = load_npz(_save_npz(tmp_path / "d.npz", x=x, y=np.arange(5) % 2))
    assert train.x.shape == (5, 3, 8, 6)
    assert np.array_equal(train.x, x.transpose(0, 3, 1, 2))


def test_npz_nchw_is_kept(tmp_path, rng):
    x = rng.integers(0, 256, (5, 3, 8, 6), dtype=np.uint8)
    train, _ = load_npz(_save_npz(tmp_path / "d.npz", x=x, y=np.arange(5) % 2))
    assert np.array_equal(train.x, x)


def test_npz_floats_in_unit_range_are_scaled(tmp_path):
    x = np.array([0.0, 0.5, 1.0, 0.2], dtype=np.float32).reshape(1, 1, 2, 2).repeat(3, 0)
    train, _ = load_npz(_save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 1])))
    assert train.x.dtype == np.uint8
    assert train.x[0, 0].ravel().tolist() == [0, 128, 255, 51]


def test_npz_with_test_arrays_and_class_names(tmp_path, rng):
    path = _save_npz(
        tmp_path / "d.npz",
        x=rng.integers(0, 256, (6, 4, 4), dtype=np.uint8),
        y=np.array([0, 1, 2, 0, 1, 2]),
        x_test=rng.integers(0, 256, (3, 4, 4), dtype=np.uint8),
        y_test=np.array([2, 1, 0]),
        classes=np.array(["cat", "dog", "emu"]),
    )
    train, test = load_npz(path)
    assert test is not None and len(test) == 3 and test.x.shape == (3, 1, 4, 4)
    assert train.classes == test.classes == ("cat", "dog", "emu")
    assert test.y.tolist() == [2, 1, 0]


def test_npz_class_count_covers_test_labels(tmp_path, rng):
    path = _save_npz(
        tmp_path / "d.npz",
        x=rng.integers(0, 256, (4, 4, 4), dtype=np.uint8),
        y=np.array([0, 1, 1, 0]),
        x_test=rng.integers(0, 256, (2, 4, 4), dtype=np.uint8),
        y_test=np.array([3, 0]),
    )
    train, test = load_npz(path)
    assert train.num_classes == test.num_classes == 4


def test_npz_missing_y(tmp_path, rng):
    path = _save_npz(tmp_path / "d.npz", x=rng.integers(0, 256, (3, 4, 4), dtype=np.uint8))
    with pytest.raises(DataError, match="missing array") as info:
        load_npz(path)
    assert str(path) in str(info.value)


def test_npz_x_test_without_y_test(tmp_path, rng):
    x = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    path = _save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1, 0]), x_test=x)
    with pytest.raises(DataError, match="y_test"):
        load_npz(path)


@pytest.mark.parametrize("bad", [-0.1, 1.5, 255.0])
def test_npz_floats_out_of_range(tmp_path, bad):
    x = np.zeros((2, 4, 4), dtype=np.float64)
    x[1, 2, 3] = bad
    path = _save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError, match=r"\[0, 1\]"):
        load_npz(path)


@pytest.mark.filterwarnings("ignore:invalid value encountered in cast:RuntimeWarning")
def test_npz_float_nan_is_refused(tmp_path):
    x = np.zeros((2, 4, 4), dtype=np.float32)
    x[0, 1, 1] = np.nan
    path = _save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError):
        load_npz(path)


def test_npz_labels_must_be_integers(tmp_path, rng):
    x = rng.integers(0, 256, (2, 4, 4), dtype=np.uint8)
    path = _save_npz(tmp_path / "d.npz", x=x, y=np.array([0.0, 1.0]))
    with pytest.raises(DataError, match="integer"):
        load_npz(path)


def test_npz_count_mismatch(tmp_path, rng):
    x = rng.integers(0, 256, (3, 4, 4), dtype=np.uint8)
    path = _save_npz(tmp_path / "d.npz", x=x, y=np.array([0, 1]))
    with pytest.raises(DataError, match="3 images"):
        load_npz(path)


def test_npz_missing_and_unreadable(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_npz(tmp_path / "none.npz")
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(DataError, match=re.escape(str(bad))):
        load_npz(bad)


# ------------------------------------------------------------------------------ image folder
def _write_images(root: Path, per_class: dict[str, int], size: int = 10, mode: str = "L") -> None:
    rng = np.random.default_rng(7)
    for name, n in per_class.items():
        (root / name).mkdir(parents=True)
        for i in range(n):
            shape = (size, size) if mode == "L" else (size, size, 3)
            arr = rng.integers(0, 256, shape, dtype=np.uint8)
            Image.fromarray(arr).save(root / name / f"img{i}.png")


def _folder(path, size, channels):
    """The folder's splits with images preprocessed to ``size`` squares (no crop)."""
    src = load_image_folder(path)
    p = Preprocess((channels, size, size), mean=(0.5,) * channels, std=(0.5,) * channels)
    wrap = lambda d: None if d is None else d.with_preprocess(p)  # noqa: E731
    return wrap(src.train), wrap(src.test)


def _pixels(ds):
    return ds.batch(np.arange(len(ds))).numpy()


def test_image_folder_without_test_split(tmp_path):
    _write_images(tmp_path, {"dog": 2, "cat": 3})
    (tmp_path / "cat" / "notes.txt").write_text("not an image, ignored")
    train, test = _folder(tmp_path, 6, 1)
    assert test is None
    assert train.classes == ("cat", "dog")  # sorted folder names are the classes
    assert _pixels(train).shape == (5, 1, 6, 6) and _pixels(train).dtype == np.uint8
    assert train.y.tolist() == [0, 0, 0, 1, 1]
    assert train.ids().tolist()[:2] == ["cat/img0.png", "cat/img1.png"]


def test_image_folder_pixels_are_the_images(tmp_path):
    (tmp_path / "a").mkdir()
    arr = np.arange(64, dtype=np.uint8).reshape(8, 8) * 3
    Image.fromarray(arr).save(tmp_path / "a" / "x.png")
    train, _ = _folder(tmp_path, 8, 1)
    assert np.array_equal(_pixels(train)[0, 0], arr)


def test_image_folder_with_train_and_test(tmp_path):
    _write_images(tmp_path / "train", {"a": 3, "b": 2}, mode="RGB")
    _write_images(tmp_path / "test", {"a": 1, "b": 1}, mode="RGB")
    train, test = _folder(tmp_path, 4, 3)
    assert _pixels(train).shape == (5, 3, 4, 4)
    assert test is not None and _pixels(test).shape == (2, 3, 4, 4)
    assert test.classes == train.classes == ("a", "b")
    assert test.y.tolist() == [0, 1]


def test_image_folder_train_and_val_is_imagenet_layout(tmp_path):
    _write_images(tmp_path / "train", {"a": 3, "b": 2})
    _write_images(tmp_path / "val", {"a": 1, "b": 1})
    src = load_image_folder(tmp_path)
    assert src.val is None and src.test is not None and len(src.test) == 2
    _write_images(tmp_path / "test", {"a": 2, "b": 2})
    src = load_image_folder(tmp_path)
    assert len(src.val) == 2 and len(src.test) == 4


def test_image_folder_grey_to_rgb(tmp_path):
    _write_images(tmp_path, {"a": 1, "b": 1}, mode="L")
    train, _ = _folder(tmp_path, 5, 3)
    px = _pixels(train)
    assert px.shape == (2, 3, 5, 5)
    assert np.array_equal(px[:, 0], px[:, 1])


def test_unreadable_image_names_the_file(tmp_path):
    _write_images(tmp_path, {"a": 2, "b": 1})
    bad = tmp_path / "b" / "broken.png"
    bad.write_bytes(b"\x89PNG but then nothing useful")
    train, _ = _folder(tmp_path, 4, 1)  # indexing reads names only; decoding finds it
    with pytest.raises(DataError, match=re.escape(str(bad))):
        _pixels(train)


def test_test_folder_with_other_classes(tmp_path):
    _write_images(tmp_path / "train", {"a": 1, "b": 1})
    _write_images(tmp_path / "test", {"a": 1, "c": 1})
    with pytest.raises(DataError, match="differ"):
        load_image_folder(tmp_path)


def test_folder_errors(tmp_path):
    with pytest.raises(DataError, match="not found"):
        load_image_folder(tmp_path / "missing")
    with pytest.raises(DataError, match="no class sub-folders"):
        load_image_folder(tmp_path)
    (tmp_path / "empty_class").mkdir()
    with pytest.raises(DataError, match="hold no images"):
        load_image_folder(tmp_path)
    _write_images(tmp_path / "more", {"a": 1})
    train, _ = _folder(tmp_path / "more", 4, 1)
    with pytest.raises(DataError, match="1 or 3"):
        train.with_preprocess(Preprocess((2, 4, 4), mean=(0.5,) * 2, std=(0.5,) * 2)).batch([0])


def test_an_empty_class_folder_is_named_not_counted(tmp_path):
    _write_images(tmp_path, {"a": 2, "b": 2})
    (tmp_path / "c_empty").mkdir()
    with pytest.raises(DataError, match=re.escape(str(tmp_path / "c_empty")) + ".*without images"):
        load_image_folder(tmp_path)
    # a held-out split may lack one of training's classes
    tree = tmp_path / "tree"
    _write_images(tree / "train", {"a": 2, "b": 2})
    _write_images(tree / "test", {"a": 1})
    (tree / "test" / "b").mkdir()
    data = load_image_folder(tree)
    assert data.test is not None and len(data.test) == 1


# ---------------------------------------------------------------------------- ArrayDataset
def test_array_dataset_checks_itself():
    x = np.zeros((2, 1, 3, 3), dtype=np.uint8)
    with pytest.raises(DataError, match="N x C x H x W"):
        ArrayDataset(x[:, 0], np.array([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match="uint8"):
        ArrayDataset(x.astype(np.float32), np.array([0, 1]), ("a", "b"))
    with pytest.raises(DataError, match="labels"):
        ArrayDataset(x, np.array([0, 1, 1]), ("a", "b"))
    with pytest.raises(DataError, match=r"0\.\.1"):
        ArrayDataset(x, np.array([0, 2]), ("a", "b"))


def test_fingerprint_follows_content():
    x = np.zeros((2, 1, 3, 3), dtype=np.uint8)
    a = ArrayDataset(x, np.array([0, 1]), ("a", "b"))
    b = ArrayDataset(x.copy(), np.array([0, 1]), ("a", "b"))
    assert a.fingerprint() == b.fingerprint()
    x2 = x.copy()
    x2[1, 0, 2, 2] = 1
    assert ArrayDataset(x2, np.array([0, 1]), ("a", "b")).fingerprint() != a.fingerprint()
    assert ArrayDataset(x, np.array([1, 0]), ("a", "b")).fingerprint() != a.fingerprint()
    assert ArrayDataset(x, np.array([0, 1]), ("a", "c")).fingerprint() != a.fingerprint()
    sub = a.subset(np.array([1]))
    assert len(sub) == 1 and sub.y.tolist() == [1]
