"""The served model alone, in-process: what the exits save per image before HTTP is added.

Usage::

    python benchmarks/bench_serve_model.py results/fmnist-vit12-fashion-mnist/export/config-299 \
        --json-out results/serve/model.json --plot results/serve/model.png

A server replica's model (:class:`exitsearch.serve.engine.ServingModel`, one PyTorch thread)
takes Fashion-MNIST test images in submissions of a fixed size, as dynamic batches would bring
them, three ways: the backbone alone (what ``exitsearch serve --backbone-only`` runs), the
bundle in stream mode (what ``exitsearch serve`` runs: the images that go on past an exit wait
for the next submissions' company, at most ``--patience`` of them; everything is drained at the
end) and the bundle in batch mode (each submission thins out on its own). Per submission size,
``--repeats`` passes over the same images, the three in turns, and the median pass's
milliseconds per image. The stream's answers are checked against batch mode's.

What a served request costs besides the model (HTTP, Ray Serve, decoding, the answer) is the
same for both servers, so it narrows the ratio this measures: ``benchmarks/bench_serve.py``
reads the replicas' whole CPU time per image. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitsearch._io import atomic_write_json, call_atomically
from exitsearch.data.sources.fashion_mnist import load_fashion_mnist
from exitsearch.export import load_bundle
from exitsearch.serve.app import ServeOptions
from exitsearch.serve.engine import ServingModel

MODES = ("backbone", "bundle, stream mode", "bundle, batch mode")


def images(engine: ServingModel, n: int) -> np.ndarray:
    """uint8 pixels of the first ``n`` Fashion-MNIST test images, through the bundle's own
    preprocessing, as the server decodes them."""
    from PIL import Image

    _, test = load_fashion_mnist()
    return engine.pixels([Image.fromarray(np.asarray(x).reshape(28, 28)) for x in test.x[:n]])


def one_pass(engine: ServingModel, mode: str, x: np.ndarray, size: int) -> tuple[float, list[int]]:
    """Milliseconds per image over ``x`` in submissions of ``size``, and the labels answered."""
    top = [1] * size
    labels: dict[int, int] = {}
    t0 = time.perf_counter()
    if mode == "bundle, stream mode":
        for i in range(0, len(x), size):
            _, done = engine.submit(x[i : i + size], None, top[: len(x[i : i + size])])
            labels.update((k, a.label) for k, a in done)
        labels.update((k, a.label) for k, a in engine.drain())
        answered = [labels[k] for k in sorted(labels)]
    else:
        answered: list[int] = []
        for i in range(0, len(x), size):
            chunk = x[i : i + size]
            answered += [a.label for a in engine.infer(chunk, None, top[: len(chunk)])]
    return 1000 * (time.perf_counter() - t0) / len(x), answered


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--images", type=int, default=1024)
    ap.add_argument("--sizes", default="1,2,4,8,16,32", help="images per submission")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--patience", type=int, default=ServeOptions.patience)
    ap.add_argument(
        "--max-batch-size",
        type=int,
        default=ServeOptions.max_batch_size,
        help="the stream runs a stage once this many images wait there, as the server does",
    )
    args = ap.parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",")]
    torch.set_num_threads(1)
    engines = {
        "backbone": ServingModel(load_bundle(args.bundle), backbone_only=True),
        "bundle, stream mode": ServingModel(
            load_bundle(args.bundle), batch_size=args.max_batch_size, patience=args.patience
        ),
        "bundle, batch mode": ServingModel(load_bundle(args.bundle)),
    }
    x = images(engines["backbone"], args.images)
    model = engines["bundle, batch mode"].model
    costs = model.costs
    point = model.operating_points[model.point_index] if model.point_index is not None else None
    for mode, engine in engines.items():  # first batches are slow
        one_pass(engine, mode, x[:64], 8)
    t0 = time.time()
    rows = []
    for size in sizes:
        passes: dict[str, list[float]] = {m: [] for m in MODES}
        answers: dict[str, list[int]] = {}
        for rep in range(args.repeats):
            for mode in MODES if rep % 2 == 0 else MODES[::-1]:
                ms, answers[mode] = one_pass(engines[mode], mode, x, size)
                passes[mode].append(ms)
        med = {m: statistics.median(v) for m, v in passes.items()}
        stream, batch = answers["bundle, stream mode"], answers["bundle, batch mode"]
        row = {
            "images_per_submission": size,
            "ms_per_image": med,
            "passes_ms_per_image": {m: [round(v, 4) for v in vs] for m, vs in passes.items()},
            "backbone_over_stream": med["backbone"] / med["bundle, stream mode"],
            "backbone_over_batch_mode": med["backbone"] / med["bundle, batch mode"],
            "stream_answers_equal_batch_mode": stream == batch,
        }
        rows.append(row)
        print(
            f"{size:3d} per submission: backbone {med['backbone']:.3f} ms/img, stream "
            f"{med['bundle, stream mode']:.3f} ({row['backbone_over_stream']:.2f}x), batch mode "
            f"{med['bundle, batch mode']:.3f} ({row['backbone_over_batch_mode']:.2f}x)"
            + ("" if row["stream_answers_equal_batch_mode"] else "  ANSWERS DIFFER"),
            flush=True,
        )
    doc: dict[str, Any] = {
        "bundle": str(args.bundle),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "threads": 1,
        "images": f"Fashion-MNIST t10k, first {args.images}",
        "repeats": args.repeats,
        "patience": args.patience,
        "max_batch_size": args.max_batch_size,
        "operating_point": model.point_index,
        "flops_ratio": None if point is None else costs.backbone_flops / point.mean_flops,
        "rows": rows,
        "seconds": time.time() - t0,
    }
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json_out, doc)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        call_atomically(args.plot, lambda p: plot(doc, p))
    return 0 if all(r["stream_answers_equal_batch_mode"] for r in rows) else 1


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sizes = [r["images_per_submission"] for r in doc["rows"]]
    fig, (left, right) = plt.subplots(1, 2, figsize=(11, 4))
    for mode, style in zip(MODES, ("o-", "s-", "^--"), strict=True):
        med = [r["ms_per_image"][mode] for r in doc["rows"]]
        passes = [r["passes_ms_per_image"][mode] for r in doc["rows"]]
        spread = [
            [max(0.0, m - min(p)) for m, p in zip(med, passes, strict=True)],
            [max(0.0, max(p) - m) for m, p in zip(med, passes, strict=True)],
        ]
        left.errorbar(sizes, med, yerr=spread, fmt=style, capsize=2, label=mode)
    left.set_xscale("log", base=2)
    left.set_ylim(bottom=0)
    left.set_xlabel("images per submission")
    left.set_ylabel("ms per image (median pass; bars: all passes)")
    left.set_title("the served model alone, 1 PyTorch thread", fontsize=10)
    left.legend(fontsize=8)
    for key, style, label in (
        ("backbone_over_stream", "s-", "stream mode"),
        ("backbone_over_batch_mode", "^--", "batch mode"),
    ):
        right.plot(sizes, [r[key] for r in doc["rows"]], style, label=label)
    if doc["flops_ratio"]:
        right.axhline(
            doc["flops_ratio"], color="black", lw=0.8, ls=":", label="FLOPs saved (validation)"
        )
    right.set_xscale("log", base=2)
    top = max(
        [r[k] for r in doc["rows"] for k in ("backbone_over_stream", "backbone_over_batch_mode")]
    )
    right.set_ylim(1, 1.1 * max(top, doc["flops_ratio"] or 0))
    right.set_xlabel("images per submission")
    right.set_ylabel("backbone time / bundle time")
    right.set_title(f"speed-up of operating point {doc['operating_point']}", fontsize=10)
    right.legend(fontsize=8)
    for ax in (left, right):
        ax.set_xticks(sizes, [str(s) for s in sizes])
    fig.tight_layout()
    fig.savefig(path, dpi=90, format="png")
    plt.close(fig)


if __name__ == "__main__":
    raise SystemExit(main())
