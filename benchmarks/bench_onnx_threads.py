"""onnxruntime with a thread pool per graph against one pool shared by every graph.

An exported model is a chain of graphs (stem, segments, heads, final head). With a pool per
graph (the default), each session keeps its own threads; with the shared pool (onnxruntime's
global pool, ``load_onnx_bundle(..., shared_threads=True)``) every graph runs on the same threads.
Both controllers load the same bundle in one process and are timed in alternating rounds on the
same inputs, next to the PyTorch backbone, at each batch size (batch mode at 1, stream mode
above).

    python benchmarks/bench_onnx_threads.py results/fmnist-vit12-fashion-mnist/export/config-299 \\
        --threads 2 --out results/fmnist-vit12-fashion-mnist/onnx_threads.json
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from exitsearch._io import atomic_write_json
from exitsearch.export import load_bundle, load_onnx_bundle
from exitsearch.export.bench import bench_inputs


def _time(fn, rounds: int) -> float:  # type: ignore[no-untyped-def]
    t0 = time.perf_counter()
    for _ in range(rounds):
        fn()
    return (time.perf_counter() - t0) * 1e3 / rounds


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    model = load_bundle(args.bundle)
    # per graph first: once onnxruntime has its global pool, it refuses sessions with their own
    per_graph = load_onnx_bundle(args.bundle, threads=args.threads, shared_threads=False)
    shared = load_onnx_bundle(args.bundle, threads=args.threads, shared_threads=True)
    assert shared.thread_pool.startswith("shared") and per_graph.thread_pool == "per graph"
    pool = bench_inputs(model, 64 * 8)[0].numpy()
    rows = []
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        xs = [pool[i : i + batch] for i in range(0, len(pool) - batch + 1, batch)][:8]

        def run(m, batch=batch, xs=xs):  # type: ignore[no-untyped-def]
            if batch == 1:
                for x in xs:
                    m(x)
            else:
                m.predict(np.concatenate(xs), batch_size=batch)

        for m in (shared, per_graph, shared, per_graph):  # warm-up
            run(m)
        times: dict[str, list[float]] = {"shared": [], "per graph": []}
        for r in range(args.rounds):
            order = [("shared", shared), ("per graph", per_graph)]
            for name, m in order if r % 2 == 0 else order[::-1]:
                times[name].append(_time(lambda m=m: run(m), 1) / (len(xs) * batch))
        ratio = [a / b for a, b in zip(times["per graph"], times["shared"], strict=True)]
        row = {
            "batch_size": batch,
            "mode": "batch" if batch == 1 else "stream",
            "shared_ms_per_sample": statistics.median(times["shared"]),
            "per_graph_ms_per_sample": statistics.median(times["per graph"]),
            "per_graph_over_shared": statistics.median(ratio),
        }
        rows.append(row)
        print(
            f"batch {batch:3d}: shared {row['shared_ms_per_sample']:.4f} ms, per graph "
            f"{row['per_graph_ms_per_sample']:.4f} ms per sample; per graph / shared "
            f"{row['per_graph_over_shared']:.2f}",
            flush=True,
        )
    doc = {
        "bundle": str(args.bundle),
        "threads": args.threads,
        "rounds": args.rounds,
        "load_average": os.getloadavg(),
        "rows": rows,
    }
    atomic_write_json(args.out, doc)


if __name__ == "__main__":
    main()
