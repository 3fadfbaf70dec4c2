"""95 % intervals of an accuracy and of a paired difference: coverage measured by simulation."""

from __future__ import annotations

import numpy as np
import pytest

from exitsearch.intervals import median_interval, paired_difference, wilson_interval


def _pairs(rng: np.random.Generator, n: int, p_both: float, p_a: float, p_b: float):
    """Paired outcomes with given cell probabilities (both right, only A, only B)."""
    u = rng.random(n)
    both = u < p_both
    only_a = (u >= p_both) & (u < p_both + p_a)
    only_b = (u >= p_both + p_a) & (u < p_both + p_a + p_b)
    return both | only_a, both | only_b


@pytest.mark.parametrize("n,p", [(50, 0.9), (239, 0.85), (2000, 0.98), (30, 0.5)])
def test_wilson_interval_covers_the_true_accuracy_95_percent_of_the_time(n, p):
    rng = np.random.default_rng(0)
    hits = 0
    for _ in range(4000):
        k = int(rng.binomial(n, p))
        lo, hi = wilson_interval(k, n)
        assert 0.0 <= lo <= k / n <= hi <= 1.0
        hits += lo <= p <= hi
    assert 0.93 <= hits / 4000 <= 0.975


@pytest.mark.parametrize(
    "n,cells",
    [
        (239, (0.80, 0.06, 0.04)),  # a small split, a member slightly better than the backbone
        (1000, (0.85, 0.02, 0.02)),  # equal accuracy, few disagreements
        (5000, (0.87, 0.01, 0.025)),  # a cheaper member 1.5 points worse
        (60, (0.70, 0.10, 0.05)),
    ],
)
def test_paired_difference_covers_the_true_difference_95_percent_of_the_time(n, cells):
    rng = np.random.default_rng(1)
    truth = cells[1] - cells[2]
    hits = 0
    for _ in range(3000):
        a, b = _pairs(rng, n, *cells)
        d = paired_difference(a, b)
        assert d.low <= d.difference <= d.high
        assert d.difference == pytest.approx(a.mean() - b.mean())
        hits += d.low <= truth <= d.high
    assert 0.93 <= hits / 3000 <= 0.975


def test_paired_interval_is_narrower_than_ignoring_the_pairing():
    """Two classifiers that agree on most samples differ by little, and the interval knows it."""
    a, b = _pairs(np.random.default_rng(2), 2000, 0.86, 0.01, 0.01)
    d = paired_difference(a, b)
    la, ua = wilson_interval(int(a.sum()), a.size)
    lb, ub = wilson_interval(int(b.sum()), b.size)
    unpaired_half = np.hypot((ua - la) / 2, (ub - lb) / 2)
    assert (d.high - d.low) / 2 < unpaired_half / 2
    assert not d.significant


def test_identical_outcomes_and_edge_cases():
    same = np.array([True, False, True, True])
    d = paired_difference(same, same)
    assert d.difference == 0 and d.only_a == d.only_b == 0 and not d.significant
    assert wilson_interval(0, 0) == (0.0, 1.0)
    assert wilson_interval(10, 10)[1] == pytest.approx(1.0)
    assert wilson_interval(0, 10)[0] == pytest.approx(0.0, abs=1e-12)
    big = paired_difference(np.ones(500, bool), np.zeros(500, bool))
    assert big.significant and big.low > 0.9
    with pytest.raises(ValueError, match="one length"):
        paired_difference(np.ones(3, bool), np.ones(4, bool))


@pytest.mark.parametrize("n", [6, 15, 30, 101])
def test_median_interval_covers_the_population_median_at_least_95_percent(n):
    # skewed and heavy-tailed, like timings: lognormal, whose median is exactly 1
    rng = np.random.default_rng(n)
    hits = 0
    for _ in range(4000):
        v = rng.lognormal(0.0, 1.0, n)
        med, lo, hi = median_interval(v)
        assert lo <= med <= hi and med == pytest.approx(float(np.median(v)))
        hits += lo <= 1.0 <= hi
    assert 0.94 <= hits / 4000 <= 0.995


def test_median_interval_of_few_values_is_their_range():
    assert median_interval([3.0, 1.0, 2.0]) == (2.0, 1.0, 3.0)
    assert median_interval([5.0]) == (5.0, 5.0, 5.0)
    with pytest.raises(ValueError):
        median_interval([])
