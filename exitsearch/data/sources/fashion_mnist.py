"""Fashion-MNIST from its four IDX files (the Debian package ``dataset-fashion-mnist``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from exitsearch.data.idx import read_idx
from exitsearch.data.samples import ArrayDataset, check_labels
from exitsearch.data.sources import SourceData, register_source
from exitsearch.errors import DataError

__all__ = ["FASHION_MNIST", "FASHION_MNIST_CLASSES", "FASHION_MNIST_DIR", "load_fashion_mnist"]

FASHION_MNIST = "fashion-mnist"
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
        labels = check_labels(labels, str(lbl_path), len(FASHION_MNIST_CLASSES))
        out.append(ArrayDataset(images[:, None], labels, FASHION_MNIST_CLASSES, str(img_path)))
    return out[0], out[1]


def _find(root: Path, stem: str) -> Path:
    for candidate in (root / f"{stem}.gz", root / stem):
        if candidate.exists():
            return candidate
    return root / f"{stem}.gz"


@register_source(
    FASHION_MNIST, lambda s: s == FASHION_MNIST, "'fashion-mnist' (--data-dir for other IDX files)"
)
def _open(spec: Any) -> SourceData:
    train, test = load_fashion_mnist(spec.data_dir)
    return SourceData(train, None, test)
