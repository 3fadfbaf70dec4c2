"""``exitsearch heads ...``: train every candidate head once, cache predictions, report them."""

from __future__ import annotations

import os
from dataclasses import replace
from typing import TYPE_CHECKING, Annotated

import typer
from exitsearch_cli._console import RichProgress, console, handle_errors
from exitsearch_cli._options import (
    AllowOverlapOpt,
    Bf16Opt,
    CheckpointOpt,
    DataDirOpt,
    DataOpt,
    DeviceOpt,
    HeadBatchOpt,
    HeadEpochsOpt,
    HeadLimitOpt,
    HeadLrOpt,
    HeadMemoryOpt,
    LimitOpt,
    ModelOpt,
    OverrideOpt,
    PretrainedOpt,
    RunOpt,
    SpaceOpt,
    SplitSeedOpt,
    ValSizeOpt,
    WorkersOpt,
    backbone_spec,
    data_spec,
    head_config,
    parse_head_memory,
    run_folder,
    use_workers,
)
from rich.markup import escape
from rich.table import Table

from exitsearch.backbone import DEFAULT_PRESET
from exitsearch.pipeline.lock import RunLock
from exitsearch.report import schema
from exitsearch.units import format_flops

if TYPE_CHECKING:
    from exitsearch.pipeline.run import RunSettings

app = typer.Typer(
    help="Train every candidate exit head once and cache their predictions.", no_args_is_help=True
)


def _settings(
    run_dir,
    model,
    override,
    checkpoint,
    pretrained,
    data,
    data_dir,
    val_size,
    split_seed,
    limit,
    space,
    head_epochs,
    head_batch_size,
    head_lr,
    head_train_limit,
    bf16,
    seed,
    device="auto",
    allow_overlap=False,
    head_memory=None,
) -> RunSettings:  # type: ignore[no-untyped-def]
    from exitsearch.pipeline.run import RunSettings

    return RunSettings(
        run_dir=run_folder(run_dir, model, data),
        backbone=backbone_spec(model, override, checkpoint, pretrained),
        data=data_spec(data, data_dir, val_size, split_seed, limit),
        space=space,
        heads=head_config(head_epochs, head_batch_size, head_lr, head_train_limit, bf16, seed),
        device=device,
        allow_overlap=allow_overlap,
        head_memory=parse_head_memory(head_memory),
    )


@app.command("train")
@handle_errors
def train(
    model: ModelOpt = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: SplitSeedOpt = 0,
    limit: LimitOpt = None,
    space: SpaceOpt = "default",
    run_dir: RunOpt = None,
    head_epochs: HeadEpochsOpt = 8,
    head_batch_size: HeadBatchOpt = 256,
    head_lr: HeadLrOpt = 1e-3,
    head_train_limit: HeadLimitOpt = None,
    bf16: Bf16Opt = False,
    seed: Annotated[
        int, typer.Option("--seed", help="Seed of head initialisation and shuffling.")
    ] = 0,
    head_memory: HeadMemoryOpt = None,
    predict: Annotated[
        bool,
        typer.Option(
            "--predict/--no-predict", help="Also cache predictions and write the heads report."
        ),
    ] = True,
    ray_address: Annotated[
        str | None,
        typer.Option(
            "--ray-address",
            envvar="RAY_ADDRESS",
            help="Train the heads sharded over this Ray cluster (HOST:PORT of `ray start "
            "--head`), one shard per group of exit locations. Default: no Ray.",
        ),
    ] = None,
    head_shards: Annotated[
        int | None,
        typer.Option("--head-shards", help="With --ray-address: shards (default: cluster CPUs)."),
    ] = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    allow_overlap: AllowOverlapOpt = False,
) -> None:
    """Train every candidate head at every candidate location in one loop, backbone frozen.

    One backbone forward per batch feeds all heads (classifier-wise training, as in Multi-Exit ViT);
    checkpoints each epoch and resumes when rerun.
    """
    from exitsearch.pipeline.run import prepare, stage_heads, stage_predict, stage_profile
    from exitsearch.report.head_table import head_table, plot_heads, write_heads_csv

    settings = _settings(
        run_dir,
        model,
        override,
        checkpoint,
        pretrained,
        data,
        data_dir,
        val_size,
        split_seed,
        limit,
        space,
        head_epochs,
        head_batch_size,
        head_lr,
        head_train_limit,
        bf16,
        seed,
        device,
        allow_overlap,
        head_memory,
    )
    use_workers(workers)
    if ray_address is not None:  # sharded over a Ray cluster (exitsearch.distributed)
        from exitsearch.distributed.cluster import probe

        probe(ray_address)
        settings = replace(settings, ray_address=ray_address, head_shards=head_shards)
    with RunLock(settings.run_dir), RichProgress() as progress:
        ctx = prepare(settings, progress)
        profile, head_flops = stage_profile(ctx)
        bank = stage_heads(ctx)
        if predict:
            preds = stage_predict(ctx, bank)
            rows = head_table(preds, profile, head_flops)
            write_heads_csv(rows, settings.run_dir / schema.HEADS_CSV)
            plot_heads(
                rows,
                settings.run_dir / schema.HEADS_PNG,
                f"{len(bank)} exit heads on {settings.backbone.model}",
            )
    console.print(f"{len(bank)} heads trained in {ctx.folders['heads']}")
    if predict:
        _print_rows(rows)


@app.command("predict")
@handle_errors
def predict(
    model: ModelOpt = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    data: DataOpt = "fashion-mnist",
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: SplitSeedOpt = 0,
    limit: LimitOpt = None,
    space: SpaceOpt = "default",
    run_dir: RunOpt = None,
    head_epochs: HeadEpochsOpt = 8,
    head_batch_size: HeadBatchOpt = 256,
    head_lr: HeadLrOpt = 1e-3,
    head_train_limit: HeadLimitOpt = None,
    bf16: Bf16Opt = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed the heads were trained with.")] = 0,
    head_memory: HeadMemoryOpt = None,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
    allow_overlap: AllowOverlapOpt = False,
) -> None:
    """Cache every trained head's per-sample outputs on validation and test, and report them.

    Confidence, normalised entropy, predicted label, correctness and uncertainty per sample,
    plus the backbone's own final exit. Trains the heads first if they are not trained yet.
    """
    train(
        model,
        override,
        checkpoint,
        pretrained,
        data,
        data_dir,
        val_size,
        split_seed,
        limit,
        space,
        run_dir,
        head_epochs,
        head_batch_size,
        head_lr,
        head_train_limit,
        bf16,
        seed,
        head_memory,
        predict=True,
        ray_address=os.environ.get("RAY_ADDRESS"),
        head_shards=None,
        device=device,
        workers=workers,
        allow_overlap=allow_overlap,
    )


def _print_rows(rows) -> None:  # type: ignore[no-untyped-def]
    table = Table(title="exit heads: accuracy against cumulative cost (practical exits marked *)")
    for col in ("head", "location", "cumulative", "head FLOPs", "val acc", "test acc"):
        table.add_column(col, justify="left" if col == "head" else "right")
    for r in rows:
        table.add_row(
            escape(f"{r.head}{' *' if r.practical else ''}"),
            str(r.location),
            format_flops(r.cumulative_flops),
            format_flops(r.head_flops),
            f"{r.val_accuracy:.4f}",
            "" if r.test_accuracy is None else f"{r.test_accuracy:.4f}",
            style="bold" if r.practical else None,
        )
    console.print(table)
