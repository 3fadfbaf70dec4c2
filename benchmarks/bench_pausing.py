"""How much of the FLOP reduction of patch pausing turns into measured throughput.

For each pause configuration of PAUMER's Table 1, prints the FLOPs per image, the measured
images per second of the pausing forward (interleaved rounds, median kept), and the ratio of
the measured speed-up to the FLOP speed-up (1.0: pausing is as fast as its FLOPs promise; less:
the gather/scatter, the auxiliary decoder and per-block overheads eat into it).

    python benchmarks/bench_pausing.py --task segmentation --batch-size 64
    python benchmarks/bench_pausing.py --model-dir results/paumer/runs/entropy

Weights do not change the timing; without ``--model-dir`` a randomly initialised
``fmnist-vit12`` is used.
"""

from __future__ import annotations

import argparse
import json

import torch

from exitsearch.backbone import DEFAULT_PRESET, create_backbone
from exitsearch.pausing import (
    PauseConfig,
    build_paumer,
    load_paumer,
    paper_table1,
    pause_cost,
)
from exitsearch.pausing.evaluate import time_entries


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model-dir", help="A trained PAUMER model folder (default: random init).")
    ap.add_argument("--model", default=DEFAULT_PRESET, help="Backbone when no --model-dir.")
    ap.add_argument("--task", default="segmentation", choices=["classification", "segmentation"])
    ap.add_argument("--mode", default="entropy", choices=["entropy", "random"])
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument(
        "--clock",
        default="cpu",
        choices=["wall", "cpu"],
        help="cpu: this process's CPU time (robust to other jobs); wall: elapsed.",
    )
    ap.add_argument("--json", action="store_true", help="Print JSON lines instead of a table.")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    if args.model_dir:
        model = load_paumer(args.model_dir)
    else:
        decoder = {"depth": 2} if args.task == "segmentation" else {}
        model = build_paumer(create_backbone(args.model), args.task, decoder).eval()
    bb = model.backbone
    x = torch.randn(args.batch_size, bb.in_chans, *bb.img_size)
    configs = [PauseConfig(), *paper_table1()]
    ms = time_entries([(model, c, args.mode) for c in configs], x, args.warmup, args.repeats)
    ips = [args.batch_size / (m / 1e3) for m in ms[args.clock]]
    wall = [args.batch_size / (m / 1e3) for m in ms["wall"]]
    base_flops = pause_cost(model, configs[0], args.mode).total
    rows = []
    for cfg, v, w in zip(configs, ips, wall, strict=True):
        flops = pause_cost(model, cfg, args.mode).total
        rows.append(
            {
                "pause": cfg.label,
                "mflops": flops / 1e6,
                "images_per_s": v,
                "wall_images_per_s": w,
                "flop_speedup": base_flops / flops,
                "measured_speedup": v / ips[0],
                "efficiency": (v / ips[0] - 1) / (base_flops / flops - 1) if cfg else 1.0,
            }
        )
    if args.json:
        for r in rows:
            print(json.dumps(r))
        return
    print(
        f"{bb.spec.model} {args.task}, mode {args.mode}, batch {args.batch_size}, "
        f"{args.threads} thread(s), {args.clock} clock, median of {args.repeats} interleaved "
        "rounds"
    )
    print(f"{'pause':24} {'MFLOPs':>8} {'img/s':>8} {'FLOP x':>7} {'meas. x':>8} {'eff.':>6}")
    for r in rows:
        print(
            f"{r['pause']:24} {r['mflops']:8.2f} {r['images_per_s']:8.1f} "
            f"{r['flop_speedup']:7.2f} {r['measured_speedup']:8.2f} {r['efficiency']:6.2f}"
        )


if __name__ == "__main__":
    main()
