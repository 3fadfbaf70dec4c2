"""Predicted against measured milliseconds per sample for front members of a run.

For each thread count and batch size, the backbone's parts and the members' heads are timed
as ``exitsearch profile --latency`` times them (a latency table, measured here on the same
machine just before); each member is exported (PyTorch) and timed by ``exitsearch bench``'s
paired rounds; the prediction is the table's milliseconds of the exits the timed samples really
took, with the runtime's measured work between the parts (a decision per early exit passed, a
fixed share per batch; ``exitsearch.export.overhead``) and, for comparison, without it. Batch 1
is compared with batch mode, batch 64 with stream mode (every stage on full batches, what the
table's batch-64 parts assume).

    python benchmarks/bench_ms_prediction.py --run results/fmnist-vit12-fashion-mnist \\
        --out results/fmnist-vit12-fashion-mnist/ms_prediction.json
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from exitsearch._io import atomic_write_json, read_json
from exitsearch.core.costs import CostModel
from exitsearch.export import benchmark, export_bundle, load_bundle
from exitsearch.export.bench import bench_inputs
from exitsearch.export.overhead import with_exit_overhead
from exitsearch.heads import HeadContext, measure_heads_latency
from exitsearch.pipeline.selection import bundle_from_run
from exitsearch.profile import measure_latency
from exitsearch.profile.backbone import profile_backbone


def _members(run: Path, n: int) -> list[int]:
    """The recommended member and ``n - 1`` others spread over the front's cost range."""
    doc = read_json(run / "pareto.json")
    ids = [m["id"] for m in sorted(doc["front"], key=lambda m: m["val"]["mean_flops"])]
    picks = {doc["recommended"]}
    for i in np.linspace(0, len(ids) - 1, n + 1)[:-1].round().astype(int):
        if len(picks) >= n:
            break
        picks.add(ids[i])
    return sorted(picks)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--members", type=int, default=6)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    ids = _members(args.run, args.members)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for i in ids:
            sel = bundle_from_run(args.run, i)
            path = export_bundle(
                Path(tmp) / f"m{i}",
                sel.backbone,
                sel.heads,
                sel.config,
                sel.operating_points,
                sel.predicted,
                sel.meta,
            )
            models[i] = load_bundle(path)
        first = models[ids[0]]
        bb = first.backbone
        specs = sorted({s for m in models.values() for s in m.config.exits}, key=lambda s: s.key)
        profile = profile_backbone(bb)
        pool = bench_inputs(first, 64 * args.repeats)
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                t0 = time.perf_counter()
                plain = measure_latency(bb, "cpu", batch)
                table = with_exit_overhead(plain, bb, repeats=args.repeats)
                heads = measure_heads_latency(specs, HeadContext.from_backbone(bb), "cpu", batch)
                head_ms = {k: v / batch for k, v in heads.items()}
                costs = CostModel(profile, {s.key: 0 for s in specs}, table, head_ms)
                # the same table without the runtime's work between parts (as before it was
                # measured): what the prediction was
                parts_only = CostModel(profile, {s.key: 0 for s in specs}, plain, head_ms)
                parts_ms = table.parts_ms / batch
                whole_ms = table.full_ms / batch
                for i in ids:
                    model = models[i]
                    report = benchmark(
                        model,
                        [batch],
                        repeats=args.repeats,
                        inputs=pool,
                        stream=batch > 1,
                        stream_repeats=5,
                    )
                    row = next(
                        r for r in report.rows if r.mode == ("stream" if batch > 1 else "batch")
                    )
                    counts = np.asarray(row.exit_counts, dtype=np.float64)
                    exit_ms = costs.exit_ms(model.config)
                    predicted = float(counts @ exit_ms / counts.sum())
                    before = float(counts @ parts_only.exit_ms(model.config) / counts.sum())
                    measured = row.model_ms / batch
                    rows.append(
                        {
                            "member": i,
                            "threads": threads,
                            "batch_size": batch,
                            "mode": row.mode,
                            "predicted_ms": predicted,
                            "measured_ms": measured,
                            "ratio": measured / predicted,
                            "predicted_parts_only_ms": before,
                            "ratio_parts_only": measured / before,
                            "exit_decision_ms": table.exit_decision_ms / batch,
                            "exit_fixed_ms": table.exit_fixed_ms / batch,
                            "backbone_measured_ms": row.backbone_ms / batch,
                            "backbone_parts_ms": parts_ms,
                            "backbone_whole_ms": whole_ms,
                        }
                    )
                    print(
                        f"threads {threads} batch {batch:3d} member {i:5d}: predicted "
                        f"{predicted:.4f} ms, measured {measured:.4f} ms "
                        f"({measured / predicted:.2f}x; parts only {measured / before:.2f}x)",
                        flush=True,
                    )
                print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    ratios = np.array([r["ratio"] for r in rows])
    before = np.array([r["ratio_parts_only"] for r in rows])
    doc = {
        "run": str(args.run),
        "members": ids,
        "repeats": args.repeats,
        "rows": rows,
        "summary": {
            "within_10_percent": int(np.sum(np.abs(ratios - 1) <= 0.10)),
            "pairs": len(rows),
            "median_ratio": float(np.median(ratios)),
            "min_ratio": float(ratios.min()),
            "max_ratio": float(ratios.max()),
            "parts_only_within_10_percent": int(np.sum(np.abs(before - 1) <= 0.10)),
            "parts_only_median_ratio": float(np.median(before)),
        },
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    s = doc["summary"]
    print(
        f"{s['within_10_percent']} of {s['pairs']} pairs within 10 %; measured / predicted "
        f"median {s['median_ratio']:.2f} (from {s['min_ratio']:.2f} to {s['max_ratio']:.2f})"
    )


if __name__ == "__main__":
    main()
