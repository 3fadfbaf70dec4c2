"""Throughput of an exported configuration with and without patch pausing (a benchmark row).

Loads a bundle exported from the PAUMER classification run (a front member with a pause
configuration), builds its twin without pausing (same backbone, heads, exits and thresholds),
and times both and the backbone alone on the same validation batches, interleaved round by
round, on both clocks (CPU time of this single-threaded process, and wall clock). Prints one
JSON document; results/paumer/README.md quotes it.

    python benchmarks/bench_pause_export.py BUNDLE [--batch-size 64] [--rounds 25]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace

import numpy as np
import torch

from exitsearch.data import DataSpec, load_splits
from exitsearch.export import MultiExitModel, load_bundle


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("bundle")
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=25)
    ap.add_argument("--warmup", type=int, default=3)
    args = ap.parse_args()
    torch.set_num_threads(1)
    paused = load_bundle(args.bundle)
    plain = MultiExitModel(
        paused.backbone,
        list(paused.heads),
        replace(paused.config, pause={}, thresholds=paused.thresholds),
    )
    bb = paused.backbone
    data = DataSpec.from_dict(paused.manifest["meta"]["data"])
    val = load_splits(data, preprocess=bb.preprocess()).val
    n = args.batch_size * args.batches
    x_all = bb.input_transform()(val.batch(np.arange(min(n, len(val)))))
    y_all = torch.from_numpy(np.asarray(val.y[:n], dtype=np.int64))
    batches = [
        (x_all[i : i + args.batch_size], y_all[i : i + args.batch_size])
        for i in range(0, n, args.batch_size)
    ]
    entries = {
        "backbone": lambda x: bb(x),
        "exits, no pausing": lambda x: plain(x),
        "exits + pausing": lambda x: paused(x),
    }
    clocks = {"cpu": time.process_time, "wall": time.perf_counter}
    times = {k: {c: [] for c in clocks} for k in entries}
    exits: dict[str, list[np.ndarray]] = {k: [] for k in entries if k != "backbone"}
    right = dict.fromkeys(entries, 0)
    with torch.inference_mode():
        for fn in entries.values():
            for w in range(args.warmup):
                fn(batches[w % len(batches)][0])
        for r in range(args.rounds):
            x, y = batches[r % len(batches)]
            order = list(entries) if r % 2 == 0 else list(reversed(entries))
            for name in order:
                start = {c: f() for c, f in clocks.items()}
                out = entries[name](x)
                for c, f in clocks.items():
                    times[name][c].append(f() - start[c])
                pred = out.argmax(-1) if name == "backbone" else out.prediction
                right[name] += int((pred == y).sum())
                if name != "backbone":
                    exits[name].append(out.exit_index.numpy())
    seen = args.rounds * args.batch_size
    rows = {}
    for name in entries:
        row = {
            f"images_per_s_{c}": args.batch_size / statistics.median(times[name][c]) for c in clocks
        }
        row["accuracy_on_timed_batches"] = right[name] / seen
        if name != "backbone":
            model = paused if name == "exits + pausing" else plain
            idx = np.concatenate(exits[name])
            row["mean_mflops_predicted"] = model.costs.mean_flops(idx) / 1e6
            row["exit_counts"] = np.bincount(idx, minlength=model.num_outcomes).tolist()
        rows[name] = row
    base = rows["backbone"]
    for row in rows.values():
        for c in clocks:
            row[f"speedup_{c}"] = row[f"images_per_s_{c}"] / base[f"images_per_s_{c}"]
    print(
        json.dumps(
            {
                "bundle": args.bundle,
                "configuration": paused.describe(),
                "tokens_per_block": paused.token_counts(),
                "backbone_mflops": paused.costs.backbone_flops / 1e6,
                "batch_size": args.batch_size,
                "rounds": args.rounds,
                "threads": torch.get_num_threads(),
                "rows": rows,
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
