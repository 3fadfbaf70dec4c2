"""How sure a validation accuracy is: 95 % intervals for one accuracy and for a paired difference.

A front member's validation accuracy is a proportion of ``n`` samples; the Wilson score interval
gives its uncertainty without the normal approximation's failures near 0 and 1. Its difference to
the backbone is measured on the same samples, so the two are paired: the interval of the
difference uses only the samples where they disagree, by Newcombe's hybrid score method (method 10
of Newcombe, "Improved confidence intervals for the difference between binomial proportions based
on paired data", Statistics in Medicine 1998), which combines the two Wilson intervals with the
correlation of the paired outcomes.

A counting task's score is minus a sample's absolute error, not a proportion: its mean gets the
normal interval ``mean +- z * sd / sqrt(n)`` and a paired difference the same interval of the
per-sample differences (validation splits hold hundreds to thousands of samples, where the
normal approximation of a mean holds).

These intervals speak of the samples the validation split could have held, not of thresholds that
were chosen on it: a member picked for being best on validation is optimistic by more than its
interval says.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

__all__ = [
    "Z95",
    "PairedDifference",
    "mean_interval",
    "median_interval",
    "paired_difference",
    "paired_mean_difference",
    "paired_scores",
    "score_interval",
    "wilson_interval",
]

Z95 = 1.959963984540054  # the two-sided 95 % quantile of the standard normal


def wilson_interval(successes: int, n: int, z: float = Z95) -> tuple[float, float]:
    """The Wilson score interval of a proportion ``successes / n`` (``(0, 1)`` for ``n = 0``)."""
    if n <= 0:
        return 0.0, 1.0
    p = successes / n
    denom = 1.0 + z * z / n
    centre = (p + z * z / (2 * n)) / denom
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / denom
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class PairedDifference:
    """Accuracy of A minus accuracy of B on the same samples, with its 95 % interval.

    Attributes:
        difference: ``(only_a - only_b) / n``.
        low, high: the interval's bounds.
        only_a, only_b: samples A gets right and B wrong, and the reverse.
        n: samples.
    """

    difference: float
    low: float
    high: float
    only_a: int
    only_b: int
    n: int

    @property
    def significant(self) -> bool:
        """The interval excludes 0: the two differ on samples like these."""
        return self.low > 0 or self.high < 0

    def to_dict(self) -> dict[str, float | int]:
        return {
            "difference": self.difference,
            "low": self.low,
            "high": self.high,
            "only_member": self.only_a,
            "only_other": self.only_b,
        }


def paired_difference(a: np.ndarray, b: np.ndarray, z: float = Z95) -> PairedDifference:
    """Newcombe's hybrid score interval of ``mean(a) - mean(b)`` for paired 0/1 outcomes."""
    a = np.asarray(a, dtype=bool)
    b = np.asarray(b, dtype=bool)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(
            f"paired outcomes need two vectors of one length, got {a.shape}, {b.shape}"
        )
    n = a.size
    if n == 0:
        return PairedDifference(0.0, -1.0, 1.0, 0, 0, 0)
    both = int(np.count_nonzero(a & b))
    only_a = int(np.count_nonzero(a & ~b))
    only_b = int(np.count_nonzero(~a & b))
    neither = n - both - only_a - only_b
    p1, p2 = (both + only_a) / n, (both + only_b) / n
    l1, u1 = wilson_interval(both + only_a, n, z)
    l2, u2 = wilson_interval(both + only_b, n, z)
    margins = (both + only_a) * (only_b + neither) * (both + only_b) * (only_a + neither)
    phi = (both * neither - only_a * only_b) / math.sqrt(margins) if margins > 0 else 0.0
    d = p1 - p2
    lower = math.sqrt(max(0.0, (p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2))
    upper = math.sqrt(max(0.0, (u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2))
    return PairedDifference(d, max(-1.0, d - lower), min(1.0, d + upper), only_a, only_b, n)


def mean_interval(values: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """The normal interval ``mean +- z * sd / sqrt(n)`` of a mean (the value itself for n < 2)."""
    x = np.asarray(values, dtype=np.float64)
    if x.size == 0:
        return -math.inf, math.inf
    m = float(x.mean())
    if x.size < 2:
        return m, m
    half = z * float(x.std(ddof=1)) / math.sqrt(x.size)
    return m - half, m + half


def paired_mean_difference(a: np.ndarray, b: np.ndarray, z: float = Z95) -> PairedDifference:
    """``mean(a) - mean(b)`` of paired scores with the normal interval of the differences;
    ``only_a``/``only_b`` count the samples where ``a``/``b`` scores higher."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ValueError(f"paired scores need two vectors of one length, got {a.shape}, {b.shape}")
    d = a - b
    low, high = mean_interval(d, z)
    mean = float(d.mean()) if d.size else 0.0
    return PairedDifference(
        mean, low, high, int(np.count_nonzero(d > 0)), int(np.count_nonzero(d < 0)), d.size
    )


def score_interval(scores: np.ndarray, z: float = Z95) -> tuple[float, float]:
    """95 % interval of a mean score: Wilson for right/wrong (bool) outcomes, else normal."""
    if scores.dtype == np.bool_:
        return wilson_interval(int(scores.sum()), scores.size, z)
    return mean_interval(scores, z)


def paired_scores(a: np.ndarray, b: np.ndarray, z: float = Z95) -> PairedDifference:
    """The paired difference of two members' scores: Newcombe for bool outcomes, else normal."""
    if a.dtype == np.bool_ and b.dtype == np.bool_:
        return paired_difference(a, b, z)
    return paired_mean_difference(a, b, z)


def median_interval(
    values: list[float] | np.ndarray, level: float = 0.95
) -> tuple[float, float, float]:
    """The median of ``values`` and a distribution-free interval for it: the order statistics
    ``x(j)`` and ``x(n+1-j)`` with the largest ``j`` for which ``P(Bin(n, 1/2) < j) <= (1 -
    level) / 2``, so the interval covers the population median with probability at least
    ``level`` for any continuous distribution. Below 6 values no such ``j`` exists for 95 %;
    the interval is then the range, which covers with probability ``1 - 2**(1 - n)``.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        raise ValueError("median_interval needs at least one value")
    tail = (1.0 - level) / 2.0
    j, below = 0, 0.0  # below: P(Bin(n, 1/2) < j + 1)
    while j < n // 2:
        below += math.comb(n, j) / 2.0**n
        if below > tail:
            break
        j += 1
    j = max(j, 1)  # 1-indexed order statistic; at least the range
    return float(np.median(x)), float(x[j - 1]), float(x[n - j])
