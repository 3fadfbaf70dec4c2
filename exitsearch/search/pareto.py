"""Pareto fronts and hypervolume for accuracy (maximised) against cost (minimised)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["hypervolume", "pareto_mask", "spread"]


def pareto_mask(accuracy: Sequence[float], cost: Sequence[float]) -> np.ndarray:
    """True for points no other point dominates (>= accuracy and <= cost, one strictly).

    Among exact duplicates the first is kept.
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    order = np.lexsort((-acc, c))  # by cost ascending, then accuracy descending
    ranked = acc[order]
    # kept: more accurate than every point before it in that order
    before = np.concatenate([[-np.inf], np.maximum.accumulate(ranked)[:-1]])
    keep = np.zeros(len(acc), dtype=bool)
    keep[order] = ranked > before
    return keep


def hypervolume(
    accuracy: Sequence[float], cost: Sequence[float], ref_accuracy: float, ref_cost: float
) -> float:
    """Area dominated by the points inside the box (accuracy >= ref, cost <= ref).

    Example:
        >>> hypervolume([0.9, 0.8], [2.0, 1.0], ref_accuracy=0.0, ref_cost=3.0)
        1.7
    """
    acc = np.asarray(accuracy, dtype=np.float64)
    c = np.asarray(cost, dtype=np.float64)
    inside = (acc > ref_accuracy) & (c < ref_cost)
    acc, c = acc[inside], c[inside]
    if not len(acc):
        return 0.0
    mask = pareto_mask(acc, c)
    acc, c = acc[mask], c[mask]
    order = np.argsort(c)
    acc, c = acc[order], c[order]
    # Sweep cost upwards: between c[i] and c[i+1] the best accuracy available is acc[i].
    edges = np.append(c, ref_cost)
    return float(np.sum((edges[1:] - edges[:-1]) * (acc - ref_accuracy)))


def spread(n: int, most: int, keep: Sequence[int] = ()) -> list[int]:
    """Indices of at most ``most`` (plus ``keep``) of ``n`` cost-ordered points, evenly spaced,
    both ends kept: enough to draw or switch between along a curve."""
    if n <= most:
        return list(range(n))
    picks = {round(i * (n - 1) / (most - 1)) for i in range(most)}
    return sorted(picks | set(keep))
