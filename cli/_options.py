"""Options shared by several commands, and turning them into library objects."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from exitsearch.backbone import DEFAULT_PRESET, BackboneSpec, parse_overrides
from exitsearch.errors import ConfigError, DataError
from exitsearch.units import parse_bytes

if TYPE_CHECKING:
    from exitsearch.data import DataSpec
    from exitsearch.training.head_training import HeadTrainConfig

ModelOpt = Annotated[
    str,
    typer.Option(
        "--model",
        "-m",
        help=f"timm ViT, DeiT or Swin model name, or a shipped preset (default {DEFAULT_PRESET}).",
    ),
]
OverrideOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--override",
        "-o",
        help="Constructor override key=value (img_size, patch_size, in_chans, num_classes, "
        "embed_dim, depth, num_heads, class_token, global_pool...; Swin: depths=2,2,6,2, "
        "num_heads=3,6,12,24, window_size); repeatable.",
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
        help="'fashion-mnist', a folder with one sub-folder per class, WebDataset .tar shards "
        "(a .tar or a folder of them), or an .npz with x and y.",
    ),
]
PresetDataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="'fashion-mnist', 'fashion-mnist-count', a folder with one sub-folder per class, "
        "WebDataset .tar shards, or an .npz with x and y (default: the preset's own data; "
        "fashion-mnist otherwise).",
    ),
]


def preset_data(model: str, data: str | None) -> str:
    """``--data``, or the data a preset was made for, or Fashion-MNIST."""
    if data is not None:
        return data
    from exitsearch.backbone.presets import PRESETS

    preset = PRESETS.get(model)
    return preset.data if preset is not None else "fashion-mnist"


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
    from exitsearch.data import DataSpec

    return DataSpec(
        source=absolute_source(data),
        data_dir=absolute_dir(data_dir),
        val_size=val_size,
        seed=split_seed,
        limit=limit,
    )


def absolute_source(data: str) -> str:
    """``--data`` as an absolute path when it names a file or folder, so that what a run
    records (its fronts, the bundles it exports) still finds the data from another folder;
    a named source (``fashion-mnist``) stays as it is."""
    from exitsearch.data.sources import resolve_source

    try:
        path = Path(data).expanduser()
        # as typed: that is how it is read (`./fashion-mnist` is a folder, `fashion-mnist` not)
        kind = resolve_source(data) if path.exists() else None
    except (DataError, RuntimeError):  # not data, or ~user unknown: refused where it is read
        return data
    return data if kind is None or kind.startswith("fashion-mnist") else os.path.abspath(path)


def absolute_dir(folder: str | None) -> str | None:
    """A folder option (``--data-dir``) as an absolute path, for the same reason."""
    if folder is None:
        return None
    try:
        return os.path.abspath(os.path.expanduser(folder))
    except RuntimeError:  # ~user unknown: refused where it is read, as the user wrote it
        return folder


RunOpt = Annotated[
    str | None,
    typer.Option("--run", help="Run folder (default: runs/<model>-<data>)."),
]
DeviceOpt = Annotated[
    str,
    typer.Option(
        "--device",
        help="Where models run: auto (a GPU when there is one), cpu, cuda or cuda:N; "
        "mixed precision on CUDA (bfloat16 where supported, float16 otherwise).",
    ),
]
WorkersOpt = Annotated[
    int | None,
    typer.Option(
        "--workers",
        min=0,
        help="Processes decoding images per data loader (default: one per CPU, up to 8; "
        "0 decodes in this process).",
    ),
]
AllowOverlapOpt = Annotated[
    bool,
    typer.Option(
        "--allow-overlap",
        help="Accept validation samples that the backbone's recorded training used "
        "(validation accuracy is then optimistic).",
    ),
]
SpaceOpt = Annotated[
    str,
    typer.Option(
        "--space",
        help="Search space: a shipped name (default, lgvit, multiexit-vit, uniform) or a YAML file.",
    ),
]
HeadEpochsOpt = Annotated[
    int,
    typer.Option(
        "--head-epochs",
        help="Maximum epochs of head training (early stopping may end a head sooner).",
    ),
]
HeadBatchOpt = Annotated[
    int, typer.Option("--head-batch-size", help="Batch size of head training.")
]
HeadMemoryOpt = Annotated[
    str | None,
    typer.Option(
        "--head-memory",
        help="Memory head training may plan for (e.g. 6GB; default: half of what is available, "
        "of the GPU on CUDA); heads that do not fit together train in groups.",
    ),
]
HeadLrOpt = Annotated[
    float, typer.Option("--head-lr", help="Initial Adam learning rate of every head.")
]
HeadLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--head-train-limit",
        help="Train heads on N shuffled training samples per epoch (quick runs).",
    ),
]
Bf16Opt = Annotated[bool, typer.Option("--bf16/--fp32", help="Run heads under bfloat16 autocast.")]


def run_folder(run: str | None, model: str, data: str) -> Path:
    """``--run``, or ``runs/<model>-<data>`` (never the committed reference runs in results/)."""
    if run:
        return Path(run)
    data_name = data if data == "fashion-mnist" else Path(data).stem
    return Path("runs") / f"{model}-{data_name}"


def use_workers(workers: int | None) -> None:
    """Apply ``--workers`` to every data loader of this process."""
    from exitsearch.data import set_default_workers

    set_default_workers(workers)


def parse_head_memory(text: str | None) -> int | None:
    """``--head-memory`` in bytes (None: planned from the memory available)."""
    if text is None:
        return None
    try:
        return parse_bytes(text)
    except ValueError as exc:
        raise ConfigError(f"--head-memory: {exc}") from None


def head_config(
    epochs: int, batch_size: int, lr: float, limit: int | None, bf16: bool, seed: int
) -> HeadTrainConfig:
    from exitsearch.training.head_training import HeadTrainConfig

    return HeadTrainConfig(
        epochs=epochs, batch_size=batch_size, lr=lr, train_limit=limit, bf16=bf16, seed=seed
    )
