"""Fixtures shared by the whole test suite: real data, real timm models, real files.

Nothing here is mocked. Expensive objects (the real Fashion-MNIST arrays, ViT-B/16) are built
once per session; everything a test may alter is copied into its own ``tmp_path`` first.
"""

from __future__ import annotations

import gzip
import os
import shutil
import struct
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from exitsearch.backbone import Backbone, create_backbone
from exitsearch.data import FASHION_MNIST_DIR, ArrayDataset, DataSpec, load_fashion_mnist
from exitsearch.data.splits import DataSplits, load_splits

# A ViT small enough to train in well under a second per epoch on 2 busy cores:
# 28 px Fashion-MNIST images cut into 4 x 4 = 16 patches of 7 px, two blocks of width 32.
TINY_MODEL = "vit_tiny_patch16_224"
TINY_OVERRIDES: dict[str, Any] = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
}

# Sizes of the small IDX copy of Fashion-MNIST written for tests that alter files.
SMALL_TRAIN = 600
SMALL_TEST = 100


def pytest_configure(config: pytest.Config) -> None:
    # The suite runs on two cores that a background training shares; with more than one
    # intra-op thread the small tensors of these tests spend their time waiting for each other
    # (measured: 2 epochs of the tiny ViT take 8 s with 2 threads and 0.15 s with one).
    torch.set_num_threads(1)


_EXIT_STATUS = pytest.StashKey[int]()


def pytest_sessionfinish(session: pytest.Session, exitstatus: int) -> None:
    session.config.stash[_EXIT_STATUS] = int(exitstatus)


@pytest.hookimpl(trylast=True)
def pytest_unconfigure(config: pytest.Config) -> None:
    """End a session that imported Ray without the interpreter's own teardown.

    The suite starts and stops Ray (and Ray Serve, whose driver side runs its own event loop)
    dozens of times in this one process. Ray's native threads outlive ``ray.shutdown()``, and
    freeing the interpreter under them has ended the process with a segmentation fault after
    every test had passed (once, on the 2-core CI machine). Every result is known and printed
    by now; the process leaves with pytest's exit status, Ray shut down first when a test left
    it connected.
    """
    if "ray" not in sys.modules or _EXIT_STATUS not in config.stash:
        return
    ray = sys.modules["ray"]
    if ray.is_initialized():
        ray.shutdown()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(config.stash[_EXIT_STATUS])


_IDX_DTYPE_CODES = {np.dtype(np.uint8): 0x08, np.dtype(np.int8): 0x09}


def write_idx(path: Path, array: np.ndarray, *, gz: bool | None = None) -> Path:
    """Write ``array`` (uint8 or int8) as an IDX file; gzip it when the name ends in ``.gz``."""
    arr = np.ascontiguousarray(array)
    header = bytes([0, 0, _IDX_DTYPE_CODES[arr.dtype], arr.ndim])
    header += struct.pack(f">{arr.ndim}I", *arr.shape)
    raw = header + arr.tobytes()
    gz = path.suffix == ".gz" if gz is None else gz
    path.write_bytes(gzip.compress(raw) if gz else raw)
    return path


@pytest.fixture(scope="session")
def idx_writer() -> Callable[..., Path]:
    """The IDX writer above, for tests that build their own files."""
    return write_idx


@pytest.fixture(scope="session")
def fmnist() -> tuple[ArrayDataset, ArrayDataset]:
    """The real Fashion-MNIST train and test sets from the Debian package."""
    if not FASHION_MNIST_DIR.is_dir():
        pytest.skip(f"{FASHION_MNIST_DIR} missing (install dataset-fashion-mnist)")
    return load_fashion_mnist()


@pytest.fixture(scope="session")
def small_fmnist_dir(
    tmp_path_factory: pytest.TempPathFactory, fmnist: tuple[ArrayDataset, ArrayDataset]
) -> Path:
    """Uncompressed IDX files holding the first real samples of each Fashion-MNIST set.

    Read-only by convention: tests that alter files use :func:`fmnist_copy`.
    """
    train, test = fmnist
    root = tmp_path_factory.mktemp("fmnist-small")
    for prefix, data, n in (("train", train, SMALL_TRAIN), ("t10k", test, SMALL_TEST)):
        write_idx(root / f"{prefix}-images-idx3-ubyte", data.x[:n, 0])
        write_idx(root / f"{prefix}-labels-idx1-ubyte", data.y[:n].astype(np.uint8))
    return root


@pytest.fixture
def fmnist_copy(tmp_path: Path, small_fmnist_dir: Path) -> Path:
    """A private copy of :func:`small_fmnist_dir` that a test may corrupt."""
    dst = tmp_path / "fmnist"
    shutil.copytree(small_fmnist_dir, dst)
    return dst


@pytest.fixture(scope="session")
def tiny_splits(fmnist: tuple[ArrayDataset, ArrayDataset]) -> DataSplits:
    """Real Fashion-MNIST splits cut to 256 samples each."""
    return load_splits(DataSpec(limit=256))


@pytest.fixture(scope="session")
def tiny_overrides() -> dict[str, Any]:
    return dict(TINY_OVERRIDES)


@pytest.fixture
def make_tiny() -> Callable[..., Backbone]:
    """Build a fresh tiny backbone; ``seed`` fixes its random initialisation."""

    def make(seed: int = 0, **extra: Any) -> Backbone:
        # create_backbone always initialises from seed 0 (reproducible runs); other seeds
        # re-draw every weight here so tests can have distinct backbones.
        bb = create_backbone(TINY_MODEL, **{**TINY_OVERRIDES, **extra})
        if seed:
            gen = torch.Generator().manual_seed(seed)
            with torch.no_grad():
                for p in bb.model.parameters():
                    p.copy_(
                        torch.randn(p.shape, generator=gen) * 0.02
                        + (1.0 if p.ndim == 1 and p.shape[0] == bb.embed_dim else 0.0)
                    )
        return bb

    return make


@pytest.fixture(scope="session")
def vit_base() -> Backbone:
    """ViT-B/16 at 224 px with random weights (no download), built once."""
    return create_backbone("vit_base_patch16_224")
