"""``exitsearch export``: a configuration of a run's front as a self-contained bundle."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from exitsearch_cli._console import console, err_console, handle_errors
from rich.markup import escape
from rich.table import Table

from exitsearch.errors import ConfigError
from exitsearch.report.schema import EXPORT_DIR
from exitsearch.units import format_flops


@handle_errors
def export(
    run: Annotated[
        str,
        typer.Argument(metavar="RUN", help="Run folder of `exitsearch run` (holds pareto.json)."),
    ],
    config: Annotated[
        int | None,
        typer.Option("--config", help="id of the front member to export (see pareto.json)."),
    ] = None,
    best: Annotated[
        bool,
        typer.Option(
            "--best", help="Export the recommended member (the default without --config)."
        ),
    ] = False,
    out: Annotated[
        str | None,
        typer.Option("--out", help="Bundle folder to create (default: RUN/export/config-<id>)."),
    ] = None,
    onnx: Annotated[
        bool, typer.Option("--onnx", help="Also export every part as an ONNX graph (onnx/).")
    ] = False,
    onnx_exporter: Annotated[
        str,
        typer.Option(
            "--onnx-exporter",
            help="torch exporter for --onnx: dynamo (torch.export based) or legacy (TorchScript).",
        ),
    ] = "dynamo",
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Replace an existing bundle at the destination.")
    ] = False,
) -> None:
    """Export a front member as a bundle: a runnable model with per-sample exits.

    `exitsearch.load` turns the bundle into a model (backbone and head weights, operating points, training recipe)."""
    from exitsearch.core.task import get_task
    from exitsearch.export import export_bundle, read_manifest
    from exitsearch.export.onnx import EXPORTERS
    from exitsearch.pipeline.selection import bundle_from_run
    from exitsearch.profile import UNIT

    if best and config is not None:
        raise ConfigError("--best and --config exclude each other")
    if onnx_exporter not in EXPORTERS:
        raise ConfigError(f"--onnx-exporter takes {' or '.join(EXPORTERS)}, got {onnx_exporter!r}")
    sel = bundle_from_run(run, config)
    dest = Path(out) if out else Path(run) / EXPORT_DIR / f"config-{sel.config_id}"
    path = export_bundle(
        dest,
        sel.backbone,
        sel.heads,
        sel.config,
        sel.operating_points,
        sel.predicted,
        sel.meta,
        aux_decoder=sel.aux_decoder,
        task=sel.task,
        onnx=onnx,
        onnx_exporter=onnx_exporter,
        overwrite=overwrite,
    )
    doc = read_manifest(path, verify=False)
    costs = doc["costs"]
    console.print(f"[bold]bundle[/] {escape(str(path))}", highlight=False)
    console.print(f"configuration {sel.config_id}: {escape(doc['description'])}", highlight=False)
    task = get_task(doc.get("task"))
    table = Table(title=f"predicted (cost per sample in {UNIT})")
    for col in ("split", task.quality, "mean cost", "speed-up"):
        table.add_column(col, justify="right")
    for split, ev in doc["predicted"].items():
        table.add_row(
            split,
            task.format(ev["accuracy"]),
            format_flops(ev["mean_flops"]),
            f"{costs['backbone_flops'] / ev['mean_flops']:.2f}x",
        )
    console.print(table)
    points = doc["operating_points"]
    default = doc.get("default_operating_point")
    console.print(
        f"{len(points)} operating point(s) to switch between at run time "
        "(MultiExitModel.set_operating_point, numbered from 0 along the ladder"
        + (f"; this configuration is point {default}" if default is not None else "")
        + ")",
        highlight=False,
    )
    if not onnx and (sel.meta.get("latency") or {}).get("engine") == "onnx":
        err_console.print(
            "note: the run priced its milliseconds on onnxruntime (its latency table's engine); "
            "add --onnx to export the graphs that run there (`exitsearch bench --onnx` times them)",
            highlight=False,
        )
    if doc.get("onnx"):
        g = doc["onnx"]
        console.print(
            f"ONNX ({g['exporter']} exporter, {g['seconds']:.1f} s): largest difference from "
            f"PyTorch {g.get('max_abs_error', float('nan')):.2e}",
            highlight=False,
        )
