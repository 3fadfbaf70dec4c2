"""Exact threshold refinement for a fixed placement (exits, heads, criterion).

The search samples thresholds; refinement then computes, for each Pareto placement, every
outcome its thresholds can produce on the validation split, so the front is not limited by how
thresholds were sampled:

* :func:`shared_curve`: the whole accuracy-cost curve of one shared threshold. A sample leaves
  at the first exit whose readiness reaches the threshold, so its exit changes only where the
  threshold crosses a running maximum of its readiness ("records"); sorting those events gives
  every distinct outcome in O(E n log(E n)).
* :func:`refine_per_exit`: per-exit thresholds by coordinate ascent on
  ``accuracy - lambda * cost`` for a range of trade-offs lambda; each one-exit step is an exact
  sweep over that exit's distinct readiness values. Fitted this exactly, E thresholds follow the
  validation samples' noise: :func:`refine_placement` keeps them only for placements where
  two-fold cross-fitting shows they beat one shared threshold on held-out samples.

Chosen thresholds lie halfway between neighbouring readiness values, never on one, so the
exported runtime, whose floating-point results may differ in the last bits, takes the same
decisions.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import ExitCriterion, create_criterion
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import pareto_mask

__all__ = [
    "CurvePoint",
    "per_exit_generalises",
    "refine_per_exit",
    "refine_placement",
    "shared_curve",
]


@dataclass(frozen=True)
class CurvePoint:
    """A configuration with its accuracy and mean cost per sample on the evaluator's split;
    the cost is in the evaluator's unit (FLOPs, or milliseconds when it ranks by them)."""

    config: ExitConfig
    accuracy: float
    mean_cost: float


def _outcomes(
    ev: Evaluator, config: ExitConfig
) -> tuple[np.ndarray, np.ndarray, np.ndarray, ExitCriterion]:
    """Readiness with the terminal exit always firing (K, n), correctness (K, n), costs (K,)."""
    crit = create_criterion(config.criterion)
    r = ev.readiness(config, crit).astype(np.float64)
    if config.cut:
        r[-1] = np.inf
    else:
        r = np.vstack([r, np.full((1, ev.n), np.inf)])
    correct = ev.correct[ev.outcome_rows(config)].astype(np.float64)
    return r, correct, ev.exit_cost(config), crit


def _between(values: np.ndarray, integer: bool) -> np.ndarray:
    """Bounds that reproduce "readiness >= v" for each distinct v (descending), with margin."""
    if integer:
        return values.copy()
    lower = np.append(values[1:], values[-1] - 1.0)
    return (values + lower) / 2.0


def shared_curve(ev: Evaluator, config: ExitConfig, frontier: bool = False) -> list[CurvePoint]:
    """Every distinct outcome of one threshold shared by all early exits; with ``frontier``
    only those that no other outcome of the curve beats (as accurate for less, or more
    accurate for as little)."""
    r, correct, cost, crit = _outcomes(ev, config)
    k_count, n = r.shape
    run_max = np.maximum.accumulate(r, axis=0)
    prev = np.vstack([np.full((1, n), -np.inf), run_max[:-1]])
    record = r > prev
    # next_rec[k]: the record after k (the exit a sample falls back to above r[k]).
    next_rec = np.full((k_count, n), k_count - 1, dtype=np.int64)
    for k in range(k_count - 2, -1, -1):
        next_rec[k] = np.where(record[k + 1], k + 1, next_rec[k + 1])
    ev_mask = record[:-1]
    ks, cols = np.nonzero(ev_mask)
    values = r[ks, cols]
    frm = next_rec[ks, cols]
    d_correct = correct[ks, cols] - correct[frm, cols]
    d_cost = cost[ks] - cost[frm]
    order = np.argsort(-values, kind="stable")
    values, d_correct, d_cost = values[order], d_correct[order], d_cost[order]
    base_correct = correct[-1].sum()
    base_cost = cost[-1] * n
    e = len(config.exits)
    never = (
        crit.threshold(r[:-1].max() + 1.0) if (k_count > 1 and np.isfinite(r[:-1]).all()) else 1.0
    )
    points = [
        CurvePoint(config.with_thresholds([never] * e, "shared"), base_correct / n, base_cost / n)
    ]
    if len(values):
        cum_c = base_correct + np.cumsum(d_correct)
        cum_f = base_cost + np.cumsum(d_cost)
        last_of_group = np.append(values[1:] != values[:-1], True)
        uniq = values[last_of_group]
        bounds = _between(uniq, crit.integer)
        cs, fs = cum_c[last_of_group], cum_f[last_of_group]
        if frontier:
            keep = pareto_mask(np.append(cs, base_correct), np.append(fs, base_cost))
            if not keep[-1]:
                points = []
            bounds, cs, fs = bounds[keep[:-1]], cs[keep[:-1]], fs[keep[:-1]]
        for b, c, f in zip(bounds, cs, fs, strict=True):
            t = crit.threshold(b)
            points.append(CurvePoint(config.with_thresholds([t] * e, "shared"), c / n, f / n))
    return points


def _sweep_exit(
    r: np.ndarray, correct: np.ndarray, cost: np.ndarray, bounds: np.ndarray, k: int, integer: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All outcomes of exit k's bound with the other bounds fixed: (bounds, correct, cost sums).

    ``bounds[-1]`` belongs to the terminal exit, which always fires.
    """
    n = r.shape[1]
    fires = r >= bounds[:, None]
    fires[-1] = True
    before = fires[:k].any(axis=0)
    after = fires.copy()
    after[: k + 1] = False
    fallback = after.argmax(axis=0)
    first = fires.argmax(axis=0)
    cols = np.arange(n)
    fixed = before
    base_correct = (
        correct[first[fixed], cols[fixed]].sum() + correct[fallback[~fixed], cols[~fixed]].sum()
    )
    base_cost = cost[first[fixed]].sum() + cost[fallback[~fixed]].sum()
    free = np.nonzero(~fixed)[0]
    vals = r[k, free]
    order = np.argsort(-vals, kind="stable")
    free, vals = free[order], vals[order]
    d_c = correct[k, free] - correct[fallback[free], free]
    d_f = cost[k] - cost[fallback[free]]
    never = float(r[k].max()) + 1.0  # a finite bound no sample reaches: exit k never fires
    out_b = [never]
    out_c = [base_correct]
    out_f = [base_cost]
    if len(vals):
        cum_c = base_correct + np.cumsum(d_c)
        cum_f = base_cost + np.cumsum(d_f)
        last = np.append(vals[1:] != vals[:-1], True)
        uniq = vals[last]
        out_b.extend(_between(uniq, integer))
        out_c.extend(cum_c[last])
        out_f.extend(cum_f[last])
    return np.asarray(out_b), np.asarray(out_c), np.asarray(out_f)


def refine_per_exit(
    ev: Evaluator, config: ExitConfig, lambdas: np.ndarray | None = None, passes: int = 3
) -> list[CurvePoint]:
    """Per-exit thresholds by exact coordinate ascent on ``accuracy - lambda * cost``.

    Cost is measured as a fraction of the backbone's, in the evaluator's unit. Returns one point per lambda
    (duplicates removed).
    """
    r, correct, cost, crit = _outcomes(ev, config)
    k_count, n = r.shape
    early = k_count - 1  # exits whose threshold matters (a cut model's last exit always fires)
    if early == 0:
        return []
    scale = ev.backbone_cost
    lambdas = np.logspace(-3.5, 0.5, 17) if lambdas is None else lambdas
    shared = shared_curve(ev, config)
    out: dict[tuple[float, ...], CurvePoint] = {}
    for lam in lambdas:
        start = max(shared, key=lambda p: p.accuracy - lam * p.mean_cost / scale)
        bounds = np.append([crit.bound(t) for t in start.config.thresholds], -np.inf)[:k_count]
        if config.cut:
            bounds[-1] = -np.inf
        for _ in range(passes):
            changed = False
            for k in range(early):
                b, c, f = _sweep_exit(r, correct, cost, bounds, k, crit.integer)
                score = c / n - lam * f / n / scale
                best = int(np.argmax(score))
                if b[best] != bounds[k]:
                    changed = changed or not np.isclose(b[best], bounds[k])
                    bounds[k] = b[best]
            if not changed:
                break
        thresholds = [crit.threshold(b) for b in bounds[:early]]
        thresholds += list(start.config.thresholds[early:])
        cfg = config.with_thresholds(thresholds, "per_exit")
        acc, mean, _ = ev.quick(cfg)
        out.setdefault(tuple(np.round(thresholds, 12)), CurvePoint(cfg, acc, mean))
    return list(out.values())


# Below this many samples per half, per-exit thresholds are not cross-fitted, and not used.
MIN_HALF = 100


def per_exit_generalises(
    ev: Evaluator, config: ExitConfig, lambdas: np.ndarray | None = None
) -> bool:
    """Whether per-exit thresholds beat one shared threshold on samples they were not fitted on.

    Two-fold cross-fitting: both families are fitted on the even samples and scored on the odd
    ones, then the other way round; for each trade-off lambda, the per-exit choice and the
    shared choice are compared by ``accuracy - lambda * cost`` out of fold. Per-exit refinement
    fits E thresholds exactly to validation; where that gains nothing on held-out samples, its
    extra validation accuracy is noise that new data will not repeat.
    """
    if ev.n < 2 * MIN_HALF:
        return False
    lambdas = np.logspace(-3.5, 0.5, 17) if lambdas is None else lambdas
    scale = ev.backbone_cost
    even, odd = ev.halves()
    gain = 0.0
    for fit, held_out in ((even, odd), (odd, even)):
        per_exit = refine_per_exit(fit, config, lambdas)
        shared = shared_curve(fit, config)
        if not per_exit:
            return False
        for lam in lambdas:
            scores = []
            for family in (per_exit, shared):
                chosen = max(family, key=lambda p: p.accuracy - lam * p.mean_cost / scale)
                acc, mean, _ = held_out.quick(chosen.config)
                scores.append(acc - lam * mean / scale)
            gain += scores[0] - scores[1]
    return gain > 0


def refine_placement(ev: Evaluator, config: ExitConfig, per_exit: bool = True) -> list[CurvePoint]:
    """Shared-threshold curve plus (if allowed, and where it generalises) per-exit refinement of
    one placement (:func:`per_exit_generalises`)."""
    points = shared_curve(ev, config)
    if per_exit and len(config.exits) > 1 and per_exit_generalises(ev, config):
        points += refine_per_exit(ev, config)
    return points
