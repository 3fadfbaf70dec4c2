"""Named backbones that ship with exitsearch (architecture plus trained weights)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from importlib import resources
from pathlib import Path
from typing import Any

from exitsearch.backbone.spec import BackboneSpec

__all__ = ["COUNT_PRESET", "DEFAULT_PRESET", "PRESETS", "SWIN_PRESET", "Preset", "preset_dir"]

DEFAULT_PRESET = "fmnist-vit12"
SWIN_PRESET = "fmnist-swin12"
COUNT_PRESET = "fmnist-count-vit12"


@dataclass(frozen=True)
class Preset:
    name: str
    spec: BackboneSpec
    data: str
    description: str

    def train_first(self, overrides: Mapping[str, Any]) -> str:
        """Advice when the shipped weights cannot serve ``overrides`` (another number of
        classes...): the command that trains this architecture for the user's data."""
        flags = " ".join(f"-o {k}={v}" for k, v in overrides.items())
        return (
            f"train a backbone for your data first (exitsearch backbone train --model "
            f"{self.name} --from-scratch {flags} --data DATA --out DIR), then pass --checkpoint "
            f"DIR/model.safetensors {flags}"
        )

    def resolved(self) -> BackboneSpec:
        """The spec with the shipped checkpoint attached, if it is installed."""
        ckpt = preset_dir(self.name) / "model.safetensors"
        return replace(self.spec, checkpoint=str(ckpt)) if ckpt.is_file() else self.spec


def preset_dir(name: str) -> Path:
    return Path(str(resources.files("exitsearch.assets"))) / name


PRESETS: dict[str, Preset] = {
    DEFAULT_PRESET: Preset(
        name=DEFAULT_PRESET,
        spec=BackboneSpec(
            model="vit_tiny_patch16_224",
            overrides={
                "img_size": 28,
                "patch_size": 4,
                "in_chans": 1,
                "num_classes": 10,
                "embed_dim": 96,
                "num_heads": 3,
                "depth": 12,
            },
            # The embedded model takes its 28-px training images as they are (no resize, no crop).
            preprocess={"crop_pct": 1.0, "interpolation": "bilinear"},
        ),
        data="fashion-mnist",
        description="12-block ViT (width 96, 7x7 patches of 4 px) trained on Fashion-MNIST",
    ),
    SWIN_PRESET: Preset(
        name=SWIN_PRESET,
        spec=BackboneSpec(
            model="swin_tiny_patch4_window7_224",
            overrides={
                "img_size": 28,
                "patch_size": 2,
                "in_chans": 1,
                "num_classes": 10,
                "embed_dim": 40,
                "depths": (2, 2, 6, 2),
                "num_heads": (2, 4, 8, 16),
                "window_size": 7,
            },
            preprocess={"crop_pct": 1.0, "interpolation": "bilinear"},
        ),
        data="fashion-mnist",
        description=(
            "12-block Swin (stages of 2, 2, 6, 2 blocks, widths 40-320, grids 14x14 to 2x2, "
            "windows of 7) for Fashion-MNIST; architecture only: its weights are not shipped "
            "(`exitsearch backbone train --model fmnist-swin12` trains them)"
        ),
    ),
    COUNT_PRESET: Preset(
        name=COUNT_PRESET,
        spec=BackboneSpec(
            model="vit_tiny_patch16_224",
            overrides={
                "img_size": 56,
                "patch_size": 8,
                "in_chans": 1,
                "num_classes": 2,
                "embed_dim": 96,
                "num_heads": 3,
                "depth": 12,
            },
            preprocess={"crop_pct": 1.0, "interpolation": "bilinear"},
        ),
        data="fashion-mnist-count",
        description=(
            "12-block ViT (width 96, 7x7 patches of 8 px) counting Fashion-MNIST garments on "
            "56-px canvases (two outputs: a Laplace location and log scale); architecture only "
            "(`exitsearch backbone train --model fmnist-count-vit12 --data fashion-mnist-count`)"
        ),
    ),
}
