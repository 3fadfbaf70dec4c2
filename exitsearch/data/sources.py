"""Datasets that exitsearch reads: Fashion-MNIST (IDX), a folder of images, ``.npz`` arrays.

Every source yields :class:`ArrayDataset` objects holding uint8 images in NCHW layout and
integer labels; conversion to model input happens per batch (:mod:`exitsearch.data.transforms`).
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from exitsearch._io import sha256_of
from exitsearch.data.idx import read_idx
from exitsearch.errors import DataError

__all__ = [
    "FASHION_MNIST_CLASSES",
    "FASHION_MNIST_DIR",
    "ArrayDataset",
    "load_fashion_mnist",
    "load_image_folder",
    "load_npz",
]

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"}


@dataclass(frozen=True)
class ArrayDataset:
    """Images (uint8, N x C x H x W) with integer labels in ``[0, len(classes))``."""

    x: np.ndarray
    y: np.ndarray
    classes: tuple[str, ...]
    origin: str = ""
    _fingerprint: list[str] = field(default_factory=list, repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.x.ndim != 4:
            raise DataError(
                f"{self.origin}: images must be N x C x H x W, got shape {self.x.shape}"
            )
        if self.x.dtype != np.uint8:
            raise DataError(f"{self.origin}: images must be uint8 (0..255), got {self.x.dtype}")
        if self.y.ndim != 1 or len(self.y) != len(self.x):
            raise DataError(
                f"{self.origin}: {len(self.x)} images but labels of shape {self.y.shape}"
            )
        if len(self.y) and (self.y.min() < 0 or self.y.max() >= len(self.classes)):
            raise DataError(
                f"{self.origin}: labels must lie in 0..{len(self.classes) - 1}, "
                f"found {int(self.y.min())}..{int(self.y.max())}"
            )

    def __len__(self) -> int:
        return len(self.y)

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x.shape[1:])  # type: ignore[return-value]

    def fingerprint(self) -> str:
        """Content hash of images, labels and class names (cached after the first call)."""
        if not self._fingerprint:
            self._fingerprint.append(sha256_of(self.x, self.y.astype(np.int64), list(self.classes)))
        return self._fingerprint[0]

    def subset(self, index: np.ndarray) -> ArrayDataset:
        return ArrayDataset(self.x[index], self.y[index], self.classes, self.origin)


def load_fashion_mnist(data_dir: str | Path | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """Fashion-MNIST train and test sets from the four IDX files in ``data_dir``.

    Raises:
        DataError: a file is missing, truncated or its labels do not match its images.
    """
    root = Path(data_dir) if data_dir is not None else FASHION_MNIST_DIR
    if not root.is_dir():
        hint = " (install the Debian package dataset-fashion-mnist)" if data_dir is None else ""
        raise DataError(f"{root}: Fashion-MNIST folder not found{hint}")
    out = []
    for prefix in ("train", "t10k"):
        img_path = _find(root, f"{prefix}-images-idx3-ubyte")
        lbl_path = _find(root, f"{prefix}-labels-idx1-ubyte")
        images = read_idx(img_path, expect_ndim=3)
        labels = read_idx(lbl_path, expect_ndim=1)
        if len(images) != len(labels):
            raise DataError(
                f"{lbl_path}: holds {len(labels)} labels but {img_path.name} holds "
                f"{len(images)} images"
            )
        if labels.size and labels.max() >= len(FASHION_MNIST_CLASSES):
            raise DataError(
                f"{lbl_path}: label {int(labels.max())} found, expected 0..9 (mislabeled file?)"
            )
        out.append(
            ArrayDataset(
                images[:, None], labels.astype(np.int64), FASHION_MNIST_CLASSES, str(img_path)
            )
        )
    return out[0], out[1]


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    return root / f"{stem}.gz"


def load_npz(path: str | Path) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Arrays ``x`` (N x H x W, N x H x W x C or N x C x H x W, uint8 or floats in [0, 1]) and
    ``y`` (integers); optionally ``x_test``/``y_test`` and ``classes``.

    Raises:
        DataError: the file is missing, unreadable, lacks ``x``/``y`` or they do not match.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected a .npz with arrays x and y)")
    if not zipfile.is_zipfile(p):
        raise DataError(f"{p}: not a .npz file (not a zip archive of arrays x and y)")
    try:
        with np.load(p, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError) as exc:
        raise DataError(f"{p}: not a readable .npz file ({exc})") from None
    missing = [k for k in ("x", "y") if k not in arrays]
    if missing:
        raise DataError(f"{p}: missing array(s) {', '.join(missing)}; found {sorted(arrays)}")
    y_all = [arrays["y"]] + ([arrays["y_test"]] if "y_test" in arrays else [])
    if "classes" in arrays:
        classes = tuple(str(c) for c in arrays["classes"])
    else:
        n = int(max(int(y.max()) for y in y_all if y.size)) + 1 if any(y.size for y in y_all) else 0
        classes = tuple(str(i) for i in range(n))
    train = ArrayDataset(
        _to_nchw(arrays["x"], p, "x"), _labels(arrays["y"], p, "y"), classes, str(p)
    )
    test = None
    if "x_test" in arrays:
        if "y_test" not in arrays:
            raise DataError(f"{p}: has x_test but no y_test")
        test = ArrayDataset(
            _to_nchw(arrays["x_test"], p, "x_test"),
            _labels(arrays["y_test"], p, "y_test"),
            classes,
            f"{p}:test",
        )
    return train, test


def _labels(y: np.ndarray, p: Path, key: str) -> np.ndarray:
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{p}: {key} must be a 1-D integer array, got {y.dtype} of shape {y.shape}")
    return y.astype(np.int64)


def _to_nchw(x: np.ndarray, p: Path, key: str) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3, 4) and x.shape[1] not in (1, 3, 4):
        x = np.transpose(x, (0, 3, 1, 2))
    elif x.ndim != 4:
        raise DataError(f"{p}: {key} must have 3 or 4 dimensions, got shape {x.shape}")
    if x.dtype == np.uint8:
        return np.ascontiguousarray(x)
    if np.issubdtype(x.dtype, np.floating):
        if x.size and not np.isfinite(x).all():
            raise DataError(f"{p}: {key} holds NaN or infinite values")
        if x.size and (x.min() < 0.0 or x.max() > 1.0):
            raise DataError(
                f"{p}: float {key} must lie in [0, 1], found {x.min():.3g}..{x.max():.3g}"
            )
        return np.ascontiguousarray(np.round(x * 255).astype(np.uint8))
    raise DataError(f"{p}: {key} must be uint8 or float, got {x.dtype}")


def load_image_folder(
    path: str | Path, image_size: int, channels: int
) -> tuple[ArrayDataset, ArrayDataset | None]:
    """Images in one sub-folder per class, resized to ``image_size`` squares.

    If ``path`` holds ``train/`` and ``test/`` sub-folders, those are the two sets; otherwise
    every class folder is training data and the test set is carved out later.

    Raises:
        DataError: the folder is missing, has no class sub-folders, or an image is unreadable.
    """
    root = Path(path)
    if not root.is_dir():
        raise DataError(f"{root}: folder not found (expected one sub-folder of images per class)")
    if (root / "train").is_dir() and (root / "test").is_dir():
        train = _read_folder(root / "train", image_size, channels, None)
        test = _read_folder(root / "test", image_size, channels, train.classes)
        return train, test
    return _read_folder(root, image_size, channels, None), None


def _read_folder(
    root: Path, size: int, channels: int, classes: tuple[str, ...] | None
) -> ArrayDataset:
    from PIL import Image, UnidentifiedImageError

    found = tuple(
        sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    )
    if not found:
        raise DataError(f"{root}: no class sub-folders found (expected one folder per class)")
    if classes is not None and found != classes:
        raise DataError(
            f"{root}: class folders {list(found)} differ from training's {list(classes)}"
        )
    mode = {1: "L", 3: "RGB"}.get(channels)
    if mode is None:
        raise DataError(f"{root}: image folders need 1 or 3 input channels, got {channels}")
    xs, ys = [], []
    for label, name in enumerate(found):
        files = sorted(f for f in (root / name).iterdir() if f.suffix.lower() in _IMAGE_SUFFIXES)
        for f in files:
            try:
                with Image.open(f) as im:
                    arr = np.asarray(im.convert(mode).resize((size, size), Image.BILINEAR))
            except (UnidentifiedImageError, OSError) as exc:
                raise DataError(f"{f}: not a readable image ({exc})") from None
            xs.append(arr[None] if arr.ndim == 2 else arr.transpose(2, 0, 1))
            ys.append(label)
    if not xs:
        raise DataError(
            f"{root}: the class folders hold no images ({', '.join(sorted(_IMAGE_SUFFIXES))})"
        )
    return ArrayDataset(
        np.stack(xs).astype(np.uint8), np.asarray(ys, dtype=np.int64), found, str(root)
    )
