"""Which data a run uses, and its deterministic train / validation / test splits.

Validation is decided by a seeded hash of each sample's stable identity (its relative path, its
shard key, or its index in an array source), never by file order: the ``val_size`` samples with
the smallest hash are validation, so the same data in two formats with the same names get the
same split, and a smaller ``val_size`` picks a subset of a larger one's validation. Test is the
data's own test set when it has one (Fashion-MNIST's ``t10k`` files, a folder's ``test/``, an
npz's ``x_test``), otherwise the same hash order carves it before validation.

Checkpoints written before this rule record no split rule; they used a seeded permutation of
indices (``split="permutation"``), which stays available so that their validation samples can be
reproduced exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

import numpy as np

from exitsearch._io import sha256_of
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.samples import Samples
from exitsearch.data.sources import SourceData, open_source, resolve_source
from exitsearch.errors import ConfigError, DataError

__all__ = [
    "SPLIT_RULES",
    "DataSpec",
    "DataSplits",
    "SplitIndex",
    "load_splits",
    "split_index",
    "split_overlap",
]

FASHION_MNIST = "fashion-mnist"


@dataclass(frozen=True)
class DataSpec:
    """Where the data comes from and how it is split.

    Attributes:
        source: ``"fashion-mnist"``, a folder of class sub-folders, WebDataset tar shards, or an
            ``.npz`` file (see :mod:`exitsearch.data.sources`).
        data_dir: folder holding the Fashion-MNIST IDX files (default: the Debian package's).
        val_size: number of training samples held out for validation; ``None`` holds out one
            sixth (10,000 of Fashion-MNIST's 60,000).
        seed: seed of the split.
        limit: keep only the first ``limit`` samples of each split (quick runs and tests).
        split: ``"hash"`` (by sample identity) or ``"permutation"`` (legacy, by index).
    """

    source: str = FASHION_MNIST
    data_dir: str | None = None
    val_size: int | None = None
    seed: int = 0
    limit: int | None = None
    split: str = "hash"

    def __post_init__(self) -> None:
        if self.val_size is not None and self.val_size < 1:
            raise ConfigError(f"`val_size >= 1` must hold, but got val_size={self.val_size}")
        if self.limit is not None and self.limit < 1:
            raise ConfigError(f"`limit >= 1` must hold, but got limit={self.limit}")
        if not 0 <= self.seed < 2**32:
            raise ConfigError(f"`0 <= seed < 2**32` must hold, but got seed={self.seed}")
        if self.split not in SPLIT_RULES:
            raise ConfigError(
                f"unknown split rule {self.split!r}; expected one of {list(SPLIT_RULES)}"
            )

    @property
    def kind(self) -> str:
        """The registered source that reads :attr:`source`."""
        return resolve_source(self.source)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.split == "hash":  # keys of artifacts written before the field existed stay
            d.pop("split")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DataSpec:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in known})

    @classmethod
    def from_record(cls, d: dict[str, Any]) -> DataSpec:
        """The spec a checkpoint recorded; records without a split rule used the permutation."""
        return cls.from_dict({"split": "permutation", **d})


@dataclass(frozen=True)
class SplitIndex:
    """Positions in the source's training set (and which test set is used)."""

    train: np.ndarray
    val: np.ndarray
    test: np.ndarray | None  # None: the source's own test set


def _hash_keys(ids: np.ndarray, seed: int) -> np.ndarray:
    salt = seed.to_bytes(8, "little")
    return np.fromiter(
        (
            int.from_bytes(
                hashlib.blake2b(str(i).encode(), digest_size=8, salt=salt).digest(), "little"
            )
            for i in ids
        ),
        dtype=np.uint64,
        count=len(ids),
    )


def _hash_rule(ids: np.ndarray, val_size: int | None, seed: int, carve_test: bool) -> SplitIndex:
    n = len(ids)
    order = np.argsort(_hash_keys(ids, seed), kind="stable")
    test_size = n // 6 if carve_test else 0
    rest = n - test_size
    v = val_size if val_size is not None else n // 6
    _check_sizes(v, rest)
    test = np.sort(order[:test_size]) if carve_test else None
    val = np.sort(order[test_size : test_size + v])
    train = np.sort(order[test_size + v :])
    return SplitIndex(train, val, test)


def _permutation_rule(
    ids: np.ndarray, val_size: int | None, seed: int, carve_test: bool
) -> SplitIndex:
    n = len(ids)
    v = val_size if val_size is not None else n // 6
    rng = np.random.default_rng(seed)
    pool = np.arange(n)
    test = None
    if carve_test:
        perm = rng.permutation(n)
        test, pool = np.sort(perm[: n // 6]), np.sort(perm[n // 6 :])
    _check_sizes(v, len(pool))
    perm = rng.permutation(len(pool))
    return SplitIndex(pool[np.sort(perm[v:])], pool[np.sort(perm[:v])], test)


def _check_sizes(val_size: int, n: int) -> None:
    if not 0 < val_size < n:
        raise DataError(f"cannot hold out {val_size} validation samples from {n} training samples")


SPLIT_RULES: dict[str, Callable[[np.ndarray, int | None, int, bool], SplitIndex]] = {
    "hash": _hash_rule,
    "permutation": _permutation_rule,
}


def split_index(source: SourceData, spec: DataSpec) -> SplitIndex:
    """Which training-set positions ``spec`` puts in train, validation (and test)."""
    ids = source.train.ids()
    if source.val is not None:  # the data bring their own validation set
        return SplitIndex(np.arange(len(ids)), np.arange(0), None)
    try:
        return SPLIT_RULES[spec.split](ids, spec.val_size, spec.seed, source.test is None)
    except DataError as exc:
        raise DataError(f"{source.train.origin}: {exc}") from None


def split_overlap(source: SourceData, run: SplitIndex | DataSpec, recorded: DataSpec) -> int:
    """How many of ``run``'s validation samples were training samples under ``recorded``."""
    if source.val is not None:
        return 0
    mine = run if isinstance(run, SplitIndex) else split_index(source, run)
    theirs = split_index(source, recorded)
    return int(np.isin(mine.val, theirs.train).sum())


@dataclass(frozen=True)
class DataSplits:
    train: Samples
    val: Samples
    test: Samples
    spec: DataSpec
    task: str = "classification"

    @property
    def classes(self) -> tuple[str, ...]:
        return self.train.classes

    @property
    def num_classes(self) -> int:
        return self.train.num_classes

    @property
    def preprocess(self) -> Preprocess | None:
        return self.train.preprocess

    def fingerprint(self) -> str:
        """Hash of the split contents: changes when the data, the seed or the sizes change."""
        return sha256_of(
            "splits-v1", self.train.fingerprint(), self.val.fingerprint(), self.test.fingerprint()
        )

    def limit_note(self) -> str | None:
        """With ``limit``: a note when the kept training samples (the first ones of the split,
        in file order) leave classes out, as they do for a folder read class by class."""
        if self.spec.limit is None or self.task != "classification":
            return None
        seen = set(np.unique(np.asarray(self.train.y)).tolist())
        missing = [c for i, c in enumerate(self.classes) if i not in seen]
        if not missing:
            return None
        shown = ", ".join(missing[:5]) + (
            f" and {len(missing) - 5} more" if len(missing) > 5 else ""
        )
        return (
            f"--limit {self.spec.limit} keeps the first training samples in file order, and "
            f"{len(missing)} of {self.num_classes} classes have none ({shown}): exits cannot "
            "learn them; raise --limit, or give a smaller copy of the data with every class"
        )

    def get(self, name: str) -> Samples:
        if name not in ("train", "val", "test"):
            raise ConfigError(f"unknown split {name!r}; expected train, val or test")
        return getattr(self, name)

    def with_spec(self, spec: DataSpec) -> DataSplits:
        return replace(self, spec=spec)


def load_splits(
    spec: DataSpec,
    image_size: int | tuple[int, int] = 28,
    channels: int = 1,
    *,
    preprocess: Preprocess | None = None,
    source: SourceData | None = None,
    index: SplitIndex | None = None,
) -> DataSplits:
    """Open the data that ``spec`` names and split it deterministically.

    ``preprocess`` is the model's own (``Backbone.preprocess()``); without one, images are
    resized to ``image_size`` with ``channels`` channels (bilinear, no crop, mean/std 0.5).
    ``source`` and ``index`` skip opening the data and splitting it again when the caller did.

    Raises:
        DataError: files missing, unreadable or inconsistent, or too few samples to split.
    """
    if preprocess is None:
        size = (image_size, image_size) if isinstance(image_size, int) else image_size
        preprocess = Preprocess((channels, *size), mean=(0.5,) * channels, std=(0.5,) * channels)
    source = source if source is not None else open_source(spec)
    idx = index if index is not None else split_index(source, spec)
    full = source.train
    train, val = full.subset(idx.train), (source.val or full.subset(idx.val))
    test = source.test if idx.test is None else full.subset(idx.test)
    if test is None:
        raise DataError(f"{full.origin}: no test set")
    train, val, test = (d.with_preprocess(preprocess) for d in (train, val, test))
    if spec.limit is not None:
        train, val, test = (
            d.subset(np.arange(min(spec.limit, len(d)))) for d in (train, val, test)
        )
    return DataSplits(train, val, test, spec, source.task)
