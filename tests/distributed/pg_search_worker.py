"""One search process of the shared-storage test: ``run_search`` on a cheap synthetic cache.

Usage::

    python pg_search_worker.py STORAGE_URL STUDY N_TRIALS BARRIER_DIR WORKER_ID WORKERS

Every worker waits at a file barrier after ``run_search`` has opened the study and counted its
finished trials, and before its first trial: ``run_search`` counts ``n_trials`` for the whole
study when it starts, so workers that start together each run ``N_TRIALS``.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import optuna

from exitsearch.core.costs import CostModel
from exitsearch.heads import HeadSpec
from exitsearch.profile.backbone import BackboneProfile, BlockCost
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import parse_search_space
from exitsearch.search.storage import open_storage
from exitsearch.search.study import BudgetConstraint, SearchSettings, run_search
from exitsearch.training.predict import Predictions, SplitPredictions

DEPTH, CLASSES, N = 6, 4, 200


def synthetic_evaluator() -> tuple[Evaluator, list[HeadSpec]]:
    rng = np.random.default_rng(0)
    heads = [HeadSpec(t, m) for m in range(1, DEPTH) for t in ("linear", "mlp")]
    rows = len(heads) + 1
    labels = rng.integers(0, CLASSES, N)
    skill = np.array([0.4 + 0.1 * s.location for s in heads] + [0.95])
    correct = rng.random((rows, N)) < skill[:, None]
    pred = np.where(correct, labels, (labels + 1) % CLASSES).astype(np.int32)
    conf = np.clip(rng.beta(2, 2, (rows, N)) * 0.6 + 0.4 * correct, 0, 1).astype(np.float32)
    split = SplitPredictions(labels, conf, 1 - conf, pred, np.full((rows, N), np.nan, np.float32))
    blocks = [BlockCost(i + 1, 100, 0, 10 + 100 * (i + 1), 0.0) for i in range(DEPTH)]
    prof = BackboneProfile("toy", (1, 28, 28), 17, 10 + 100 * DEPTH + 5, 10, 5, blocks, 0)
    costs = CostModel(prof, {s.key: 3 for s in heads})
    return Evaluator(Predictions(heads, {"val": split}, CLASSES), "val", costs), heads


class BarrierProgress:
    """Holds the search at its start until every worker got there."""

    def __init__(self, barrier: Path, me: str, workers: int) -> None:
        self.barrier, self.me, self.workers = barrier, me, workers

    def start(self, task: str, total: int | None) -> None:
        if task != "search":
            return
        (self.barrier / self.me).touch()
        deadline = time.monotonic() + 60
        while len(list(self.barrier.iterdir())) < self.workers:
            if time.monotonic() > deadline:
                raise TimeoutError("the other search process never started")
            time.sleep(0.02)

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        print(message, file=sys.stderr)


def main() -> None:
    url, study, n, barrier, me, workers = sys.argv[1:7]
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    ev, heads = synthetic_evaluator()
    space = parse_search_space(
        {"heads": {"linear": {}, "mlp": {}}, "criteria": ["confidence"], "uncertainty": False}
    )
    result = run_search(
        ev,
        ConfigSampler(space, heads, DEPTH),
        BudgetConstraint(None),
        SearchSettings(n_trials=int(n), population_size=10, refine=False),
        storage=open_storage(url),
        study_name=study,
        exclusive=False,
        progress=BarrierProgress(Path(barrier), me, int(workers)),
    )
    print(result.n_trials)


if __name__ == "__main__":
    main()
