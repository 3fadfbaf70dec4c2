"""Batches of ``(index, uint8 images, labels)`` from any :class:`Samples`, in a fixed order.

In-memory arrays that need no resizing are sliced directly (no worker processes); everything else
goes through a torch ``DataLoader`` whose worker processes decode and preprocess each batch, so
only a few batches are ever decoded at a time. The order is drawn from the caller's generator
before any worker starts, so shuffling stays exactly reproducible and resumable.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from exitsearch.data.samples import Samples

__all__ = [
    "EVAL_BATCH_BYTES",
    "bounded_batch",
    "default_workers",
    "iterate_batches",
    "set_default_workers",
]

_WORKERS: list[int | None] = [None]


def default_workers() -> int:
    """Decoding processes per loader: ``EXITSEARCH_WORKERS``, or one per CPU up to 8."""
    if _WORKERS[0] is not None:
        return _WORKERS[0]
    env = os.environ.get("EXITSEARCH_WORKERS")
    if env is not None and env.strip().isdigit():
        return int(env)
    return min(8, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else 1)


EVAL_BATCH_BYTES = 256 * 2**20
"""Evaluation batches are cut so that their float32 input stays below this many bytes."""


def bounded_batch(batch_size: int, data: Samples, limit: int = EVAL_BATCH_BYTES) -> int:
    """``batch_size``, lowered so that one batch of ``data``'s images as float32 fits ``limit``.

    Evaluation batch sizes suit 28-px images (1,000 of them are 3 MB) but not 224-px ones
    (1,000 of them are 600 MB as float32); memory then stays bounded whatever the input size.
    """
    c, h, w = data.image_shape
    return max(1, min(batch_size, limit // max(1, c * h * w * 4)))


def set_default_workers(n: int | None) -> None:
    """Set the number of decoding processes for this process's loaders (``None``: automatic)."""
    if n is not None and n < 0:
        raise ValueError(f"`workers >= 0` must hold, but got workers={n}")
    _WORKERS[0] = n


def _collate(items: Sequence[tuple[np.ndarray, int]]) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.from_numpy(np.stack([np.ascontiguousarray(im) for im, _ in items]))
    y = torch.tensor([label for _, label in items], dtype=torch.int64)
    return x, y


def iterate_batches(
    data: Samples,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    start: int = 0,
    workers: int | None = None,
    pin_memory: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(index, x_uint8, y)`` batches; ``start`` skips the first ``start`` batches.

    ``index`` holds each row's position in ``data``. With ``shuffle``, the order is a
    permutation drawn from ``generator`` (the same draw whatever ``start`` is).
    """
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = [
        order[b * batch_size : (b + 1) * batch_size] for b in range(start, -(-n // batch_size))
    ]
    if not batches:
        return
    if getattr(data, "passthrough", False):
        y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
        for idx in batches:
            x = data.batch(idx)
            yield idx, (x.pin_memory() if pin_memory else x), y[idx]
        return
    workers = default_workers() if workers is None else workers
    loader: Any = DataLoader(
        data,
        batch_sampler=[b.tolist() for b in batches],
        num_workers=min(workers, len(batches)),
        collate_fn=_collate,
        pin_memory=pin_memory,
        prefetch_factor=2 if workers else None,
    )
    for idx, (x, y) in zip(batches, loader, strict=True):
        yield idx, x, y
