"""What an exported model accepts: raw images in its own preprocessing, or checked tensors.

``predict`` takes raw images (PIL images, file paths, uint8 tensors or arrays) and applies the
bundle's preprocessing (timm's data config: resize, centre crop, mean/std); ``forward`` takes
tensors already normalised, for speed. Either way a tensor of the wrong shape, channel count or
value range is refused with a message that says what was expected, instead of a silently wrong
answer (images scaled to [0, 1] but not normalised look plausible and are not).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import Any

import numpy as np
import torch

from exitsearch.data.preprocess import Preprocess
from exitsearch.data.samples import open_image
from exitsearch.errors import ConfigError

__all__ = ["ModelInputs"]


class ModelInputs:
    """Turns what a user passes into normalised model input, and checks tensors."""

    def __init__(self, preprocess: Preprocess) -> None:
        self.preprocess = preprocess
        self._normalise = preprocess.input_transform()
        self._tf: Any = None
        mean = np.asarray(preprocess.mean, dtype=np.float64)
        std = np.asarray(preprocess.std, dtype=np.float64)
        self._lo = float(np.min((0.0 - mean) / std))
        self._hi = float(np.max((1.0 - mean) / std))

    # ------------------------------------------------------------------ checks
    def check(self, x: torch.Tensor) -> None:
        """Raise :class:`ConfigError` unless ``x`` looks like normalised model input."""
        c, h, w = self.preprocess.input_size
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            got = f"Tensor{tuple(x.shape)}" if isinstance(x, torch.Tensor) else type(x).__name__
            raise ConfigError(
                f"predict() takes (N, {c}, {h}, {w}) image tensors or arrays, raw images, or an "
                f"iterable of them; got {got}"
            )
        if tuple(x.shape[1:]) != (c, h, w):
            raise ConfigError(
                f"expected inputs of shape (N, {c}, {h}, {w}) (the model's channels and size), "
                f"got {tuple(x.shape)}; floats are taken as normalised model input, while raw "
                "images (uint8 arrays, PIL images, paths) are resized and normalised for you"
            )
        if x.dtype == torch.uint8:
            raise ConfigError(
                "got uint8 pixels where normalised floats are expected; pass them to predict(), "
                "which applies the model's preprocessing"
            )
        if not x.is_floating_point() or x.numel() == 0:
            return
        lo, hi = float(x.amin()), float(x.amax())
        if not (np.isfinite(lo) and np.isfinite(hi)):
            raise ConfigError("inputs hold NaN or infinite values")
        span = self._hi - self._lo
        if hi > self._hi + 3 * span or lo < self._lo - 3 * span:
            raise ConfigError(
                f"input values {lo:.3g}..{hi:.3g} are far outside the normalised range "
                f"{self._lo:.3g}..{self._hi:.3g} (pixels 0..255 as floats?); pass raw images "
                "to predict(), or normalise with the model's mean and std"
            )
        # Images in [0, 1] span a good part of it; a constant batch (zeros, say) proves nothing
        if self._lo < -0.25 and lo >= 0.0 and hi <= 1.0 and hi - lo >= 0.2:
            raise ConfigError(
                f"inputs lie within [0, 1] (from {lo:.3g} to {hi:.3g}): images scaled but not "
                "normalised "
                f"(normalised inputs span {self._lo:.3g}..{self._hi:.3g}); pass raw images to "
                "predict(), or normalise with the model's mean and std"
            )

    # ------------------------------------------------------------------ conversion
    def stream(self, inputs: Any, batch_size: int) -> Iterator[torch.Tensor]:
        """Normalised, checked batches of at most ``batch_size`` from whatever was passed."""
        for batch in self.batches(inputs, batch_size):
            self.check(batch)
            yield batch

    def batches(self, inputs: Any, b: int) -> Iterator[torch.Tensor]:
        """Normalised batches of at most ``b`` from whatever was passed, unchecked."""
        if _is_image_like(inputs):
            inputs = [inputs]
        if isinstance(inputs, torch.Tensor | np.ndarray):
            yield from self._array_batches(inputs, b)
            return
        if not isinstance(inputs, Iterable) or isinstance(inputs, str | bytes):
            raise ConfigError(
                "predict() takes images (PIL images, file paths, uint8 arrays or tensors), "
                f"normalised (N, C, H, W) tensors, or an iterable of them; got {type(inputs).__name__}"
            )
        pending: list[np.ndarray] = []
        for item in inputs:
            if _is_image_like(item):
                pending.append(self._one_image(item))
                if len(pending) == b:
                    yield self._finish(pending)
                    pending = []
                continue
            if pending:
                yield self._finish(pending)
                pending = []
            if isinstance(item, torch.Tensor | np.ndarray):
                yield from self._array_batches(item, b)
            else:
                raise ConfigError(
                    "predict() takes images (PIL images, file paths, uint8 arrays or tensors) or "
                    f"normalised (N, C, H, W) tensors; got an item of type {type(item).__name__}"
                )
        if pending:
            yield self._finish(pending)

    def _array_batches(self, x: torch.Tensor | np.ndarray, b: int) -> Iterator[torch.Tensor]:
        if isinstance(x, np.ndarray):
            a = np.ascontiguousarray(x)
            # np.asarray of a PIL image is read-only, and torch warns on sharing one
            t = torch.from_numpy(a if a.flags.writeable else a.copy())
        else:
            t = x
        if t.dtype == torch.uint8 and t.dim() == 2:  # one grey image (H, W), as OpenCV reads it
            yield self._finish([self._one_image(t.numpy())])
            return
        if t.dtype == torch.uint8:
            if _channels_last(t):  # H x W x C or N x H x W x C, as PIL and OpenCV give them
                images = [t] if t.dim() == 3 else list(t)
                for i in range(0, len(images), b):
                    yield self._finish([self._one_image(a) for a in images[i : i + b]])
                return
            if t.dim() == 3:  # one image C x H x W, or N grey images N x H x W
                t = t[:, None] if t.shape[0] not in (1, 3) else t[None]
            if t.dim() != 4:
                raise ConfigError(
                    "uint8 images must be (N, C, H, W), (H, W), (H, W, C) or (N, H, W, C), got "
                    f"{tuple(t.shape)}"
                )
            for i in range(0, t.shape[0], b):
                yield self._raw(t[i : i + b])
            return
        if t.dim() == 3:
            t = t[None]
        for i in range(0, t.shape[0], b):
            yield t[i : i + b]

    def _raw(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 pixels: resized and cropped when not at the model's size, then normalised."""
        if not self.preprocess.is_identity_on(x.shape[2], x.shape[3]):
            arrays = x.numpy()
            x = torch.from_numpy(np.stack([self._one_image(a) for a in arrays]))
        return self._normalise(x)

    def _one_image(self, item: Any) -> np.ndarray:
        from PIL import Image

        if isinstance(item, str | os.PathLike):
            item = open_image(os.fspath(item), os.fspath(item))
        elif isinstance(item, np.ndarray | torch.Tensor):
            a = item.numpy() if isinstance(item, torch.Tensor) else item
            if a.ndim == 3 and a.shape[0] in (1, 3) and a.shape[-1] not in (1, 3, 4):
                a = np.transpose(a, (1, 2, 0))
            item = Image.fromarray(a[..., 0] if a.ndim == 3 and a.shape[-1] == 1 else a)
        if self._tf is None:
            self._tf = self.preprocess.image_transform()
        return self._tf(item)

    def _finish(self, images: list[np.ndarray]) -> torch.Tensor:
        return self._normalise(torch.from_numpy(np.stack(images)))


def _channels_last(t: torch.Tensor) -> bool:
    """uint8 pixels with their 1, 3 or 4 channels last (and not first): ``np.asarray`` of a
    PIL image, an OpenCV image, or a stack of them."""
    if t.dim() not in (3, 4):
        return False
    first = t.shape[0] if t.dim() == 3 else t.shape[1]
    return t.shape[-1] in (1, 3, 4) and first not in (1, 3, 4)


def _is_image_like(item: Any) -> bool:
    if isinstance(item, str | os.PathLike):
        return True
    try:
        from PIL import Image
    except ImportError:  # pragma: no cover
        return False
    return isinstance(item, Image.Image)
