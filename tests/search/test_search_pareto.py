"""Pareto masks, hypervolume, budget constraints, cutting to a budget and feasible fronts."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from search_brute import brute_costs, dominated

from exitsearch.budget import BudgetKind
from exitsearch.core.config import ExitConfig
from exitsearch.search.pareto import hypervolume, pareto_mask
from exitsearch.search.refine import CurvePoint, shared_curve
from exitsearch.search.study import BudgetConstraint, cut_to_budget, front_of


# ------------------------------------------------------------------------ pareto_mask
def _brute_mask(acc, cost):
    """Non-dominated, and the first of any group of exact duplicates."""
    keep = []
    for i in range(len(acc)):
        dup_before = any(acc[j] == acc[i] and cost[j] == cost[i] for j in range(i))
        keep.append(not dominated(i, acc, cost) and not dup_before)
    return keep


@pytest.mark.parametrize("seed", range(12))
def test_pareto_mask_matches_brute_force_with_duplicates(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(1, 40))
    # few distinct values: many ties and exact duplicates
    acc = rng.integers(0, 6, n).astype(float) / 5
    cost = rng.integers(0, 6, n).astype(float)
    assert pareto_mask(acc, cost).tolist() == _brute_mask(acc.tolist(), cost.tolist())


def test_pareto_mask_hand_cases():
    # (0.9, 2) and (0.8, 1) trade off; (0.8, 2) is dominated by both; duplicate (0.8, 1) dropped
    acc = [0.9, 0.8, 0.8, 0.8, 0.5]
    cost = [2.0, 1.0, 2.0, 1.0, 1.0]
    assert pareto_mask(acc, cost).tolist() == [True, True, False, False, False]
    assert pareto_mask([], []).tolist() == []


# ------------------------------------------------------------------------ hypervolume
def _inclusion_exclusion(acc, cost, ref_acc, ref_cost):
    """Union of the boxes [c, ref_cost] x [ref_acc, a] by inclusion-exclusion."""
    total = 0.0
    n = len(acc)
    for size in range(1, n + 1):
        for subset in itertools.combinations(range(n), size):
            width = ref_cost - max(cost[i] for i in subset)
            height = min(acc[i] for i in subset) - ref_acc
            if width > 0 and height > 0:
                total += (-1) ** (size + 1) * width * height
    return total


def test_hypervolume_hand_values():
    # docstring example: 0.8 * (2 - 1) + 0.9 * (3 - 2)
    assert hypervolume([0.9, 0.8], [2.0, 1.0], 0.0, 3.0) == pytest.approx(1.7)
    # a single point: (ref_cost - c) * (a - ref_acc) = (1 - 0.25) * (0.75 - 0.5)
    assert hypervolume([0.75], [0.25], 0.5, 1.0) == pytest.approx(0.1875)
    # dominated and duplicate points add nothing: (4 - 1) * 0.5 + (4 - 3) * (1.0 - 0.5)
    assert hypervolume([0.5, 0.5, 1.0, 0.25], [1.0, 1.0, 3.0, 2.0], 0.0, 4.0) == pytest.approx(2.0)
    # outside the box (below the accuracy reference, at or beyond the cost reference): 0
    assert hypervolume([0.05, 0.9, 0.9], [0.1, 1.0, 1.5], 0.1, 1.0) == 0.0
    assert hypervolume([], [], 0.0, 1.0) == 0.0
    # a point outside the box next to one inside changes nothing: (1 - 0.5) * (0.6 - 0.1)
    assert hypervolume([0.6, 0.99], [0.5, 1.2], 0.1, 1.0) == pytest.approx(0.25)


@pytest.mark.parametrize("seed", range(15))
def test_hypervolume_matches_inclusion_exclusion(seed):
    rng = np.random.default_rng(100 + seed)
    n = int(rng.integers(1, 9))
    # dyadic values on a coarse grid: exact sums, ties, duplicates, points outside the box
    acc = (rng.integers(-2, 10, n) / 8).tolist()
    cost = (rng.integers(0, 12, n) / 8).tolist()
    ref_acc, ref_cost = 0.125, 1.0
    got = hypervolume(acc, cost, ref_acc, ref_cost)
    assert got == pytest.approx(_inclusion_exclusion(acc, cost, ref_acc, ref_cost), abs=1e-12)


# -------------------------------------------------------------------- budget constraint
def test_budget_violation_signs_for_mean_and_max(world):
    ev = world.ev("val")
    config = ExitConfig((world.spec("mlp@4"),), "confidence", (0.5,))  # used for ms budgets only
    mean = BudgetConstraint(500.0, BudgetKind.MEAN)
    worst = BudgetConstraint(500.0, BudgetKind.MAX)
    # mean within, max beyond: feasible for a mean budget only; the relative excess over 500
    assert mean.violation(ev, config, 400.0, 700.0) == pytest.approx(-0.2)
    assert worst.violation(ev, config, 400.0, 700.0) == pytest.approx(0.4)
    assert mean.fits(ev, config, 400.0, 700.0)
    assert not worst.fits(ev, config, 400.0, 700.0)
    # both beyond / both within
    assert mean.violation(ev, config, 600.0, 700.0) > 0
    assert worst.violation(ev, config, 100.0, 450.0) < 0
    # exactly at the budget is feasible
    assert mean.violation(ev, config, 500.0, 900.0) == 0.0
    assert worst.violation(ev, config, 10.0, 500.0) == 0.0
    assert mean.fits(ev, config, 500.0, 900.0) and worst.fits(ev, config, 10.0, 500.0)
    # no budget: always feasible
    free = BudgetConstraint(None)
    assert not free.limited
    assert free.violation(ev, config, 1e12, 1e12) < 0 and free.fits(ev, config, 1e12, 1e12)


# ------------------------------------------------------------------------ cut_to_budget
KEYS = ("linear@1+u", "mlp@2", "linear@3+u", "mlp@4", "linear@5+u")


def _config(world, keys=KEYS, criterion="confidence", cut=False):
    exits = tuple(world.spec(k) for k in keys)
    return ExitConfig(
        exits, criterion, tuple(0.5 + 0.1 * i for i in range(len(exits))), "per_exit", cut
    )


def test_cut_to_budget_keeps_exactly_the_exits_that_fit(world):
    ev = world.ev("val")
    config = _config(world)
    # cut costs, by hand: 110+3, 220+10, 340+13, 470+20, 610+23
    cut_costs = brute_costs(
        ExitConfig(config.exits, "confidence", config.thresholds, cut=True), world.head_flops
    )
    assert cut_costs == [113, 230, 353, 490, 633]
    whole = max(ev.costs.exit_flops(config))  # uncut: every exit, then the backbone's head
    assert whole > 633
    for flops in (whole, 10_000):  # the worst case fits as it is: nothing to cut
        assert cut_to_budget(config, ev, BudgetConstraint(flops, BudgetKind.MAX)) == config
    for flops in (113, 200, 230, 352.9, 353, 489, 490, 633, 700, whole - 1):
        cut = cut_to_budget(config, ev, BudgetConstraint(flops, BudgetKind.MAX))
        fits = [c for c in cut_costs if c <= flops]
        assert cut is not None and cut.cut
        assert cut.exits == config.exits[: len(fits)]
        assert cut.thresholds == config.thresholds[: len(fits)]
        assert cut.criterion == config.criterion
        assert max(ev.costs.exit_flops(cut)) <= flops
    assert cut_to_budget(config, ev, BudgetConstraint(112.0, BudgetKind.MAX)) is None


def test_cut_to_budget_leaves_mean_and_unconstrained_budgets_alone(world):
    ev = world.ev("val")
    config = _config(world)
    assert cut_to_budget(config, ev, BudgetConstraint(200.0, BudgetKind.MEAN)) == config
    assert cut_to_budget(config, ev, BudgetConstraint(None, BudgetKind.MAX)) == config


# ----------------------------------------------------------------------------- front_of
def _points(world):
    ev = world.ev("val")
    points = []
    for keys in (KEYS, ("mlp@2", "linear@5+u"), ("linear@1+u", "linear@3+u"), ("mlp@4",)):
        for criterion in ("confidence", "entropy"):
            points += shared_curve(ev, _config(world, keys, criterion))
    return points


@pytest.mark.parametrize("flops", [None, 250.0, 400.0, 600.0])
def test_front_of_mean_budget_is_the_feasible_non_dominated_set(world, flops):
    ev = world.ev("val")
    points = _points(world)
    budget = BudgetConstraint(flops, BudgetKind.MEAN)
    front = front_of(points, budget, ev)
    feasible = [p for p in points if flops is None or p.mean_cost <= flops]
    acc = [p.accuracy for p in feasible]
    cost = [p.mean_cost for p in feasible]
    expected = {(acc[i], cost[i]) for i in range(len(feasible)) if not dominated(i, acc, cost)}
    assert {(p.accuracy, p.mean_cost) for p in front} == expected
    assert len(front) == len(expected)  # duplicates kept once
    assert [p.mean_cost for p in front] == sorted(p.mean_cost for p in front)
    assert all(flops is None or p.mean_cost <= flops for p in front)


def test_front_of_max_budget_checks_the_worst_case(world):
    ev = world.ev("val")
    budget = BudgetConstraint(400.0, BudgetKind.MAX)
    points = _points(world)
    cut_points = []
    for keys in (KEYS, ("mlp@2", "linear@3+u")):
        cut = cut_to_budget(_config(world, keys), ev, budget)
        cut_points += shared_curve(ev, cut)
    front = front_of(points + cut_points, budget, ev)
    assert front
    feasible = [p for p in points + cut_points if ev.quick(p.config)[2] <= 400.0]
    acc = [p.accuracy for p in feasible]
    cost = [p.mean_cost for p in feasible]
    expected = {(acc[i], cost[i]) for i in range(len(feasible)) if not dominated(i, acc, cost)}
    assert {(p.accuracy, p.mean_cost) for p in front} == expected
    for p in front:
        assert ev.evaluate(p.config).max_flops <= 400.0
    # mean-feasible points whose worst case is over budget exist and were left out
    assert any(p.mean_cost <= 400.0 and ev.quick(p.config)[2] > 400.0 for p in points)


def test_front_of_nothing_feasible_is_empty(world):
    ev = world.ev("val")
    assert front_of(_points(world), BudgetConstraint(100.0), ev) == []
    assert front_of([], BudgetConstraint(None), ev) == []


def test_curve_point_front_is_exact_for_hand_points(world):
    ev = world.ev("val")
    c = _config(world, ("mlp@4",))
    pts = [CurvePoint(c, 0.5, 300.0), CurvePoint(c, 0.6, 300.0), CurvePoint(c, 0.7, 500.0)]
    front = front_of(pts, BudgetConstraint(450.0), ev)
    assert [(p.accuracy, p.mean_cost) for p in front] == [(0.6, 300.0)]
