"""``exitsearch profile``: what every block of a backbone costs."""

from __future__ import annotations

import json
from typing import Annotated, Any

import typer
from exitsearch_cli._console import console, err_console, handle_errors
from exitsearch_cli._options import CheckpointOpt, OverrideOpt, PretrainedOpt, backbone_spec
from rich.markup import escape
from rich.table import Table

from exitsearch.backbone import DEFAULT_PRESET
from exitsearch.errors import ConfigError
from exitsearch.units import format_flops


def parse_batch_sizes(text: str) -> list[int]:
    try:
        sizes = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise ConfigError(
            f"--batch-size takes comma-separated positive integers, got {text!r}"
        ) from None
    if not sizes or any(s < 1 for s in sizes):
        raise ConfigError(f"--batch-size takes comma-separated positive integers, got {text!r}")
    return sizes


@handle_errors
def profile(
    model: Annotated[
        str,
        typer.Argument(
            metavar="MODEL", help="timm ViT, DeiT or Swin model name or a shipped preset."
        ),
    ] = DEFAULT_PRESET,
    override: OverrideOpt = None,
    checkpoint: CheckpointOpt = None,
    pretrained: PretrainedOpt = False,
    as_json: Annotated[
        bool, typer.Option("--json", help="Print one JSON object instead of tables.")
    ] = False,
    latency: Annotated[
        bool, typer.Option("--latency", help="Also measure latency per block.")
    ] = False,
    device: Annotated[
        str, typer.Option(help="Device for --latency: auto, cpu, cuda or cuda:N.")
    ] = "auto",
    batch_size: Annotated[
        str, typer.Option("--batch-size", help="Batch sizes for --latency, e.g. 1,64.")
    ] = "1",
    repeats: Annotated[int, typer.Option(help="Timed repeats per part (median is kept).")] = 10,
    warmup: Annotated[int, typer.Option(help="Untimed warm-up calls per part.")] = 3,
    save: Annotated[
        str | None, typer.Option(help="Write the JSON profile (with latency) to this file.")
    ] = None,
    out: Annotated[
        str | None,
        typer.Option(
            "--out",
            help="With --latency and one batch size: write a latency table of this device "
            "(backbone parts and every candidate head of --space) for `exitsearch run "
            "--latency-table` on another machine.",
        ),
    ] = None,
    space: Annotated[
        str, typer.Option(help="Search space whose candidate heads --out times.")
    ] = "default",
    engine: Annotated[
        str,
        typer.Option(
            help="Runtime timed by --latency: torch (the exported PyTorch model) or onnx (its "
            "ONNX graphs under onnxruntime, CPU)."
        ),
    ] = "torch",
) -> None:
    """Per-block FLOPs (fvcore; 1 multiply-accumulate = 1 FLOP), parameters and optional latency."""
    from exitsearch._io import atomic_write_json, check_output_file
    from exitsearch.backbone import create_backbone
    from exitsearch.profile import profile_backbone

    sizes = parse_batch_sizes(batch_size) if latency else []
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"--repeats must be at least 1 and --warmup at least 0, got {repeats} and {warmup}"
        )
    from exitsearch.export.timing import ENGINES

    if engine not in ENGINES:
        raise ConfigError(f"--engine takes {' or '.join(ENGINES)}, got {engine!r}")
    if save is not None:  # before measuring: a wrong path would throw the measurement away
        check_output_file(save, "--save")
    if out is not None:
        if len(sizes) != 1:
            raise ConfigError(
                "--out writes a table of one batch size: add --latency --batch-size N"
            )
        check_output_file(out, "--out")
    bb = create_backbone(backbone_spec(model, override, checkpoint, pretrained))
    prof = profile_backbone(bb)
    tables = []
    if sizes:
        from exitsearch.device import resolve_device
        from exitsearch.export.timing import check_request, measure_in_runtime

        device = str(resolve_device(device).device)
        if engine == "onnx" and device != "cpu":
            raise ConfigError(f"--engine onnx runs on the CPU; got --device {device}")
        for b in sizes:  # every size refused or accepted before any is measured
            check_request(bb, device, b, warmup, repeats, engine)
        candidates = []
        if out is not None:
            from exitsearch.search.space import load_search_space

            candidates = load_search_space(space).candidate_heads(bb.depth)
        what = f" and {len(candidates)} candidate heads" if candidates else ""
        measured = []
        for b in sizes:
            err_console.print(
                f"timing the backbone{what} inside the {engine} runtime on {device} at batch "
                f"{b} ..."
            )
            measured.append(
                measure_in_runtime(bb, candidates, device, b, warmup, repeats, engine=engine)
            )
        tables = [m.table for m in measured]
        if out is not None:
            from exitsearch.backbone import resolve_spec
            from exitsearch.profile.table import device_table

            spec = backbone_spec(model, override, checkpoint, pretrained)
            arch = {**resolve_spec(spec).to_dict(), "checkpoint": None, "pretrained": False}
            written = device_table(bb, arch, measured[0].table, measured[0].heads_ms, engine)
            atomic_write_json(out, written.to_json())
            err_console.print(f"wrote {out}: use it with `exitsearch run --latency-table {out}`")
    doc = prof.to_json()
    if tables:
        doc["latency"] = [t.to_json() for t in tables]
    if save:
        atomic_write_json(save, doc)
    if prof.uncounted_ops:
        ops = ", ".join(f"{op} x{n}" for op, n in prof.uncounted_ops.items())
        err_console.print(
            f"[yellow]warning:[/] not counted (no FLOP handle; elementwise by convention): {ops}",
            highlight=False,
        )
    if as_json:
        typer.echo(json.dumps(doc))
        return
    scale, prefix = (1e9, "G") if prof.total_flops >= 1e9 else (1e6, "M")

    def f(v: int) -> str:
        return f"{v / scale:.4f}"

    name = model if model == prof.model else f"{model} ({prof.model})"
    table = Table(
        title=f"{name}: {format_flops(prof.total_flops)} per sample (1 FLOP = 1 multiply-accumulate)"
    )
    # a hierarchical backbone (Swin) says what each block's state is, and where patches merge
    staged = not bb.uniform_states
    for col in (
        "part",
        *(["state"] if staged else []),
        f"{prefix}FLOPs",
        "cumulative",
        "share",
        "params",
        *(f"ms b={t.batch_size}" for t in tables),
    ):
        table.add_column(col, justify="right")
    table.add_row(
        "stem",
        *([_state(bb, 0)] if staged else []),
        f(prof.stem_flops),
        f(prof.stem_flops),
        f"{prof.stem_flops / prof.total_flops:.1%}",
        "",
        *(f"{t.stem_ms:.3f}" for t in tables),
    )
    for i, b in enumerate(prof.blocks):
        merges = staged and len(bb.block_module_names(b.index)) > 1
        table.add_row(
            f"block {b.index}" + (" +merge" if merges else ""),
            *([_state(bb, b.index)] if staged else []),
            f(b.flops),
            f(b.cumulative_flops),
            f"{b.share:.1%}",
            f"{b.params:,}",
            *(f"{t.block_ms[i]:.3f}" for t in tables),
        )
    table.add_row(
        "norm+head",
        *([""] if staged else []),
        f(prof.head_flops),
        f(prof.total_flops),
        "100.0%",
        "",
        *(f"{t.head_ms:.3f}" for t in tables),
    )
    console.print(table)
    from exitsearch.profile.latency import parts_note

    for t in tables:
        console.print(
            f"batch {t.batch_size} on {t.device_name} ({engine}): parts sum to {t.parts_ms:.3f} ms, "
            f"full forward {t.full_ms:.3f} ms (median of {t.repeats}, {t.threads} threads)"
        )
        console.print(
            f"  and the exported runtime's work between them: {t.exit_decision_ms:.3f} ms per "
            f"early exit a batch reaches, {t.exit_resume_ms:.3f} ms more for the part after an "
            f"exit it goes on from, {t.exit_fixed_ms:.3f} ms per batch"
        )
        note = parts_note(t.per_sample())
        if note:
            err_console.print(f"note: {escape(note)}", highlight=False)


def _state(bb: Any, location: int) -> str:
    """``rows x cols x width`` of the hidden state after block ``location``."""
    rows, cols = bb.state_grid(location)
    return f"{rows}x{cols}x{bb.state_dim(location)}"
