"""Which data a run uses, and its deterministic train / validation / test splits.

Validation is carved from the training set with a seeded permutation; test is the dataset's own
test set when it has one (Fashion-MNIST's ``t10k`` files, a folder's ``test/``, an npz's
``x_test``), otherwise it is carved from training the same way. Heads train on train, the search
sees validation only, and test is touched only to report the chosen front.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch._io import sha256_of
from exitsearch.data.sources import ArrayDataset, load_fashion_mnist, load_image_folder, load_npz
from exitsearch.errors import ConfigError, DataError

__all__ = ["DataSpec", "DataSplits", "load_splits"]

FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split.

    Attributes:
        source: ``"fashion-mnist"``, a folder of class sub-folders, or an ``.npz`` file.
        data_dir: folder holding the Fashion-MNIST IDX files (default: the Debian package's).
        val_size: number of training samples held out for validation; ``None`` holds out one
            sixth (10,000 of Fashion-MNIST's 60,000).
        seed: seed of the split permutation.
        limit: keep only the first ``limit`` samples of each split (quick runs and tests).
    """

    source: str = FASHION_MNIST
    data_dir: str | None = None
    val_size: int | None = None
    seed: int = 0
    limit: int | None = None

    def __post_init__(self) -> None:
        if self.val_size is not None and self.val_size < 1:
            raise ConfigError(f"`val_size >= 1` must hold, but got val_size={self.val_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"`limit >= 1` must hold, but got limit={self.limit}")

    @property
    def kind(self) -> str:
        if self.source == FASHION_MNIST:
            return FASHION_MNIST
        return "npz" if self.source.endswith(".npz") else "folder"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        return cls(**d)


@dataclass(frozen=True)
class DataSplits:
    train: ArrayDataset
    val: ArrayDataset
    test: ArrayDataset
    spec: DataSpec

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    def fingerprint(self) -> str:
        """Hash of the split contents: changes when the data, the seed or the sizes change."""
        return sha256_of(
            "splits-v1", self.train.fingerprint(), self.val.fingerprint(), self.test.fingerprint()
        )

    def get(self, name: str) -> ArrayDataset:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)


def load_splits(spec: DataSpec, image_size: int = 28, channels: int = 1) -> DataSplits:
    """Load the data that ``spec`` names and split it deterministically.

    ``image_size`` and ``channels`` matter only for image folders, which are decoded at that size;
    arrays are resized per batch to the backbone's input instead.

    Raises:
        DataError: files missing, unreadable or inconsistent, or too few samples to split.
    """
    if spec.kind == FASHION_MNIST:
        full, test = load_fashion_mnist(spec.data_dir)
    elif spec.kind == "npz":
        full, test = load_npz(spec.source)
    else:
        if not Path(spec.source).is_dir():
            raise DataError(
                f"{spec.source}: not found; --data takes 'fashion-mnist', a folder with one "
                "sub-folder per class, or an .npz file with arrays x and y"
            )
        full, test = load_image_folder(spec.source, image_size, channels)
    n = len(full)
    val_size = spec.val_size if spec.val_size is not None else n // 6
    rng = np.random.default_rng(spec.seed)
    if test is None:
        test_size = n // 6
        perm = rng.permutation(n)
        test, full = full.subset(np.sort(perm[:test_size])), full.subset(np.sort(perm[test_size:]))
        n = len(full)
    if not 0 < val_size < n:
        raise DataError(
            f"{full.origin}: cannot hold out {val_size} validation samples from {n} training samples"
        )
    perm = rng.permutation(n)
    val_idx, train_idx = np.sort(perm[:val_size]), np.sort(perm[val_size:])
    train, val = full.subset(train_idx), full.subset(val_idx)
    if spec.limit is not None:
        train, val, test = (
            d.subset(np.arange(min(spec.limit, len(d)))) for d in (train, val, test)
        )
    return DataSplits(train, val, test, spec)
