"""Options shared by several commands, and turning them into library objects."""

from __future__ import annotations

from typing import Annotated

import typer

from exitsearch.backbone import DEFAULT_PRESET, BackboneSpec, parse_overrides
from exitsearch.data import DataSpec

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"timm ViT-family model name, or a shipped preset (default {DEFAULT_PRESET}).",
    ),
]
OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        "-o",
        help="Constructor override key=value (img_size, patch_size, in_chans, num_classes, "
        "embed_dim, depth, num_heads, class_token, global_pool...); repeatable.",
    ),
]
CheckpointOpt = Annotated[
    str | None,
    typer.Option(
        "--checkpoint", help="Weights to load: a .safetensors file or a torch state dict."
    ),
]
PretrainedOpt = Annotated[
    bool, typer.Option("--pretrained/--no-pretrained", help="Load timm's pretrained weights.")
]
DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="'fashion-mnist', a folder with one sub-folder per class, or an .npz with x and y.",
    ),
]
DataDirOpt = Annotated[
    str | None,
    typer.Option("--data-dir", help="Folder of the Fashion-MNIST IDX files (default: Debian's)."),
]
ValSizeOpt = Annotated[
    int | None,
    typer.Option("--val-size", help="Validation samples held out of training (default: 1/6)."),
]
SplitSeedOpt = Annotated[
    int, typer.Option("--split-seed", help="Seed of the train/validation split.")
]
LimitOpt = Annotated[
    int | None,
    typer.Option("--limit", help="Use only the first N samples of each split (quick runs)."),
]


def backbone_spec(
    model: str, overrides: list[str] | None, checkpoint: str | None, pretrained: bool
) -> BackboneSpec:
    return BackboneSpec(
        model=model,
        overrides=parse_overrides(overrides),
        checkpoint=checkpoint,
        pretrained=pretrained,
    )


def data_spec(
    data: str, data_dir: str | None, val_size: int | None, split_seed: int, limit: int | None
) -> DataSpec:
    return DataSpec(source=data, data_dir=data_dir, val_size=val_size, seed=split_seed, limit=limit)
