"""A folder of images with one sub-folder per class, read lazily.

Layouts: ``ROOT/<class>/<image>``; or ``ROOT/train/<class>/...`` with ``ROOT/test/`` and/or
``ROOT/val/`` beside it. With ``train/`` and ``val/`` only (ImageNet's layout), ``val/`` is the test
set and exitsearch carves its validation split from ``train/``; with all three, ``val/`` is the
validation set. Each sample is named by its path relative to the split's folder
(``<class>/<file>``); only the names are held in memory, images are decoded per batch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch._io import sha256_of
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.samples import Samples, open_image
from exitsearch.data.sources import SourceData, register_source
from exitsearch.errors import DataError

__all__ = ["IMAGE_SUFFIXES", "ImageFolderDataset", "load_image_folder"]

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp"})


class ImageFolderDataset(Samples):
    """Image files named by their relative paths; labels from their class folders."""

    def __init__(
        self,
        root: Path,
        paths: np.ndarray,
        y: np.ndarray,
        classes: tuple[str, ...],
        stats: np.ndarray,
        preprocess: Preprocess | None = None,
    ) -> None:
        self.root = Path(root)
        self.paths = paths  # fixed-width bytes: no per-item Python objects to copy in workers
        self.y = y
        self.classes = classes
        self.origin = str(root)
        self.stats = stats  # (size, mtime_ns) per file: identifies the content cheaply
        self.preprocess = preprocess

    def ids(self) -> np.ndarray:
        return self.paths.astype(str)

    def read(self, i: int) -> Any:
        rel = self.paths[i].decode()
        return open_image(os.path.join(self.root, rel), os.path.join(self.origin, rel))

    def subset(self, index: np.ndarray) -> ImageFolderDataset:
        index = np.asarray(index, dtype=np.int64)
        return ImageFolderDataset(
            self.root,
            self.paths[index],
            self.y[index],
            self.classes,
            self.stats[index],
            self.preprocess,
        )

    def content_key(self) -> Any:
        return sha256_of("folder-v1", self.paths, self.stats)


def scan_folder(root: Path, classes: tuple[str, ...] | None) -> ImageFolderDataset:
    """Index ``root/<class>/**`` without decoding: names, labels and file stats."""
    found = tuple(
        sorted(d.name for d in os.scandir(root) if d.is_dir() and not d.name.startswith("."))
    )
    if not found:
        raise DataError(f"{root}: no class sub-folders found (expected one folder per class)")
    if classes is not None and found != classes:
        raise DataError(
            f"{root}: class folders {list(found)} differ from training's {list(classes)}"
        )
    paths: list[str] = []
    labels: list[int] = []
    stats: list[tuple[int, int]] = []
    for label, name in enumerate(found):
        for dirpath, dirnames, filenames in os.walk(root / name):
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            rel_dir = os.path.relpath(dirpath, root)
            for f in sorted(filenames):
                if os.path.splitext(f)[1].lower() not in IMAGE_SUFFIXES or f.startswith("."):
                    continue
                st = os.stat(os.path.join(dirpath, f))
                paths.append(f"{rel_dir}/{f}".replace(os.sep, "/"))
                labels.append(label)
                stats.append((st.st_size, st.st_mtime_ns))
    if not paths:
        raise DataError(
            f"{root}: the class folders hold no images ({', '.join(sorted(IMAGE_SUFFIXES))})"
        )
    present = set(labels)
    empty = [name for label, name in enumerate(found) if label not in present]
    if classes is None and empty:  # (a split of training's classes may lack some)
        raise DataError(
            f"{root / empty[0]}: a class folder without images "
            f"({', '.join(sorted(IMAGE_SUFFIXES))})"
            + (f", and {len(empty) - 1} more" if len(empty) > 1 else "")
            + "; every sub-folder is a class: remove it or fill it"
        )
    return ImageFolderDataset(
        root,
        np.array([p.encode() for p in paths]),
        np.asarray(labels, dtype=np.int64),
        found,
        np.asarray(stats, dtype=np.int64).reshape(-1, 2),
    )


def load_image_folder(path: str | Path) -> SourceData:
    """Index the folder's splits (see the module docstring for the layouts).

    Raises:
        DataError: the folder is missing, has no class sub-folders, or no images.
    """
    root = Path(path)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "folder not found"
        raise DataError(f"{root}: {what} (expected one sub-folder of images per class)")
    if not (root / "train").is_dir():
        return SourceData(scan_folder(root, None))
    train = scan_folder(root / "train", None)
    val = scan_folder(root / "val", train.classes) if (root / "val").is_dir() else None
    test = scan_folder(root / "test", train.classes) if (root / "test").is_dir() else None
    if test is None:
        val, test = None, val
    return SourceData(train, val, test)


@register_source("folder", lambda s: True, "a folder with one sub-folder of images per class")
def _open(spec: Any) -> SourceData:
    if not Path(spec.source).exists():
        from exitsearch.data.sources import describe_sources

        raise DataError(f"{spec.source}: not found; --data takes {describe_sources()}")
    return load_image_folder(spec.source)
