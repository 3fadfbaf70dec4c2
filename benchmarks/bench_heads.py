"""Joint head training against training the heads one by one, as the papers did.

Usage::

    python benchmarks/bench_heads.py [--limit 1024] [--epochs 1] [--space default] [--json-out F]

Both train every candidate head of the space on the same data for the same epochs with the
backbone frozen; jointly, one backbone forward per batch feeds all heads; one by one, every head
runs its own backbone forward (what training each placement separately costs). Prints both wall
times (measured back to back in one process) and their ratio.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from exitsearch.backbone import DEFAULT_PRESET, create_backbone
from exitsearch.data import DataSpec, load_splits
from exitsearch.search.space import load_search_space
from exitsearch.training.head_training import HeadTrainConfig, train_heads


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--model", default=DEFAULT_PRESET)
    ap.add_argument("--space", default="default")
    ap.add_argument("--limit", type=int, default=1024, help="samples per split")
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch-size", type=int, default=256)
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    backbone = create_backbone(args.model)
    splits = load_splits(DataSpec(limit=args.limit), preprocess=backbone.preprocess())
    specs = load_search_space(args.space).candidate_heads(backbone.depth)
    cfg = HeadTrainConfig(epochs=args.epochs, batch_size=args.batch_size)
    print(
        f"{len(specs)} candidate heads, {args.limit} samples per split, {args.epochs} epoch(s), "
        f"{torch.get_num_threads()} threads"
    )
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        joint = train_heads(backbone, splits, specs, cfg, Path(tmp) / "joint")
        t_joint = time.perf_counter() - t0
        print(f"joint: {t_joint:.1f} s, {joint.backbone_passes} backbone passes")
        t0 = time.perf_counter()
        passes = 0
        for i, spec in enumerate(specs):
            r = train_heads(backbone, splits, [spec], cfg, Path(tmp) / f"single-{i}")
            passes += r.backbone_passes
        t_single = time.perf_counter() - t0
        print(f"one by one: {t_single:.1f} s, {passes} backbone passes")
    ratio = t_single / t_joint
    print(f"joint training is {ratio:.1f}x cheaper in wall time")
    if args.json_out:
        args.json_out.write_text(
            json.dumps(
                {
                    "heads": len(specs),
                    "samples": args.limit,
                    "epochs": args.epochs,
                    "threads": torch.get_num_threads(),
                    "joint_seconds": t_joint,
                    "one_by_one_seconds": t_single,
                    "ratio": ratio,
                    "joint_backbone_passes": joint.backbone_passes,
                    "one_by_one_backbone_passes": passes,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
