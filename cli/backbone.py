"""``exitsearch backbone ...``: train or fine-tune a backbone, list the known ones."""

from __future__ import annotations

from dataclasses import replace
from typing import Annotated

import typer
from exitsearch_cli._console import (
    RichProgress,
    console,
    err_console,
    handle_errors,
    invocation,
)
from exitsearch_cli._options import (
    CheckpointOpt,
    DataDirOpt,
    DeviceOpt,
    LimitOpt,
    ModelOpt,
    OverrideOpt,
    PresetDataOpt,
    PretrainedOpt,
    SplitSeedOpt,
    ValSizeOpt,
    WorkersOpt,
    backbone_spec,
    data_spec,
    preset_data,
    use_workers,
)
from rich.markup import escape
from rich.table import Table

from exitsearch.backbone import DEFAULT_PRESET, PRESETS

app = typer.Typer(help="Train, fine-tune and list backbones.", no_args_is_help=True)


@app.command("train")
@handle_errors
def train(
    out: Annotated[str, typer.Option("--out", help="Folder for checkpoints and the final model.")],
    model: ModelOpt = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    from_scratch: Annotated[
        bool, typer.Option("--from-scratch", help="Ignore a preset's shipped weights.")
    ] = False,
    data: PresetDataOpt = None,
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: SplitSeedOpt = 0,
    limit: LimitOpt = None,
    epochs: Annotated[int, typer.Option(help="Training epochs.")] = 20,
    batch_size: Annotated[int, typer.Option(help="Batch size.")] = 128,
    lr: Annotated[float, typer.Option(help="Peak learning rate (AdamW, cosine decay).")] = 1e-3,
    weight_decay: Annotated[float, typer.Option(help="AdamW weight decay.")] = 0.05,
    seed: Annotated[int, typer.Option(help="Seed of initialisation, shuffling, augmentation.")] = 0,
    augment: Annotated[
        str | None,
        typer.Option(
            "--augment",
            help="Light augmentations: crop,flip, crop, flip or none; default crop,flip (flip "
            "for counting, where a crop could cut objects away). Leave out flip for digits, text "
            "and anything a mirror changes.",
        ),
    ] = None,
    no_augment: Annotated[
        bool, typer.Option("--no-augment", help="No augmentation (same as --augment none).")
    ] = False,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
) -> None:
    """Train or fine-tune a backbone; checkpoints each epoch and resumes when rerun."""
    import torch

    from exitsearch.backbone import create_backbone, resolve_spec
    from exitsearch.core.task import get_task
    from exitsearch.data import load_splits
    from exitsearch.training.backbone_trainer import BackboneTrainConfig, train_backbone

    torch.manual_seed(seed)
    data = preset_data(model, data)
    spec = backbone_spec(model, override, checkpoint, pretrained)
    if from_scratch and spec.model in PRESETS:
        # the preset's architecture without its shipped weights; the user's -o and
        # --checkpoint still count (e.g. -o num_classes=4 for data of four classes)
        spec = replace(resolve_spec(spec), checkpoint=spec.checkpoint)
    bb = create_backbone(spec)
    use_workers(workers)
    splits = load_splits(
        data_spec(data, data_dir, val_size, split_seed, limit), preprocess=bb.preprocess()
    )
    cfg = BackboneTrainConfig(
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        seed=seed,
        augment=_augment_setting(
            "none" if no_augment else augment or get_task(splits.task).augment
        ),
    )
    with RichProgress() as progress:
        meta = train_backbone(
            bb, splits, cfg, out, progress=progress, command=invocation(), device=device
        )
    if (note := splits.limit_note()) is not None:  # said with the result it explains
        err_console.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    quality = meta["quality"]
    console.print(
        f"validation {quality} {meta['val_quality']:.4f}, test {quality} "
        f"{meta['test_quality']:.4f}; weights in {out}/model.safetensors"
    )


@app.command("list")
@handle_errors
def list_(
    pattern: Annotated[
        str, typer.Argument(metavar="PATTERN", help="Filter, e.g. 'vit_*' or '*small*'.")
    ] = "*",
) -> None:
    """List shipped presets and the timm models (ViT, DeiT, Swin) exitsearch can use."""
    from exitsearch.backbone import list_backbones
    from exitsearch.backbone.families import family_of_name

    names = list_backbones(pattern)
    table = Table()
    # the names whole at any width (they are what one copies); the description wraps
    table.add_column("name", no_wrap=True, min_width=max((len(n) for n in names), default=4))
    for column in ("kind", "family", "description"):
        table.add_column(column)
    for name in names:
        preset = PRESETS.get(name)
        arch = preset.spec.model if preset else name
        table.add_row(
            name,
            "preset" if preset else "timm",
            getattr(family_of_name(arch), "name", ""),
            preset.description if preset else "",
        )
    console.print(table)


def _augment_setting(text: str) -> bool | str:
    """True (all) and False (none) as before per-part choices existed; a part list otherwise."""
    from exitsearch.data import Augment

    aug = Augment.parse(text)
    return aug.enabled if str(aug) in ("crop,flip", "none") else str(aug)
