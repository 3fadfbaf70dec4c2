"""Two runs' fronts at matched FLOPs: which backbone's exits give more accuracy per FLOP.

Reads the ``pareto.json`` of two runs of ``exitsearch run`` on the same data (e.g. the Swin and
the ViT reference runs): the same test split; each run's validation split is the one its
backbone's training left out, and each run picks its members on its own. At each cost in a grid it picks, for each run, the member a
user would pick there: the most accurate on validation among those whose mean validation cost is
within that cost; it reports that member's validation and test accuracy and its 95 % intervals,
and the test difference of the two picks. The plot draws both fronts (validation) and the picks'
test accuracy against MFLOPs per sample.

    python benchmarks/compare_fronts.py results/fmnist-swin12-fashion-mnist \\
        results/fmnist-vit12-fashion-mnist --out results/fmnist-swin12-fashion-mnist/vs_vit12
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch._io import atomic_write_json


def load_front(run: Path) -> dict[str, Any]:
    doc = json.loads((run / "pareto.json").read_text())
    members = [
        {
            "id": m["id"],
            "description": m.get("description", m.get("placement")),
            "val_flops": float(m["val"]["mean_flops"]),
            "test_flops": float(m["test"]["mean_flops"]),
            "val": float(m["val"]["accuracy"]),
            "test": float(m["test"]["accuracy"]),
            "val_low": float(m["val"]["accuracy_low"]),
            "val_high": float(m["val"]["accuracy_high"]),
            "test_low": float(m["test"]["accuracy_low"]),
            "test_high": float(m["test"]["accuracy_high"]),
        }
        for m in doc["front"]
    ]
    bb = doc["backbone"]
    rec = next(m for m in members if m["id"] == doc["recommended"])
    return {
        "recommended": {**rec, "speedup": float(bb["flops"]) / rec["val_flops"]},
        "baseline_ratios": {b["name"]: b["ratio"] for b in doc.get("baselines", [])},
        "timings_s": {k: round(float(v), 1) for k, v in (doc.get("timings") or {}).items()},
        "run": str(run),
        "model": bb["spec"]["model"],
        "backbone_flops": float(bb["flops"]),
        "backbone_val": float(bb["val_accuracy"]),
        "backbone_test": float(bb["test_accuracy"]),
        "data": doc["data"],
        "budget": doc["budget"],
        "members": sorted(members, key=lambda m: m["val_flops"]),
    }


def pick(front: dict[str, Any], flops: float) -> dict[str, Any] | None:
    """The most accurate member on validation whose mean validation cost is within ``flops``."""
    within = [m for m in front["members"] if m["val_flops"] <= flops]
    return max(within, key=lambda m: (m["val"], -m["val_flops"])) if within else None


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run_a", type=Path, help="first run folder (drawn first, e.g. Swin)")
    ap.add_argument("run_b", type=Path, help="second run folder (e.g. the ViT reference)")
    ap.add_argument("--out", type=Path, required=True, help="writes OUT.json and OUT.png")
    ap.add_argument("--step", type=float, default=2.5, help="grid step in MFLOPs")
    args = ap.parse_args()

    a, b = load_front(args.run_a), load_front(args.run_b)
    # test accuracies compare only on the same test split; each run picks on its own validation
    same_test = ("source", "data_dir", "limit")
    if any(a["data"].get(k) != b["data"].get(k) for k in same_test):
        raise SystemExit(f"the runs used different data: {a['data']} vs {b['data']}")
    top = min(max(m["val_flops"] for m in f["members"]) for f in (a, b))
    low = max(min(m["val_flops"] for m in f["members"]) for f in (a, b))
    grid = np.arange(np.ceil(low / 1e6 / args.step) * args.step, top / 1e6 + 1e-9, args.step)
    rows = []
    for mflops in grid:
        pa, pb = pick(a, mflops * 1e6), pick(b, mflops * 1e6)
        if pa is None or pb is None:
            continue
        rows.append(
            {
                "mflops": round(float(mflops), 3),
                a["model"]: pa,
                b["model"]: pb,
                "test_difference": round(pa["test"] - pb["test"], 4),
                "val_difference": round(pa["val"] - pb["val"], 4),
            }
        )
    wins = sum(r["test_difference"] > 0 for r in rows)
    summary = {
        "runs": [a["run"], b["run"]],
        "models": [a["model"], b["model"]],
        "backbones": {
            f["model"]: {
                "flops": f["backbone_flops"],
                "val_accuracy": f["backbone_val"],
                "test_accuracy": f["backbone_test"],
                "front_members": len(f["members"]),
                "budget": f["budget"],
                "recommended": f["recommended"],
                "baseline_hypervolume_ratios": f["baseline_ratios"],
                "stage_seconds": f["timings_s"],
            }
            for f in (a, b)
        },
        "data": {f["model"]: f["data"] for f in (a, b)},
        "rule": "at each cost, each run's most accurate member on validation within that mean "
        "validation cost; test accuracy of that member",
        "matched": rows,
        f"{a['model']}_ahead_on_test": f"{wins} of {len(rows)} costs",
    }
    atomic_write_json(args.out.with_suffix(".json"), summary)
    plot(a, b, rows, args.out.with_suffix(".png"))
    print(f"{a['model']} ahead on test at {wins} of {len(rows)} costs")
    for r in rows:
        print(
            f"{r['mflops']:7.2f} MFLOPs  {a['model']} {r[a['model']]['test']:.4f}  "
            f"{b['model']} {r[b['model']]['test']:.4f}  diff {r['test_difference']:+.4f}"
        )


def plot(a: dict[str, Any], b: dict[str, Any], rows: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.8))
    for side, (f, colour) in enumerate(((a, "tab:blue"), (b, "tab:orange"))):
        ms = f["members"]
        left.step(
            [m["val_flops"] / 1e6 for m in ms],
            [m["val"] for m in ms],
            where="post",
            color=colour,
            label=f"{f['model']} front ({len(ms)} members)",
        )
        left.axhline(f["backbone_val"], color=colour, ls=":", lw=1)
        left.annotate(
            f"{f['model']} backbone ({f['backbone_flops'] / 1e6:.1f} MFLOPs)",
            (0.02 + 0.5 * side, f["backbone_val"]),
            xycoords=("axes fraction", "data"),
            color=colour,
            fontsize=8,
            va="bottom",
        )
        x = [r["mflops"] for r in rows]
        right.plot(
            x, [r[f["model"]]["test"] for r in rows], "o-", ms=3, color=colour, label=f["model"]
        )
        right.fill_between(
            x,
            [r[f["model"]]["test_low"] for r in rows],
            [r[f["model"]]["test_high"] for r in rows],
            color=colour,
            alpha=0.15,
        )
        right.axhline(f["backbone_test"], color=colour, ls=":", lw=1)
    left.set_xlabel("mean MFLOPs per sample (validation)")
    left.set_ylabel("validation accuracy")
    left.set_title("fronts (each run's own validation split)")
    left.legend(loc="lower right", fontsize=8)
    right.set_xlabel("cost limit, MFLOPs per sample")
    right.set_ylabel("test accuracy of the pick (95 % interval)")
    right.set_title("picked at matched FLOPs (test)")
    right.legend(loc="lower right", fontsize=8)
    lo = min(r[f["model"]]["test_low"] for r in rows for f in (a, b))
    right.set_ylim(max(0.0, lo - 0.02), None)
    left.set_ylim(max(0.0, lo - 0.05), None)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


if __name__ == "__main__":
    main()
