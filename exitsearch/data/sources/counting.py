"""Fashion-MNIST counting: how many garments a canvas holds (a regression task).

Multi-Exit ViT's main regression experiments count people in crowd images; this is the same task
in small, regenerated from the embedded data alone, so anyone can rebuild it bit for bit.

The generator (:func:`make_canvases`): every canvas is 56 x 56 px, one channel, black; its
target count ``k`` is drawn uniformly from 0..9; ``k`` of the 16 cells of a 4 x 4 grid of 14-px
cells are drawn without replacement, and each holds one Fashion-MNIST image downscaled to 14 x 14
(2 x 2 mean), shifted by a uniform offset of -3..3 px in each direction (kept inside the canvas),
drawn with a pixel-wise maximum, so neighbours may touch or overlap a little. The training set
(20,000 canvases, seed 0) uses only Fashion-MNIST's training images and the test set (4,000,
seed 1) only its test images. Labels are the counts, classes ``"0"`` .. ``"9"``.
"""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch.data.samples import ArrayDataset
from exitsearch.data.sources import SourceData, register_source
from exitsearch.data.sources.fashion_mnist import load_fashion_mnist

__all__ = [
    "CANVAS",
    "COUNTING_SOURCE",
    "ITEM",
    "MAX_COUNT",
    "load_counting",
    "make_canvases",
]

COUNTING_SOURCE = "fashion-mnist-count"
CANVAS = 56
ITEM = 14
GRID = CANVAS // ITEM
JITTER = 3
MAX_COUNT = 9
SIZES = {"train": (20_000, 0), "test": (4_000, 1)}
CLASSES = tuple(str(k) for k in range(MAX_COUNT + 1))


def make_canvases(items: np.ndarray, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` canvases (n, 1, 56, 56) uint8 and their counts (n,) from 28-px ``items`` (N, 28,
    28) uint8, deterministic in ``seed``."""
    small = items.reshape(len(items), ITEM, 2, ITEM, 2).astype(np.float32).mean(axis=(2, 4))
    small = np.round(small).astype(np.uint8)
    rng = np.random.default_rng(seed)
    counts = rng.integers(0, MAX_COUNT + 1, size=n)
    x = np.zeros((n, 1, CANVAS, CANVAS), np.uint8)
    top = CANVAS - ITEM
    for i, k in enumerate(counts):
        cells = rng.choice(GRID * GRID, size=int(k), replace=False)
        picks = rng.integers(0, len(small), size=int(k))
        shifts = rng.integers(-JITTER, JITTER + 1, size=(int(k), 2))
        for cell, pick, (dy, dx) in zip(cells, picks, shifts, strict=True):
            r = min(max(int(cell // GRID) * ITEM + int(dy), 0), top)
            c = min(max(int(cell % GRID) * ITEM + int(dx), 0), top)
            patch = x[i, 0, r : r + ITEM, c : c + ITEM]
            np.maximum(patch, small[pick], out=patch)
    return x, counts.astype(np.int64)


def load_counting(data_dir: str | Path | None = None) -> tuple[ArrayDataset, ArrayDataset]:
    """The counting training and test sets, generated from Fashion-MNIST in ``data_dir``
    (generated once per process and folder; the arrays are shared, never written to).

    Raises:
        DataError: the Fashion-MNIST files are missing or broken.
    """
    return _generated(None if data_dir is None else str(Path(data_dir).resolve()))


@functools.lru_cache(maxsize=2)
def _generated(data_dir: str | None) -> tuple[ArrayDataset, ArrayDataset]:
    fm_train, fm_test = load_fashion_mnist(data_dir)
    out = []
    for name, source in (("train", fm_train), ("test", fm_test)):
        n, seed = SIZES[name]
        x, y = make_canvases(source.x[:, 0], n, seed)
        out.append(ArrayDataset(x, y, CLASSES, f"{COUNTING_SOURCE}:{name}"))
    return out[0], out[1]


@register_source(
    COUNTING_SOURCE,
    lambda s: s == COUNTING_SOURCE,
    f"'{COUNTING_SOURCE}' (count 0-{MAX_COUNT} garments on a {CANVAS}-px canvas)",
)
def _open(spec: Any) -> SourceData:
    train, test = load_counting(spec.data_dir)
    return SourceData(train, None, test, task="counting")
