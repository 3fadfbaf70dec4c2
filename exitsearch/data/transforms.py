"""The device-side half of preprocessing, and the light training augmentation.

Loaders deliver uint8 ``N x C x H x W`` batches at the model's size (see
:mod:`exitsearch.data.preprocess`); :class:`InputTransform` scales them to [0, 1], maps channels
and normalises with the model's mean and std, on whatever device the batch is on.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from exitsearch.errors import ConfigError, DataError

__all__ = ["AUGMENTATIONS", "Augment", "InputTransform", "augment"]


@dataclass(frozen=True)
class InputTransform:
    """Scale to [0, 1], match channels to the backbone, normalise with its mean/std."""

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
        # One float copy of the batch, then in place: at 224 px and more a batch of inputs is
        # hundreds of MB, and each out-of-place step would add another.
        x = x.to(torch.float32, copy=True).div_(255.0)
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
        mean = torch.tensor(self.mean[: self.in_chans], dtype=x.dtype, device=x.device)
        std = torch.tensor(self.std[: self.in_chans], dtype=x.dtype, device=x.device)
        if x.stride(1) == 0:  # grey repeated onto several channels: a view, not writable
            return (x - mean.view(1, -1, 1, 1)) / std.view(1, -1, 1, 1)
        return x.sub_(mean.view(1, -1, 1, 1)).div_(std.view(1, -1, 1, 1))


AUGMENTATIONS = ("crop", "flip")


@dataclass(frozen=True)
class Augment:
    """Which light augmentations training applies (on uint8 batches, at the model's size).

    ``crop``: a random crop after zero padding by ``pad`` pixels; ``flip``: random horizontal
    flips (turn it off for digits, text and anything whose label a mirror changes).
    """

    crop: bool = True
    flip: bool = True
    pad: int = 2

    @classmethod
    def parse(cls, text: str | bool | None) -> Augment:
        """``"crop,flip"``, ``"crop"``, ``"flip"``, ``"none"`` (or a bool: all or none)."""
        if text is None or text is True:
            return cls()
        if text is False:
            return cls(False, False)
        parts = {p.strip().lower() for p in str(text).split(",") if p.strip()}
        if parts in ({"none"}, {"off"}, set()):
            return cls(False, False)
        if parts in ({"all"}, {"on"}):
            return cls()
        unknown = parts - set(AUGMENTATIONS)
        if unknown:
            raise ConfigError(
                f"unknown augmentation {', '.join(sorted(unknown))}; expected a comma-separated "
                f"list of {', '.join(AUGMENTATIONS)}, or none"
            )
        return cls(crop="crop" in parts, flip="flip" in parts)

    @property
    def enabled(self) -> bool:
        return self.crop or self.flip

    def __str__(self) -> str:
        on = [n for n in AUGMENTATIONS if getattr(self, n)]
        return ",".join(on) if on else "none"

    def __call__(self, x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        return augment(x, generator, pad=self.pad if self.crop else 0, flip=self.flip)


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
