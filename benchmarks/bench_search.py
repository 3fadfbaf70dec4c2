"""Search benchmarks: evaluator throughput, and how close the search gets to the exact front.

Usage::

    python benchmarks/bench_search.py [--run results/<run>] [--json-out FILE]

With ``--run`` the run's cached validation predictions and profile are used (10,000 samples on
the embedded default); without, a synthetic cache of the same shape. Reports:

1. configurations scored per second on one core (random configurations of the default space);
2. on a space small enough to enumerate (locations 3, 6, 9, 11; heads linear and mlp;
   confidence; shared thresholds) the exact front by exhaustive enumeration, and the fraction
   of its hypervolume NSGA-II reaches after n trials, with and without exact refinement.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import optuna
import torch

from exitsearch.core.costs import CostModel
from exitsearch.heads import HeadSpec
from exitsearch.profile.backbone import BackboneProfile, BlockCost
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import hypervolume
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import load_search_space, parse_search_space
from exitsearch.search.study import BudgetConstraint, SearchSettings, exhaustive_front, run_search
from exitsearch.training.predict import Predictions, SplitPredictions


def synthetic(
    n: int = 10_000, depth: int = 12, classes: int = 10, seed: int = 0
) -> tuple[Predictions, CostModel]:
    rng = np.random.default_rng(seed)
    heads = load_search_space("default").candidate_heads(depth)
    labels = rng.integers(0, classes, n)
    skill = np.array([0.55 + 0.35 * s.location / depth for s in heads] + [0.92])
    rows = len(heads) + 1
    correct = rng.random((rows, n)) < skill[:, None]
    pred = np.where(
        correct, labels, (labels + rng.integers(1, classes, (rows, n))) % classes
    ).astype(np.int32)
    conf = np.clip(rng.beta(2, 2, (rows, n)) * 0.6 + 0.4 * correct, 0, 1).astype(np.float32)
    ent = (1 - conf).astype(np.float32)
    unc = np.where(np.arange(rows)[:, None] < len(heads), 1 - conf, np.nan).astype(np.float32)
    preds = Predictions(heads, {"val": SplitPredictions(labels, conf, ent, pred, unc)}, classes)
    blocks = [
        BlockCost(i + 1, 6_000_000, 0, 75_000 + 6_000_000 * (i + 1), 0.0) for i in range(depth)
    ]
    prof = BackboneProfile(
        "synthetic", (1, 28, 28), 50, 75_000 + 6_000_000 * depth + 25_000, 75_000, 25_000, blocks, 0
    )
    return preds, CostModel(prof, {s.key: 500_000 for s in heads})


def from_run(run: Path) -> tuple[Predictions, CostModel]:
    doc = json.loads((run / "pareto.json").read_text())
    preds = Predictions.load(run / doc["artifacts"]["predictions"])
    prof = json.loads((run / doc["artifacts"]["profile"]).read_text())
    return preds, CostModel(
        BackboneProfile.from_json(prof["backbone"]),
        {k: v["flops"] for k, v in prof["heads"].items()},
    )


def configs_per_second(
    ev: Evaluator, heads: list[HeadSpec], depth: int, n: int = 3000
) -> dict[str, float]:
    sampler = ConfigSampler(load_search_space("default"), heads, depth)
    study = optuna.create_study(
        directions=["maximize", "minimize"], sampler=optuna.samplers.RandomSampler(seed=0)
    )
    configs = []
    while len(configs) < n:
        c = sampler.sample(study.ask())
        if c is not None:
            configs.append(c)
    exits = np.mean([len(c.exits) for c in configs])
    t0 = time.perf_counter()
    for c in configs:
        ev.quick(c)
    dt = time.perf_counter() - t0
    return {
        "configs": n,
        "mean_exits": float(exits),
        "seconds": dt,
        "configs_per_second": n / dt,
        "samples": ev.n,
    }


def front_quality(
    ev: Evaluator, heads: list[HeadSpec], depth: int, budget_fraction: float
) -> dict[str, object]:
    space = parse_search_space(
        {
            "heads": {"linear": {}, "mlp": {}},
            "locations": [3, 6, 9, 11],
            "criteria": ["confidence"],
            "thresholds": ["shared"],
            "uncertainty": False,
        }
    )
    small = [s for s in heads if s.type in ("linear", "mlp") and s.location in (3, 6, 9, 11)]
    sampler = ConfigSampler(space, small, depth)
    scale = float(ev.costs.backbone_flops)
    budget = BudgetConstraint(budget_fraction * scale)
    ref = (0.0, budget_fraction)

    def hv(front):
        return hypervolume([p.accuracy for p in front], [p.mean_flops / scale for p in front], *ref)

    exact = exhaustive_front(ev, sampler, budget)
    exact_hv = hv(exact.front)
    rows = []
    for n_trials in (25, 50, 100, 200, 400):
        for refine in (False, True):
            r = run_search(
                ev, sampler, budget, SearchSettings(n_trials=n_trials, refine=refine, seed=0)
            )
            rows.append(
                {
                    "trials": n_trials,
                    "refine": refine,
                    "hv_fraction": hv(r.front) / exact_hv,
                    "seconds": r.seconds + r.refine_seconds,
                }
            )
    return {
        "placements": exact.n_trials,
        "exact_seconds": exact.seconds,
        "exact_points": len(exact.front),
        "budget_fraction": budget_fraction,
        "rows": rows,
    }


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--run", type=Path, help="a run folder with pareto.json and its cache")
    ap.add_argument("--json-out", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(1)
    optuna.logging.disable_default_handler()
    preds, costs = from_run(args.run) if args.run else synthetic()
    depth = costs.profile.depth
    ev = Evaluator(preds, "val", costs)
    out = {
        "source": str(args.run) if args.run else "synthetic",
        "throughput": configs_per_second(ev, preds.heads, depth),
        "front": front_quality(ev, preds.heads, depth, 0.6),
    }
    t = out["throughput"]
    print(
        f"evaluator: {t['configs_per_second']:.0f} configurations/s on one core "
        f"({t['samples']} samples, {t['mean_exits']:.1f} exits on average)"
    )
    f = out["front"]
    print(f"exact front: {f['placements']} placements enumerated in {f['exact_seconds']:.2f} s")
    for r in f["rows"]:
        print(
            f"  NSGA-II {r['trials']:4d} trials, refine={r['refine']!s:5}: "
            f"{100 * r['hv_fraction']:6.2f}% of the exact hypervolume in {r['seconds']:.2f} s"
        )
    if args.json_out:
        args.json_out.write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
