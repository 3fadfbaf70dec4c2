"""Predicted against measured milliseconds per sample for front members of a run.

For each engine (PyTorch, onnxruntime), thread count and batch size, the backbone's parts, the
members' heads and the runtime's own work are timed as ``exitsearch profile --latency`` times
them: inside the runtime, on probes (:func:`exitsearch.export.timing.measure_in_runtime`),
measured here on the same machine just before. Each member is exported and timed by
``exitsearch bench``'s paired rounds. Every round's time is set against the prediction for the
exits its samples took (the table's milliseconds of those exits); a pair's ratio is the total
measured time over the total predicted (the median of the per-round ratios is kept beside it).
The machine's speed drifts between the table and the bench on a shared machine; the bench's
paired speed-up (the backbone's total time over the model's, in the same rounds) does not, so
each pair also sets that speed-up against the one predicted in milliseconds (the table's plain
forward over the member's predicted time): ``realised``. Batch 1 is compared with batch mode, batch 64 with
stream mode (every stage on full batches, what the table's batch-64 parts assume). For
comparison, the same rounds are also set against a table of parts timed one by one, each on
its own, as tables were measured before.

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
from exitsearch.export.bench import against_prediction, bench_inputs
from exitsearch.export.bundle import load_onnx_bundle
from exitsearch.export.timing import measure_in_runtime
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
    ap.add_argument("--engines", default="torch,onnx")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--batch-sizes", default="1,64")
    ap.add_argument("--repeats", type=int, default=20, help="rounds at batch sizes above 1")
    ap.add_argument(
        "--rounds-batch-1", type=int, default=200, help="rounds at batch 1 (one sample each)"
    )
    ap.add_argument("--out", type=Path, required=True)
    args = ap.parse_args()

    engines = args.engines.split(",")
    ids = _members(args.run, args.members)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        paths = {}
        for i in ids:
            sel = bundle_from_run(args.run, i)
            paths[i] = export_bundle(
                Path(tmp) / f"m{i}",
                sel.backbone,
                sel.heads,
                sel.config,
                sel.operating_points,
                sel.predicted,
                sel.meta,
                onnx="onnx" in engines,
                onnx_exporter="legacy",
            )
        models = {i: load_bundle(p) for i, p in paths.items()}
        first = models[ids[0]]
        bb = first.backbone
        specs = sorted({s for m in models.values() for s in m.config.exits}, key=lambda s: s.key)
        keys = {s.key: 0 for s in specs}
        profile = profile_backbone(bb)
        pool = bench_inputs(first, max(64 * args.repeats, args.rounds_batch_1))
        for threads in (int(t) for t in args.threads.split(",")):
            torch.set_num_threads(threads)
            # a thread pool per graph, as `exitsearch bench --onnx` runs them by default
            onnx = (
                {i: load_onnx_bundle(p, threads) for i, p in paths.items()}
                if "onnx" in engines
                else {}
            )
            for batch in (int(b) for b in args.batch_sizes.split(",")):
                for engine in engines:
                    t0 = time.perf_counter()
                    rt = measure_in_runtime(bb, specs, "cpu", batch, engine=engine)
                    costs = CostModel(
                        profile, keys, rt.table, {k: v / batch for k, v in rt.heads_ms.items()}
                    )
                    alone = None
                    if engine == "torch":
                        # the parts timed one by one, each on its own, as tables were measured
                        # before; the runtime's work between them as measured in the runtime
                        plain = measure_latency(bb, "cpu", batch).with_exit_overhead(
                            rt.table.exit_decision_ms, rt.table.exit_fixed_ms, 0.0
                        )
                        heads = measure_heads_latency(
                            specs, HeadContext.from_backbone(bb), "cpu", batch
                        )
                        alone = CostModel(
                            profile, keys, plain, {k: v / batch for k, v in heads.items()}
                        )
                    for i in ids:
                        model = models[i]
                        report = benchmark(
                            model,
                            [batch],
                            repeats=args.repeats if batch > 1 else args.rounds_batch_1,
                            inputs=pool,
                            onnx_model=onnx.get(i) if engine == "onnx" else None,
                            stream=batch > 1,
                            stream_repeats=5,
                            predict_ms=False,  # set against this benchmark's own tables
                        )
                        mode = "stream" if batch > 1 else "batch"
                        row = next(r for r in report.rows if r.engine == engine and r.mode == mode)
                        exit_ms = costs.exit_ms(model.config)
                        row = against_prediction(row, exit_ms, rt.table.full_ms / batch)
                        predicted, measured = row.predicted_sample_ms, row.measured_sample_ms
                        ratio, speedup = measured / predicted, row.total_speedup
                        counts = np.asarray(row.round_exit_counts, dtype=np.float64)
                        per_round = float(np.median(np.asarray(row.round_ms) / (counts @ exit_ms)))
                        out = {
                            "member": i,
                            "engine": engine,
                            "threads": threads,
                            "batch_size": batch,
                            "mode": mode,
                            "predicted_ms": predicted,
                            "measured_ms": measured,
                            "ratio": ratio,
                            "median_round_ratio": per_round,
                            "rounds": len(row.round_ms),
                            "exit_decision_ms": rt.table.exit_decision_ms / batch,
                            "exit_fixed_ms": rt.table.exit_fixed_ms / batch,
                            "exit_resume_ms": rt.table.exit_resume_ms / batch,
                            "backbone_parts_ms": rt.table.parts_ms / batch,
                            "backbone_whole_ms": rt.table.full_ms / batch,
                            # the machine's speed may drift between the table and the bench:
                            # the backbone, timed in the bench's own rounds, says by how much
                            "backbone_bench_ms": row.backbone_ms / batch,
                            # a paired speed-up is free of that drift: the backbone's total
                            # time over the model's in the same rounds, against predicted in ms
                            "measured_speedup": speedup,
                            "predicted_speedup_ms": row.predicted_speedup_ms,
                            "realised": speedup / row.predicted_speedup_ms,
                        }
                        note = ""
                        if alone is not None:
                            before = against_prediction(
                                row, alone.exit_ms(model.config), rt.table.full_ms / batch
                            )
                            before = before.measured_sample_ms / before.predicted_sample_ms
                            out["ratio_parts_alone"] = before
                            note = f"; parts timed alone {before:.2f}x"
                        rows.append(out)
                        print(
                            f"{engine:5s} threads {threads} batch {batch:3d} member {i:5d}: "
                            f"predicted {predicted:.4f} ms, measured {measured:.4f} ms "
                            f"({ratio:.2f}x{note}); speed-up {speedup:.2f}x of "
                            f"{out['predicted_speedup_ms']:.2f}x predicted",
                            flush=True,
                        )
                    print(f"  ({time.perf_counter() - t0:.0f} s)", flush=True)
    ratios = np.array([r["ratio"] for r in rows])
    before = np.array([r["ratio_parts_alone"] for r in rows if "ratio_parts_alone" in r])
    summary = {
        "within_10_percent": int(np.sum(np.abs(ratios - 1) <= 0.10)),
        "pairs": len(rows),
        "median_ratio": float(np.median(ratios)),
        "min_ratio": float(ratios.min()),
        "max_ratio": float(ratios.max()),
    }
    for engine in engines:
        r = np.array([x["ratio"] for x in rows if x["engine"] == engine])
        summary[engine] = {
            "within_10_percent": int(np.sum(np.abs(r - 1) <= 0.10)),
            "pairs": len(r),
            "median_ratio": float(np.median(r)),
        }
    for engine in engines:
        r = np.array([x["realised"] for x in rows if x["engine"] == engine])
        summary[f"{engine}_realised_speedup"] = {
            "within_10_percent": int(np.sum(np.abs(r - 1) <= 0.10)),
            "pairs": len(r),
            "median": float(np.median(r)),
            "min": float(r.min()),
            "max": float(r.max()),
        }
    if len(before):
        summary["torch_parts_alone"] = {
            "within_10_percent": int(np.sum(np.abs(before - 1) <= 0.10)),
            "pairs": len(before),
            "median_ratio": float(np.median(before)),
        }
    doc = {
        "run": str(args.run),
        "members": ids,
        "repeats": args.repeats,
        "rounds_batch_1": args.rounds_batch_1,
        "rows": rows,
        "summary": summary,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, doc)
    print(
        f"{summary['within_10_percent']} of {summary['pairs']} pairs within 10 %; measured / "
        f"predicted median {summary['median_ratio']:.2f} (from {summary['min_ratio']:.2f} to "
        f"{summary['max_ratio']:.2f})"
    )


if __name__ == "__main__":
    main()
