"""The model's own preprocessing: timm's data config (size, crop, interpolation, mean, std).

Images go through timm's evaluation transform (resize, centre crop) per sample and stay uint8
until they reach the model's device, where :class:`~exitsearch.data.transforms.InputTransform`
scales and normalises them. This is timm's own "prefetcher" split of ``create_transform``: the
two halves together give exactly the tensor that ``create_transform(**cfg, is_training=False)``
gives, with a quarter of the bytes travelling through the loader.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any

import numpy as np

from exitsearch.errors import ConfigError, DataError

__all__ = ["Preprocess"]

_INTERPOLATIONS = ("nearest", "bilinear", "bicubic", "box", "hamming", "lanczos")
_CROP_MODES = ("center", "squash", "border")


@dataclass(frozen=True)
class Preprocess:
    """How a raw image becomes model input: timm's data config for the model.

    Attributes:
        input_size: ``(channels, height, width)`` the model takes.
        interpolation: resampling of the resize (timm's names: ``bilinear``, ``bicubic``...).
        crop_pct: the image is resized to ``size / crop_pct`` and centre-cropped to ``size``.
        crop_mode: ``center`` (keep aspect ratio, crop), ``squash`` or ``border`` (timm's modes).
        mean, std: per-channel normalisation of pixels scaled to [0, 1].
    """

    input_size: tuple[int, int, int]
    interpolation: str = "bilinear"
    crop_pct: float = 1.0
    crop_mode: str = "center"
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)

    def __post_init__(self) -> None:
        c, h, w = self.input_size
        if c < 1 or h < 1 or w < 1:
            raise ConfigError(
                f"`input_size` must be (channels, height, width), each >= 1, "
                f"but got {self.input_size}"
            )
        if self.interpolation not in _INTERPOLATIONS:
            raise ConfigError(
                f"unknown interpolation {self.interpolation!r}; expected one of {_INTERPOLATIONS}"
            )
        if not 0 < self.crop_pct <= 1:
            raise ConfigError(f"`0 < crop_pct <= 1` must hold, but got crop_pct={self.crop_pct}")
        if self.crop_mode not in _CROP_MODES:
            raise ConfigError(
                f"unknown crop_mode {self.crop_mode!r}; expected one of {_CROP_MODES}"
            )
        if len(self.mean) != c or len(self.std) != c or min(self.std) <= 0:
            raise ConfigError(
                f"mean and std need {c} values (std > 0), got mean={self.mean}, std={self.std}"
            )

    # ------------------------------------------------------------------ construction
    @classmethod
    def for_model(cls, model: Any, **overrides: Any) -> Preprocess:
        """timm's resolved data config of ``model``, fitted to its real input size and channels.

        A model built with an ``img_size`` or ``in_chans`` override keeps its pretrained config's
        interpolation and statistics (mean and std cut or extended to its channels); one whose
        ``img_size`` differs from the pretrained resolution takes images whole (``crop_pct`` 1):
        the pretrained centre crop belongs to that resolution, and data at the model's own size
        then pass unchanged.
        """
        from timm.data import resolve_model_data_config

        cfg = resolve_model_data_config(model)
        size = model.patch_embed.img_size
        chans = int(model.patch_embed.proj.in_channels)
        mean = _fit(tuple(float(v) for v in cfg.get("mean", (0.5,) * 3)), chans)
        std = _fit(tuple(float(v) for v in cfg.get("std", (0.5,) * 3)), chans)
        input_size = (chans, int(size[0]), int(size[1]))
        pretrained_size = tuple(int(v) for v in cfg.get("input_size", input_size))
        fields = {
            "input_size": input_size,
            "interpolation": str(cfg.get("interpolation", "bilinear")),
            "crop_pct": (
                float(cfg.get("crop_pct", 1.0)) if pretrained_size[1:] == input_size[1:] else 1.0
            ),
            "crop_mode": str(cfg.get("crop_mode", "center")),
            "mean": mean,
            "std": std,
        }
        fields.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**fields)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready (lists, not tuples), so that a written and re-read record compares equal."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preprocess:
        try:
            return cls(
                input_size=tuple(int(v) for v in d["input_size"]),  # type: ignore[arg-type]
                interpolation=str(d["interpolation"]),
                crop_pct=float(d["crop_pct"]),
                crop_mode=str(d.get("crop_mode", "center")),
                mean=tuple(float(v) for v in d["mean"]),
                std=tuple(float(v) for v in d["std"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ConfigError(f"not a preprocessing config ({exc}): {d!r}") from None

    def with_size(self, size: tuple[int, int]) -> Preprocess:
        return replace(self, input_size=(self.channels, int(size[0]), int(size[1])))

    # ------------------------------------------------------------------ properties
    @property
    def channels(self) -> int:
        return self.input_size[0]

    @property
    def size(self) -> tuple[int, int]:
        return self.input_size[1], self.input_size[2]

    @property
    def pil_mode(self) -> str:
        if self.channels not in (1, 3):
            raise DataError(
                f"image files can feed 1 or 3 input channels, not {self.channels}; "
                "use an array source (.npz) for other channel counts"
            )
        return "L" if self.channels == 1 else "RGB"

    def is_identity_on(self, height: int, width: int) -> bool:
        """True when images of this size pass the resize and crop unchanged."""
        if (height, width) != self.size:
            return False
        if self.crop_mode == "squash":
            return True
        scaled = [math.floor(s / self.crop_pct) for s in self.size]
        return scaled == list(self.size)

    # ------------------------------------------------------------------ transforms
    def image_transform(self) -> Callable[[Any], np.ndarray]:
        """PIL image in, uint8 ``C x H x W`` array at the model's size out (timm's eval transform).

        Colour images fed to a one-channel model are converted to grey, grey images fed to a
        three-channel model are repeated, as PIL's ``convert`` does.
        """
        from timm.data import create_transform

        tf = create_transform(
            input_size=self.input_size,
            is_training=False,
            interpolation=self.interpolation,
            crop_pct=self.crop_pct,
            crop_mode=self.crop_mode,
            mean=self.mean,
            std=self.std,
            use_prefetcher=True,
        )
        return _ImageTransform(tf, self.pil_mode)

    def input_transform(self) -> Any:
        """The device-side half: uint8 batch to normalised float batch."""
        from exitsearch.data.transforms import InputTransform

        return InputTransform(self.size, self.channels, self.mean, self.std)

    def describe(self) -> str:
        c, h, w = self.input_size
        return (
            f"{c}x{h}x{w}, {self.interpolation}, crop_pct {self.crop_pct:g} ({self.crop_mode}), "
            f"mean {tuple(round(v, 4) for v in self.mean)}, std {tuple(round(v, 4) for v in self.std)}"
        )


class _ImageTransform:
    """Picklable per-sample transform for DataLoader workers."""

    def __init__(self, tf: Callable[[Any], Any], mode: str) -> None:
        self.tf = tf
        self.mode = mode

    def __call__(self, image: Any) -> np.ndarray:
        if image.mode != self.mode:
            image = image.convert(self.mode)
        out = np.asarray(self.tf(image), dtype=np.uint8)
        if out.ndim == 2:
            out = out[None]
        return out


def _fit(values: tuple[float, ...], chans: int) -> tuple[float, ...]:
    if len(values) == chans:
        return values
    if chans == 1:
        return (float(np.mean(values)),)
    if len(values) == 1:
        return values * chans
    if len(values) < chans:
        return values + (values[-1],) * (chans - len(values))
    raise DataError(f"cannot fit statistics {values} to {chans} channels")
