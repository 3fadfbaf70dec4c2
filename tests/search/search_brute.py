"""Brute-force references for the search tests: one sample at a time, plain Python.

Nothing here shares code with the evaluator: exits are decided by reading the criterion's
definition off the cached arrays, costs by adding the toy profile's numbers by hand.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from exitsearch.core.config import ExitConfig
from exitsearch.training.predict import Predictions

# Stem + blocks 1..m of the 6-block toy profile (tests/search/conftest.py): 10 + 100 + 110 + ...
CUMULATIVE = {1: 110, 2: 220, 3: 340, 4: 470, 5: 610, 6: 760}
FINAL_HEAD = 5
BACKBONE = 765


def cumulative(m: int) -> int:
    """Stem + blocks 1..m of a toy whose block i costs 100 + 10 (i - 1): an arithmetic series."""
    return 10 + 100 * m + 10 * m * (m - 1) // 2


def brute_costs(config: ExitConfig, head_flops: dict[str, int], depth: int = 6) -> list[int]:
    """Cost of leaving at each exit: blocks up to the exit + every head on the way."""
    out, heads = [], 0
    for s in config.exits:
        heads += head_flops[s.key]
        out.append(cumulative(s.location) + heads)
    if not config.cut:
        out.append(cumulative(depth) + FINAL_HEAD + heads)
    return out


def fires(preds: Predictions, split: str, config: ExitConfig, k: int, j: int) -> bool:
    """Whether sample ``j`` leaves at early exit ``k`` (criterion definition, DESIGN.md)."""
    sp = preds.splits[split]
    row = preds.row(config.exits[k].key)
    t = config.thresholds[k]
    if config.criterion == "confidence":
        return float(sp.confidence[row, j]) >= t
    if config.criterion == "entropy":
        return float(sp.entropy[row, j]) <= t
    if config.criterion == "uncertainty":
        u = float(sp.uncertainty[row, j])
        return not math.isnan(u) and u <= t
    if config.criterion == "patience":
        label = int(sp.pred[row, j])
        same = 0
        for i in range(k - 1, -1, -1):
            if int(sp.pred[preds.row(config.exits[i].key), j]) != label:
                break
            same += 1
        return same >= t
    raise AssertionError(config.criterion)


def brute_exit_index(preds: Predictions, split: str, config: ExitConfig) -> list[int]:
    n = preds.splits[split].num_samples
    e = len(config.exits)
    out = []
    for j in range(n):
        chosen = e  # the final exit
        for k in range(e):
            if (config.cut and k == e - 1) or fires(preds, split, config, k, j):
                chosen = k
                break
        out.append(chosen)
    return out


def percentile_linear(values: Sequence[float], q: float) -> float:
    """The q-th percentile with linear interpolation between closest ranks."""
    xs = sorted(values)
    pos = q / 100 * (len(xs) - 1)
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True)
class BruteEvaluation:
    accuracy: float
    mean: float
    p95: float
    max: float
    counts: tuple[int, ...]
    speedup: float


def brute_evaluate(
    preds: Predictions, split: str, config: ExitConfig, head_flops: dict[str, int], depth: int = 6
) -> BruteEvaluation:
    sp = preds.splits[split]
    idx = brute_exit_index(preds, split, config)
    costs = brute_costs(config, head_flops, depth)
    keys = [s.key for s in config.exits] + ([] if config.cut else ["final"])
    right, per_sample = 0, []
    for j, k in enumerate(idx):
        row = preds.row(keys[k])
        right += int(sp.pred[row, j]) == int(sp.labels[j])
        per_sample.append(costs[k])
    n = len(idx)
    mean = sum(per_sample) / n
    counts = tuple(idx.count(k) for k in range(len(keys)))
    return BruteEvaluation(
        right / n,
        mean,
        percentile_linear(per_sample, 95),
        max(per_sample),
        counts,
        (cumulative(depth) + FINAL_HEAD) / mean,
    )


def dominated(i: int, acc: Sequence[float], cost: Sequence[float]) -> bool:
    return any(
        acc[j] >= acc[i] and cost[j] <= cost[i] and (acc[j] > acc[i] or cost[j] < cost[i])
        for j in range(len(acc))
    )
