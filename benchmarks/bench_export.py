"""Measured against predicted speed-up of an exported bundle, at batch sizes 1 and 64.

Usage::

    python benchmarks/bench_export.py results/<run>/export/config-<id> \
        [--batch-sizes 1,64] [--repeats 30] [--warmup 5] [--threads 1] [--device cpu] \
        [--onnx] [--budget 40%] [--json-out bench.json] [--no-stream] [--stream-repeats 5]

Prints one line per engine and batch size and the per-part profile, and writes the full report
as JSON (default: ``<bundle>.bench.json`` next to the bundle, not inside it, so the bundle's
file list and checksums stay valid). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from exitsearch._io import atomic_write_json
from exitsearch.errors import ExitSearchError
from exitsearch.export import benchmark, load_bundle, load_onnx_bundle


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path, help="bundle folder written by `exitsearch export`")
    ap.add_argument("--batch-sizes", default="1,64", help="comma-separated (default 1,64)")
    ap.add_argument("--repeats", type=int, default=30, help="timed batches per model")
    ap.add_argument("--warmup", type=int, default=5, help="untimed batches per model")
    ap.add_argument("--threads", type=int, default=None, help="torch/onnxruntime CPU threads")
    ap.add_argument("--device", default="cpu", help="cpu or cuda")
    ap.add_argument("--onnx", action="store_true", help="also time the bundle's ONNX graphs")
    ap.add_argument("--budget", default=None, help="operating point by budget, e.g. 40%%")
    ap.add_argument("--json-out", type=Path, default=None, help="report file")
    ap.add_argument("--no-stream", action="store_true", help="skip stream mode")
    ap.add_argument("--stream-repeats", type=int, default=5, help="timed passes in stream mode")
    args = ap.parse_args(argv)
    try:
        sizes = [int(s) for s in args.batch_sizes.split(",") if s.strip()]
        if args.threads:
            torch.set_num_threads(args.threads)
        model = load_bundle(args.bundle)
        if args.budget:
            model.set_operating_point(args.budget)
        onnx_model = (
            load_onnx_bundle(args.bundle, threads=torch.get_num_threads()) if args.onnx else None
        )
        report = benchmark(
            model,
            sizes,
            device=args.device,
            repeats=args.repeats,
            warmup=args.warmup,
            onnx_model=onnx_model,
            stream=not args.no_stream,
            stream_repeats=args.stream_repeats,
        )
    except (ExitSearchError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    out = args.json_out or args.bundle.with_name(args.bundle.name + ".bench.json")
    atomic_write_json(out, report.to_json())
    print(report.configuration)
    print(f"inputs: {report.inputs}; {report.device_name}, {report.threads} thread(s)")
    print(
        f"{'run':>18} {'backbone ms':>12} {'exported ms':>12} {'backbone/s':>11} "
        f"{'exported/s':>11} {'measured':>9} {'predicted':>9}  exits"
    )
    for r in report.rows:
        print(
            f"{r.label:>18} {r.backbone_ms:12.3f} {r.model_ms:12.3f} "
            f"{r.backbone_images_per_s:11.0f} {r.model_images_per_s:11.0f} "
            f"{r.measured_speedup:8.2f}x {r.predicted_speedup:8.2f}x  {r.exit_counts}"
        )
    for r in report.rows:
        parts = ", ".join(f"{p.part} {p.ms:.3f}" for p in r.parts)
        print(f"{r.label} ms per batch: {parts}")
    print(f"report: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
