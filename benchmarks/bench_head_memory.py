"""Head training's memory plan against the memory it really takes, at 224 px.

Usage::

    python benchmarks/bench_head_memory.py --json-out results/scale/head_memory.json

1. Plans of the default candidate set (121 heads) for ``vit_small_patch16_224`` and
   ``vit_base_patch16_224`` at head batches 32 and 256, under the 8 GiB goal: groups and the
   estimated peak of each.
2. Estimate against measurement: for each head batch, a fresh process trains one head of each
   default type at the deepest candidate location of ViT-S (the group reads 11 hidden states)
   for one batch, and reports its peak resident memory during training (``VmHWM``, reset just
   before) above what it held then (``VmRSS``); next to it, the plan's estimate for that group;
   then the same for all 121 default heads at the default head batch of 256.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from exitsearch.backbone import BackboneSpec, create_backbone
from exitsearch.data import ArrayDataset, DataSpec, DataSplits
from exitsearch.device import resolve_device
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext
from exitsearch.heads.bank import HeadBank
from exitsearch.search.space import load_search_space
from exitsearch.training.groups import plan_head_groups
from exitsearch.training.head_training import HeadTrainConfig, train_heads

GiB = 1 << 30
GOAL = 8 * GiB


def _backbone(model: str):  # type: ignore[no-untyped-def]
    torch.manual_seed(0)
    return create_backbone(BackboneSpec(model=model, overrides={"num_classes": 10}))


def plans() -> list[dict]:
    rows = []
    cpu = resolve_device("cpu")
    for model in ("vit_small_patch16_224", "vit_base_patch16_224"):
        backbone = _backbone(model)
        specs = load_search_space("default").candidate_heads(backbone.depth)
        bank = HeadBank(specs, HeadContext.from_backbone(backbone), seed=0)
        for batch in (32, 256):
            try:
                plan = plan_head_groups(backbone, bank, batch, cpu, GOAL)
            except ConfigError as exc:
                rows.append({"model": model, "batch": batch, "limit_bytes": GOAL, "plan": str(exc)})
                print(exc, flush=True)
                continue
            rows.append(
                {
                    "model": model,
                    "heads": len(specs),
                    "head_parameters": sum(p.numel() for p in bank.parameters()),
                    "batch": batch,
                    "limit_bytes": GOAL,
                    "groups": [len(g) for g in plan.groups],
                    "group_bytes": list(plan.group_bytes),
                    "shared_bytes": plan.shared_bytes,
                    "plan": plan.describe(specs),
                }
            )
            print(plan.describe(specs), flush=True)
    return rows


def _status(field: str) -> int:
    with open("/proc/self/status") as fh:
        line = next(x for x in fh if x.startswith(field + ":"))
    return int(line.split()[1]) * 1024


def _reset_peak() -> None:
    """Start the peak (``VmHWM``) afresh from what the process holds now (Linux 4.0+)."""
    with open("/proc/self/clear_refs", "w") as fh:
        fh.write("5")


def measure(batch: int, every: bool = False) -> dict:
    """Run in a fresh process: one batch of training of the heads at location 11 (``every``:
    of all 121 default candidates)."""
    torch.set_num_threads(2)
    backbone = _backbone("vit_small_patch16_224")
    specs = [
        s for s in load_search_space("default").candidate_heads(12) if every or s.location == 11
    ]
    gen = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (batch + 32, 3, 224, 224), dtype=torch.uint8, generator=gen)
    labels = torch.randint(0, 10, (batch + 32,), generator=gen)
    classes = tuple(str(c) for c in range(10))
    train = ArrayDataset(images[:batch].numpy(), labels[:batch].numpy(), classes, "random")
    val = ArrayDataset(images[batch:].numpy(), labels[batch:].numpy(), classes, "random")
    splits = DataSplits(train=train, val=val, test=val, spec=DataSpec(source="random"))
    bank = HeadBank(specs, HeadContext.from_backbone(backbone), seed=0)
    plan = plan_head_groups(backbone, bank, batch, resolve_device("cpu"), 1 << 40)
    del bank
    _reset_peak()
    before = _status("VmRSS")
    t0 = time.perf_counter()
    config = HeadTrainConfig(epochs=1, batch_size=batch, eval_batch_size=32)
    with tempfile.TemporaryDirectory() as tmp:
        train_heads(backbone, splits, specs, config, tmp)
    peak = _status("VmHWM")
    return {
        "batch": batch,
        "heads": [s.key for s in specs] if not every else f"all {len(specs)} default candidates",
        "estimated_bytes": plan.group_bytes[0] + plan.shared_bytes,
        "measured_peak_above_start_bytes": peak - before,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json-out", type=Path, default=None)
    parser.add_argument("--measure", type=int, default=None, help=argparse.SUPPRESS)
    parser.add_argument("--every", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure is not None:
        print(json.dumps(measure(args.measure, args.every)))
        return
    doc: dict = {"machine": platform.machine(), "torch": torch.__version__, "plans": plans()}
    doc["estimate_vs_measured"] = []
    for batch, every in ((32, False), (256, False), (256, True)):
        out = subprocess.run(
            [sys.executable, __file__, "--measure", str(batch)] + (["--every"] if every else []),
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        row = json.loads(out.strip().splitlines()[-1])
        row["ratio_measured_over_estimated"] = (
            row["measured_peak_above_start_bytes"] / row["estimated_bytes"]
        )
        doc["estimate_vs_measured"].append(row)
        print(json.dumps(row), flush=True)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(doc, indent=1) + "\n")


if __name__ == "__main__":
    main()
