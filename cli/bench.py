"""``exitsearch bench``: measured against predicted speed-up of an exported bundle."""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Annotated

import typer
from exitsearch_cli._console import console, err_console, handle_errors
from exitsearch_cli.profile import parse_batch_sizes
from rich import box
from rich.markup import escape
from rich.table import Table

from exitsearch.errors import ConfigError
from exitsearch.units import format_flops

if TYPE_CHECKING:
    from exitsearch.export.bench import BenchReport


@handle_errors
def bench(
    bundle: Annotated[
        str, typer.Argument(metavar="BUNDLE", help="Bundle folder written by `exitsearch export`.")
    ],
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Comma-separated batch sizes, e.g. 1,64.")
    ] = "1,64",
    device: Annotated[
        str, typer.Option(help="Device of the PyTorch runs: auto, cpu, cuda or cuda:N.")
    ] = "auto",
    repeats: Annotated[
        int, typer.Option(help="Timed batches per model and batch size (median is reported).")
    ] = 20,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up batches per model.")] = 3,
    json_out: Annotated[
        str | None, typer.Option("--json-out", help="Write the full report to this JSON file.")
    ] = None,
    onnx: Annotated[
        bool,
        typer.Option("--onnx", help="Also time the bundle's ONNX graphs (onnxruntime, CPU)."),
    ] = False,
    onnx_shared_threads: Annotated[
        bool,
        typer.Option(
            "--onnx-shared-threads",
            help="Run every ONNX graph on one shared thread pool (onnxruntime's global pool) "
            "instead of a pool per graph: faster at batch 1, slower in stream mode here.",
        ),
    ] = False,
    budget: Annotated[
        str | None,
        typer.Option(
            "--budget",
            help="Run at the most accurate operating point within this mean cost per sample "
            "(e.g. 2MFLOPs, 40%; FLOPs = multiply-accumulates).",
        ),
    ] = None,
    point: Annotated[
        int | None, typer.Option("--point", help="Run at this operating point (index).")
    ] = None,
    threads: Annotated[
        int | None,
        typer.Option(
            "--threads", help="CPU threads for PyTorch and onnxruntime (default: torch's)."
        ),
    ] = None,
    stream: Annotated[
        bool,
        typer.Option(
            "--stream/--no-stream",
            help="Also time stream mode (the batches as one stream, every stage on full "
            "batches) at batch sizes above 1.",
        ),
    ] = True,
    stream_repeats: Annotated[
        int, typer.Option(help="Timed passes over all the batches in stream mode.")
    ] = 5,
    plot: Annotated[
        str | None,
        typer.Option("--plot", help="Write a PNG of measured against predicted speed-ups."),
    ] = None,
) -> None:
    """Time an exported model against its backbone alone on the same inputs.

    Shows the measured speed-up next to the one the FLOPs predict, with a per-part profile."""
    import torch

    from exitsearch._io import atomic_write_json, check_output_file
    from exitsearch.export import benchmark, load_bundle, load_onnx_bundle
    from exitsearch.report.bench import plot_bench

    sizes = parse_batch_sizes(batch_size)
    if repeats < 1 or warmup < 0 or stream_repeats < 1:
        raise ConfigError(
            "--repeats and --stream-repeats must be at least 1 and --warmup at least 0, got "
            f"{repeats}, {stream_repeats} and {warmup}"
        )
    for path, option in ((json_out, "--json-out"), (plot, "--plot")):
        if path is not None:  # before the measurement, which a wrong path would throw away
            check_output_file(path, option)
    if threads is not None:
        if threads < 1:
            raise ConfigError(f"--threads takes a positive integer, got {threads}")
        torch.set_num_threads(threads)
    if budget is not None and point is not None:
        raise ConfigError("--budget and --point exclude each other")
    if onnx_shared_threads and not onnx:
        raise ConfigError("--onnx-shared-threads applies to --onnx: add --onnx")
    model = load_bundle(bundle)
    if budget is not None:
        model.set_operating_point(budget)
    elif point is not None:
        model.set_operating_point(index=point)
    from exitsearch.device import resolve_device

    device = str(resolve_device(device).device)
    onnx_model = None
    if onnx:
        onnx_model = load_onnx_bundle(
            bundle, threads=torch.get_num_threads(), shared_threads=onnx_shared_threads
        )
        if device != "cpu":
            err_console.print("note: the ONNX graphs run on the CPU (CPUExecutionProvider)")
    report = benchmark(
        model,
        sizes,
        device=device,
        repeats=repeats,
        warmup=warmup,
        onnx_model=onnx_model,
        stream=stream,
        stream_repeats=stream_repeats,
    )
    if json_out:
        doc = report.to_json()
        if onnx_model is not None:
            doc["onnx_thread_pool"] = onnx_model.thread_pool
        atomic_write_json(json_out, doc)
    if plot:
        plot_bench([report.to_json()], plot, title=report.configuration)
    print_report(report)
    if onnx_model is not None:
        console.print(f"onnxruntime thread pool: {onnx_model.thread_pool}", highlight=False)


def print_report(report: BenchReport) -> None:
    console.print(f"[bold]{escape(report.configuration)}[/]", highlight=False)
    load = (
        ""
        if report.load_average is None
        else f"; load average {report.load_average[0]:.2f} on {report.cpus} processor(s)"
    )
    console.print(
        f"inputs: {report.inputs}; {report.device_name}, {report.threads} thread(s){load}; "
        f"{report.repeats} rounds after {report.warmup} warm-up, each running both models on "
        "the same batch in alternating order",
        highlight=False,
    )
    table = Table(
        title=f"backbone alone ({format_flops(report.backbone_flops)} per sample) vs exported",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("run", justify="right", no_wrap=True)
    for col in ("backbone ms", "exported ms", "speed-up", "95 %", "FLOPs", "ratio"):
        table.add_column(col, justify="right", no_wrap=col in ("speed-up", "95 %"))
    for r in report.rows:
        table.add_row(
            r.label,
            f"{r.backbone_ms:.3f}",
            f"{r.model_ms:.3f}",
            f"{r.measured_speedup:.2f}x",
            f"{r.speedup_low:.2f}-{r.speedup_high:.2f}",
            f"{r.predicted_speedup:.2f}x",
            f"{r.measured_speedup / r.predicted_speedup:.2f}",
        )
    console.print(table)
    console.print(
        "ms: median per batch (stream: the same batches as one stream, every stage on full "
        "batches; its median pass over the number of batches); speed-up: median over rounds of "
        "backbone time / exported time on the same batch, with its 95 % interval; FLOPs: the "
        "speed-up the FLOPs predict "
        "for the exits these samples took; ratio: speed-up / FLOPs",
        highlight=False,
    )
    predicted = [r for r in report.rows if r.predicted_sample_ms is not None]
    if predicted:
        console.print(
            "predicted in ms: a latency table timed inside the same runtime just after, for the "
            "exits these samples took; measured: total time over the rounds per sample; "
            "speed-ups: the backbone's total time over the exported model's in the same "
            "rounds, against the one the table predicts (ratio)",
            highlight=False,
        )
    for r in predicted:
        console.print(
            f"{r.label}: {r.predicted_sample_ms:.4g} ms per sample predicted, "
            f"{r.measured_sample_ms:.4g} measured ({r.measured_sample_ms / r.predicted_sample_ms:.2f}); "
            f"speed-up {r.total_speedup:.2f}x of {r.predicted_speedup_ms:.2f}x predicted "
            f"({r.total_speedup / r.predicted_speedup_ms:.2f})",
            highlight=False,
        )
    for note in report.notes:
        err_console.print(f"note: {escape(note)}", highlight=False)
    for r in report.rows:
        acc = (
            ""
            if r.accuracy is None
            else (f"; {report.quality} {r.accuracy:.4f} (backbone {r.backbone_accuracy:.4f})")
        )
        console.print(
            f"{r.label}: samples per exit {' '.join(map(str, r.exit_counts))}{acc}",
            highlight=False,
        )
    for r in report.rows:
        parts = Table(title=f"where the time goes: {r.label}", box=box.SIMPLE_HEAD)
        parts.add_column("part")
        parts.add_column("ms per batch", justify="right")
        parts.add_column("share", justify="right")
        for p in r.parts:
            part = re.sub(r"^blocks (\d+)-\1$", r"block \1", p.part)  # one block
            parts.add_row(escape(part), f"{p.ms:.3f}", f"{p.share:.1%}")
        console.print(parts)
