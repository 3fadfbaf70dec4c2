"""Distributed benchmark: one pause-configuration search locally and on a 2-node Ray cluster, and
what a Ray task costs next to an in-process cache-scored trial.

Usage::

    python benchmarks/bench_distributed.py [--trials 32] [--limit 2000] [--json-out FILE]

1. The same search (same seed, so the same trials and front) over pause configurations of a
   small PAUMER model, evaluated by inference on ``--limit`` validation images: in this process,
   on a local pool of 2 processes, and on a cluster of two ``ray start`` nodes on this machine
   (1 CPU each). Wall time and trials per second, cold (first run: workers start and import
   torch) and warm (a second study on the same workers), and where each trial ran.
2. Overheads: one cache-scored trial in-process (``Evaluator.quick``, and a whole Optuna trial
   of ``run_search``) against a Ray task round trip (empty, one configuration per task, and a
   batch of configurations per task).

The machine's other load shows in every figure; compare rows of one run, not runs.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_search import synthetic

from exitsearch.backbone import create_backbone
from exitsearch.data import DataSpec
from exitsearch.distributed import (
    LocalExecutor,
    PauseSearchSettings,
    PauseSpace,
    RayExecutor,
    connect,
    disconnect,
    front_table,
    run_pause_search,
)
from exitsearch.distributed.testing import LocalCluster
from exitsearch.pausing import build_paumer
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import load_search_space
from exitsearch.search.study import BudgetConstraint, SearchSettings, run_search

MODEL = {
    "img_size": 28,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 64,
    "depth": 6,
    "num_heads": 4,
}


def _model_dir(root: Path) -> Path:
    torch.manual_seed(0)
    model = build_paumer(create_backbone("vit_tiny_patch16_224", **MODEL), "classification")
    return model.save(root / "paumer")


def _search(model_dir: Path, data: DataSpec, trials: int, executor: Any, name: str) -> Any:
    settings = PauseSearchSettings(n_trials=trials, population_size=8, seed=0)
    space = PauseSpace.for_depth(MODEL["depth"], taus=(0.0, 0.25, 0.5, 0.75))
    return run_pause_search(model_dir, data, space, settings, executor=executor, study_name=name)


def _row(label: str, res: Any, names: dict[str, str] | None = None) -> dict[str, Any]:
    nodes = {(names or {}).get(k, k): v for k, v in res.nodes.items()}
    return {
        "run": label,
        "seconds": round(res.seconds, 2),
        "trials_per_s": round(res.trials_per_second, 2),
        "evaluated": sum(res.nodes.values()),
        "nodes": nodes,
    }


# ------------------------------------------------------------------- overheads
_EV: dict[str, Any] = {}


def _quick_many(payload: Any, configs: list[Any]) -> float:
    """Score ``configs`` on a worker; the evaluator is built once per worker process."""
    import ray

    key = "ev"
    if key not in _EV:
        preds, costs = ray.get(payload[0]) if isinstance(payload, list) else payload
        _EV[key] = Evaluator(preds, "val", costs)
    ev = _EV[key]
    return float(sum(ev.quick(c)[0] for c in configs))


def _noop() -> int:
    return 0


def overheads(n_configs: int = 2000) -> dict[str, float]:
    """Per-trial costs (milliseconds) in-process and as Ray tasks (needs a Ray connection)."""
    import ray

    preds, costs = synthetic()
    ev = Evaluator(preds, "val", costs)
    space = load_search_space("default")
    sampler = ConfigSampler(space, preds.heads, 12)
    study = optuna.create_study(directions=["maximize", "minimize"])
    configs = []
    while len(configs) < n_configs:
        c = sampler.sample(study.ask())
        if c is not None:
            configs.append(c)
    ev.quick(configs[0])
    t0 = time.perf_counter()
    for c in configs:
        ev.quick(c)
    quick_ms = (time.perf_counter() - t0) / len(configs) * 1e3

    res = run_search(
        ev,
        sampler,
        BudgetConstraint(None),
        SearchSettings(n_trials=400, population_size=40, refine=False),
    )
    optuna_ms = res.seconds / res.n_trials * 1e3

    noop = ray.remote(_noop)
    ray.get([noop.remote() for _ in range(20)])  # warm workers
    seq = []
    for _ in range(100):
        t0 = time.perf_counter()
        ray.get(noop.remote())
        seq.append(time.perf_counter() - t0)
    t0 = time.perf_counter()
    ray.get([noop.remote() for _ in range(1000)])
    pipelined_ms = (time.perf_counter() - t0) / 1000 * 1e3

    payload = [ray.put((preds, costs))]  # nested: fetched once per worker, not per task
    quick = ray.remote(_quick_many)
    ray.get([quick.remote(payload, configs[:1]) for _ in range(4)])  # build evaluators
    t0 = time.perf_counter()
    ray.get([quick.remote(payload, [c]) for c in configs[:500]])
    one_per_task_ms = (time.perf_counter() - t0) / 500 * 1e3
    chunk = 500
    t0 = time.perf_counter()
    ray.get([quick.remote(payload, configs[i : i + chunk]) for i in range(0, len(configs), chunk)])
    batched_ms = (time.perf_counter() - t0) / len(configs) * 1e3
    return {
        "in_process_quick_ms": quick_ms,
        "in_process_optuna_trial_ms": optuna_ms,
        "ray_task_round_trip_ms": statistics.median(seq) * 1e3,
        "ray_task_pipelined_ms": pipelined_ms,
        "ray_one_config_per_task_ms": one_per_task_ms,
        f"ray_batched_{chunk}_per_task_ms_per_config": batched_ms,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--limit", type=int, default=2000, help="images per split")
    parser.add_argument("--json-out", default=None)
    args = parser.parse_args()
    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    data = DataSpec(limit=args.limit)
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="bench-dist-") as tmp:
        model_dir = _model_dir(Path(tmp))
        ref = _search(model_dir, data, args.trials, LocalExecutor(1), "in-process")
        rows.append(_row("in-process (1 core)", ref))
        with LocalExecutor(2) as pool:
            for i, label in enumerate(("cold", "warm")):
                res = _search(model_dir, data, args.trials, pool, f"pool-{i}")
                rows.append(_row(f"process pool, 2 workers ({label})", res))
                assert front_table(res) == front_table(ref), "the pool found another front"
        with LocalCluster() as cluster:
            t0 = time.perf_counter()
            address = cluster.start_head(num_cpus=1)
            worker = cluster.add_node(num_cpus=1)
            info = connect(address)
            start_s = time.perf_counter() - t0
            head_id = info.driver_node
            names = {head_id: "head", cluster.node_id(worker): "worker1"}
            try:
                executor = RayExecutor()
                for i, label in enumerate(("cold", "warm")):
                    res = _search(model_dir, data, args.trials, executor, f"ray-{i}")
                    rows.append(_row(f"Ray, 2 nodes x 1 CPU ({label})", res, names))
                    assert front_table(res) == front_table(ref), "the cluster found another front"
                costs = overheads()
            finally:
                disconnect()
    print(
        f"pause search: {args.trials} trials, {args.limit} validation images, same front in every run"
    )
    print(f"cluster start (2 x ray start + connect): {start_s:.1f} s")
    print(f"{'run':<36} {'wall s':>8} {'trials/s':>9} {'evaluated':>9}  trials per node")
    for r in rows:
        print(
            f"{r['run']:<36} {r['seconds']:>8.2f} {r['trials_per_s']:>9.2f} {r['evaluated']:>9}  {r['nodes']}"
        )
    print("per-trial overhead (milliseconds):")
    for k, v in costs.items():
        print(f"  {k:<48} {v:10.4f}")
    if args.json_out:
        Path(args.json_out).write_text(
            json.dumps({"runs": rows, "overheads": costs, "cluster_start_s": start_s}, indent=2)
        )


if __name__ == "__main__":
    np.seterr(all="ignore")
    main()
