"""From uint8 image batches to model input, and the light augmentation used in training."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from exitsearch.data.sources import ArrayDataset
from exitsearch.errors import DataError

__all__ = ["InputTransform", "augment", "iterate_batches"]


@dataclass(frozen=True)
class InputTransform:
    """Scale to [0, 1], match channels and size to the backbone, normalise with its mean/std."""

    img_size: tuple[int, int]
    in_chans: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    def check_channels(self, channels: int, origin: str = "the data") -> None:
        """Raise :class:`DataError` unless images with ``channels`` channels can be fed in.

        Grey images are repeated onto several input channels and colour images averaged onto
        one; other combinations (RGBA onto RGB, say) are refused.
        """
        if channels != self.in_chans and channels != 1 and self.in_chans != 1:
            raise DataError(
                f"{origin}: cannot feed {channels} image channels into a backbone that takes "
                f"{self.in_chans}; convert the images or pass --override in_chans=..."
            )

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        x = x.float().div_(255.0)
        c = x.shape[1]
        if c != self.in_chans:
            if c == 1:
                x = x.expand(-1, self.in_chans, -1, -1)
            elif self.in_chans == 1:
                x = x.mean(dim=1, keepdim=True)
            else:
                raise ValueError(
                    f"cannot map {c} image channels onto {self.in_chans} input channels"
                )
        if tuple(x.shape[-2:]) != tuple(self.img_size):
            x = F.interpolate(x, size=self.img_size, mode="bilinear", align_corners=False)
        mean = torch.tensor(self.mean[: self.in_chans], dtype=x.dtype).view(1, -1, 1, 1)
        std = torch.tensor(self.std[: self.in_chans], dtype=x.dtype).view(1, -1, 1, 1)
        return (x - mean) / std


def augment(
    x: torch.Tensor, generator: torch.Generator, pad: int = 2, flip: bool = True
) -> torch.Tensor:
    """Random crop after zero padding by ``pad`` pixels, and random horizontal flips (uint8 in/out)."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    rows = (dy.view(n, 1) + torch.arange(h).view(1, h)).view(n, 1, h, 1)
    cols = (dx.view(n, 1) + torch.arange(w).view(1, w)).view(n, 1, 1, w)
    batch = torch.arange(n).view(n, 1, 1, 1)
    out = padded[batch, torch.arange(x.shape[1]).view(1, -1, 1, 1), rows, cols]
    if flip:
        mask = torch.rand(n, generator=generator) < 0.5
        out[mask] = out[mask].flip(-1)
    return out


def iterate_batches(
    data: ArrayDataset,
    batch_size: int,
    *,
    shuffle: bool = False,
    generator: torch.Generator | None = None,
    start: int = 0,
) -> Iterator[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Yield ``(index, x_uint8, y)`` batches; ``start`` skips the first ``start`` batches."""
    n = len(data)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    x = torch.from_numpy(data.x)
    y = torch.from_numpy(np.asarray(data.y, dtype=np.int64))
    for b in range(start, (n + batch_size - 1) // batch_size):
        idx = order[b * batch_size : (b + 1) * batch_size]
        yield idx, x[idx], y[idx]
