"""``exitsearch finetune``: train a bundle's configuration with one strategy and export it again;
``exitsearch finetune-compare``: every strategy on one bundle, with a table and a plot."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from exitsearch_cli._console import RichProgress, console, handle_errors
from exitsearch_cli._options import (
    DataDirOpt,
    DeviceOpt,
    LimitOpt,
    ValSizeOpt,
    WorkersOpt,
    absolute_dir,
    absolute_source,
    use_workers,
)
from rich import box
from rich.markup import escape
from rich.table import Table

from exitsearch.errors import ConfigError, DataError
from exitsearch.finetune import PAPER_STRATEGIES
from exitsearch.units import format_flops

if TYPE_CHECKING:
    from exitsearch.data import DataSpec
    from exitsearch.finetune import TrainSettings

__all__ = ["finetune", "finetune_compare"]

StrategyHelp = "Training strategy: " + ", ".join(PAPER_STRATEGIES) + "."
EpochsOpt = Annotated[
    int | None,
    typer.Option(
        "--epochs",
        help="Epochs per phase (layer-wise: per segment; lgvit: per stage). Default 3.",
    ),
]
BatchOpt = Annotated[int | None, typer.Option("--batch-size", help="Batch size (default 128).")]
LrOpt = Annotated[
    float | None,
    typer.Option("--lr", help="AdamW learning rate of the backbone (default 1e-4)."),
]
HeadLrOpt = Annotated[
    float | None,
    typer.Option("--head-lr", help="Learning rate of exit heads and aligning modules (1e-3)."),
]
SeedOpt = Annotated[
    int | None, typer.Option("--seed", help="Seed of shuffling, random draws, new modules (0).")
]
DataOpt = Annotated[
    str | None,
    typer.Option(
        "--data",
        help="'fashion-mnist', a class-folder tree or an .npz (default: the bundle's data).",
    ),
]
OverwriteOpt = Annotated[
    bool, typer.Option("--overwrite", help="Replace a finished result of another recipe.")
]
ProgressOpt = Annotated[
    bool, typer.Option("--progress/--no-progress", help="Show progress bars on stderr.")
]


def _settings(**given: Any) -> TrainSettings:
    from exitsearch.finetune import TrainSettings

    return TrainSettings(**{k: v for k, v in given.items() if v is not None})


def _data(
    bundle: str,
    data: str | None,
    data_dir: str | None,
    val_size: int | None,
    split_seed: int | None,
    limit: int | None,
) -> DataSpec:
    """The bundle's data spec with the options given on the command line replacing its fields."""
    from exitsearch.data import DataSpec
    from exitsearch.data.sources import resolve_source
    from exitsearch.export import read_manifest

    meta = (read_manifest(bundle).get("meta") or {}).get("data")
    base = DataSpec.from_dict(meta).to_dict() if isinstance(meta, dict) else DataSpec().to_dict()
    if data is None:
        src = base["source"]
        if not resolve_source(src).startswith("fashion-mnist") and not Path(src).exists():
            raise DataError(
                f"{src}: the data this bundle was searched on is not here; "
                "give --data with where it is now"
            )
    given = {
        "source": None if data is None else absolute_source(data),
        "data_dir": absolute_dir(data_dir),
        "val_size": val_size,
        "seed": split_seed,
        "limit": limit,
    }
    return DataSpec(**(base | {k: v for k, v in given.items() if v is not None}))


def _assignments(items: list[str] | None) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (``0.5``, ``true``, ``[1, 0.5]``)."""
    import yaml

    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"--set takes key=value, got {item!r}")
        try:
            out[key.strip()] = yaml.safe_load(value)
        except yaml.YAMLError:
            raise ConfigError(f"--set {key}: cannot read the value {value!r}") from None
    return out


def _print_report(report: dict[str, Any], bundle: Path) -> None:
    from exitsearch.profile import UNIT

    before, after = report["before"], report["after"]
    console.print(f"[bold]bundle[/] {escape(str(bundle))}", highlight=False)
    for note in report.get("notes", []):
        console.print(f"  {escape(note)}", highlight=False)
    table = Table(title=f"{escape(report['strategy'])}: accuracy before -> after")
    for col in ("exit", "validation", "test"):
        table.add_column(col, justify="right")
    for b, a in zip(before["exits"], after["exits"], strict=True):
        table.add_row(
            escape(b["key"]),
            f"{b['val_accuracy']:.4f} -> {a['val_accuracy']:.4f}",
            f"{b['test_accuracy']:.4f} -> {a['test_accuracy']:.4f}",
        )
    table.add_row(
        "final",
        f"{before['final']['val_accuracy']:.4f} -> {after['final']['val_accuracy']:.4f}",
        f"{before['final']['test_accuracy']:.4f} -> {after['final']['test_accuracy']:.4f}",
    )
    console.print(table)
    budget = report["budget"]["mean_flops"]
    bm, am = before["matched"], after["matched"]
    console.print(
        f"at the source configuration's cost ({format_flops(budget)} per sample, {UNIT}, "
        f"chosen on validation): test accuracy {bm['test']['accuracy']:.4f} -> "
        f"{am['test']['accuracy']:.4f} (mean cost {format_flops(am['test']['mean_flops'])}); "
        f"{after.get('points', len(after['operating_points']))} operating point(s) in the new bundle; trained "
        f"{report['training']['epochs']} epoch(s) in {report['training']['seconds']:.0f} s",
        highlight=False,
    )


@handle_errors
def finetune(
    bundle: Annotated[
        str | None,
        typer.Argument(
            metavar="BUNDLE", help="Bundle folder to fine-tune (from `exitsearch export`)."
        ),
    ] = None,
    strategy: Annotated[str | None, typer.Option("--strategy", "-s", help=StrategyHelp)] = None,
    recipe: Annotated[
        str | None,
        typer.Option(
            "--recipe",
            help="Rerun a recipe (a fine-tuned bundle's train.yaml); BUNDLE then only says "
            "where its source bundle lies now.",
        ),
    ] = None,
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    head_lr: HeadLrOpt = None,
    seed: SeedOpt = None,
    hparams: Annotated[
        list[str] | None,
        typer.Option(
            "--set", help="Strategy hyperparameter key=value (e.g. alpha=0.1); repeatable."
        ),
    ] = None,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Output folder (default runs/finetune/<bundle>/<strategy>)."),
    ] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: Annotated[
        int | None, typer.Option("--split-seed", help="Seed of the train/validation split.")
    ] = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = True,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
) -> None:
    """Fine-tune a bundle's configuration with one strategy and write a new bundle.

    Trains its exits, heads and backbone, re-fits its thresholds on validation and write a new bundle plus a report. Interrupted runs
    resume from the last epoch when rerun."""
    from exitsearch.finetune import Recipe, list_strategies, make_recipe
    from exitsearch.finetune.job import finetune as run_finetune

    if recipe is not None:
        given = {
            "--strategy": strategy,
            "--epochs": epochs,
            "--batch-size": batch_size,
            "--lr": lr,
            "--head-lr": head_lr,
            "--seed": seed,
            "--set": hparams,
            "--data": data,
            "--data-dir": data_dir,
            "--val-size": val_size,
            "--split-seed": split_seed,
            "--limit": limit,
        }
        clash = [k for k, v in given.items() if v]
        if clash:
            raise ConfigError(
                f"--recipe fixes the strategy, its settings and the data; leave out "
                f"{', '.join(clash)}"
            )
        plan = Recipe.from_yaml(recipe)
        source = bundle
    else:
        if bundle is None:
            raise ConfigError("give a BUNDLE folder (or --recipe FILE)")
        if strategy is None:
            raise ConfigError(f"give --strategy; known: {', '.join(list_strategies())}")
        plan = make_recipe(
            bundle,
            strategy,
            _settings(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, seed=seed),
            _data(bundle, data, data_dir, val_size, split_seed, limit),
            _assignments(hparams),
        )
        source = None
    dest = (
        Path(out)
        if out
        else Path("runs") / "finetune" / Path(plan.source.bundle).name / plan.strategy
    )
    with RichProgress(enabled=progress) as bar:
        use_workers(workers)
        result = run_finetune(
            plan, dest, bundle=source, progress=bar, overwrite=overwrite, device=device
        )
    _print_report(result.report, result.bundle)


@handle_errors
def finetune_compare(
    bundle: Annotated[
        str, typer.Argument(metavar="BUNDLE", help="Bundle folder to fine-tune with each strategy.")
    ],
    out: Annotated[
        str | None,
        typer.Option("--out", help="Output folder (default runs/finetune/<bundle>)."),
    ] = None,
    strategies: Annotated[
        str,
        typer.Option("--strategies", help="Comma-separated strategies (default: all five)."),
    ] = ",".join(PAPER_STRATEGIES),
    epochs: EpochsOpt = None,
    batch_size: BatchOpt = None,
    lr: LrOpt = None,
    head_lr: HeadLrOpt = None,
    seed: SeedOpt = None,
    hparams: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            help="Hyperparameter of one strategy, STRATEGY.key=value (e.g. lgvit.alpha=0.1).",
        ),
    ] = None,
    data: DataOpt = None,
    data_dir: DataDirOpt = None,
    val_size: ValSizeOpt = None,
    split_seed: Annotated[
        int | None, typer.Option("--split-seed", help="Seed of the train/validation split.")
    ] = None,
    limit: LimitOpt = None,
    overwrite: OverwriteOpt = False,
    progress: ProgressOpt = True,
    device: DeviceOpt = "auto",
    workers: WorkersOpt = None,
) -> None:
    """Run every fine-tuning strategy on one bundle and compare their fronts.

    Same data, epochs and seed for each; writes comparison.csv/.json and comparison.png (each front against classifier-wise) to --out."""
    from exitsearch.finetune import compare_strategies
    from exitsearch.profile import UNIT

    names = [s.strip() for s in strategies.split(",") if s.strip()]
    if not names:
        raise ConfigError("--strategies names no strategy")
    per: dict[str, dict[str, Any]] = {}
    for key, value in _assignments(hparams).items():
        name, dot, field = key.partition(".")
        if not dot or not field:
            raise ConfigError(f"--set takes STRATEGY.key=value in a comparison, got {key!r}")
        per.setdefault(name, {})[field] = value
    dest = Path(out) if out else Path("runs") / "finetune" / Path(bundle).resolve().name
    use_workers(workers)
    with RichProgress(enabled=progress) as bar:
        doc = compare_strategies(
            bundle,
            dest,
            names,
            _settings(epochs=epochs, batch_size=batch_size, lr=lr, head_lr=head_lr, seed=seed),
            _data(bundle, data, data_dir, val_size, split_seed, limit),
            per,
            progress=bar,
            overwrite=overwrite,
            device=device,
        )
    budget = doc["budget"]["mean_flops"] if doc["budget"] else float("nan")
    table = Table(
        title=f"test accuracy at the source configuration's cost ({format_flops(budget)}, {UNIT})",
        box=box.SIMPLE_HEAD,
    )
    table.add_column("strategy", justify="left", no_wrap=True)
    for col in ("epochs", "s", "val acc", "test acc", "MFLOPs", "final test"):
        table.add_column(col, justify="right")
    for row in doc["rows"]:
        name = "source" if row["status"] == "reference" else row["strategy"]
        if "matched_test_accuracy" not in row:
            table.add_row(escape(name), escape(row["status"]), "", "", "", "", "")
            continue
        table.add_row(
            escape(name),
            "" if row.get("epochs") is None else str(row["epochs"]),
            "" if row.get("train_seconds") is None else f"{row['train_seconds']:.0f}",
            f"{row['matched_val_accuracy']:.4f}",
            f"{row['matched_test_accuracy']:.4f}",
            f"{row['matched_test_mean_flops'] / 1e6:.2f}",
            f"{row['final_test_accuracy']:.4f}",
        )
    console.print(table)
    console.print(
        "source: the bundle without fine-tuning; s: training seconds; MFLOPs: mean cost per "
        "test sample at the operating point chosen on validation; final test: the last exit's",
        highlight=False,
    )
    console.print(f"[bold]comparison[/] {escape(str(dest))}/comparison.{{csv,json,png}}")
