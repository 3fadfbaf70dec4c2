"""Simple front members: exits nobody leaves at are dropped, thresholds print as they compare."""

from __future__ import annotations

import numpy as np
import pytest

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.search.refine import CurvePoint
from exitsearch.search.study import BudgetConstraint, simple_front, simplify


def _linear(world, *locations):
    return tuple(world.spec(f"linear@{m}+u") for m in locations)


def _same_outcomes(ev, a: ExitConfig, b: ExitConfig) -> None:
    rows_a = ev.outcome_rows(a)[ev.exit_index(a)]
    rows_b = ev.outcome_rows(b)[ev.exit_index(b)]
    assert np.array_equal(ev.sp.pred[rows_a, np.arange(ev.n)], ev.sp.pred[rows_b, np.arange(ev.n)])


@pytest.mark.parametrize("criterion", ["confidence", "entropy", "uncertainty"])
def test_an_exit_that_never_fires_is_dropped_and_nothing_else_changes(world, criterion):
    ev = world.ev()
    crit = create_criterion(criterion)
    never = 2.0 if crit.comparison == ">=" else -1.0
    usual = 0.6 if crit.comparison == ">=" else 0.4
    config = ExitConfig(_linear(world, 1, 2, 3), criterion, (usual, never, usual))
    simple = simplify(config, ev)
    assert simple.locations == (1, 3)
    _same_outcomes(ev, config, simple)
    (acc, mean, _), (acc2, mean2, _) = ev.quick(config), ev.quick(simple)
    assert acc2 == acc and mean2 < mean  # those who passed exit 2 no longer pay for its head
    assert "never" in config.describe() and "never" not in simple.describe()


def test_exits_after_one_that_always_fires_are_dropped(world):
    ev = world.ev()
    config = ExitConfig(_linear(world, 1, 2, 3), "confidence", (0.6, 0.0, 0.7))
    simple = simplify(config, ev)
    assert simple.locations == (1, 2)
    _same_outcomes(ev, config, simple)
    assert ev.quick(simple)[:2] == ev.quick(config)[:2]  # nobody reached exit 3: same cost
    # nobody goes on past an exit that always fires: the description does not send them on
    assert simple.describe() == "confidence: linear@1 conf>=0.6, linear@2 always"


def test_patience_and_cut_ends_stay(world):
    ev = world.ev()
    patience = ExitConfig(_linear(world, 1, 2, 3), "patience", (9, 1, 1))
    assert simplify(patience, ev) is patience
    cut = ExitConfig(_linear(world, 1, 2, 3), "confidence", (0.5, 2.0, 0.5), cut=True)
    assert simplify(cut, ev).locations == (1, 3)  # some reach exit 3, where the cut model ends


def test_a_cut_model_ends_at_the_last_exit_anybody_leaves_at(world):
    ev = world.ev()
    cut = ExitConfig(_linear(world, 1, 2, 3), "confidence", (0.5, 0.0, 0.5), cut=True)
    simple = simplify(cut, ev)
    assert simple.locations == (1, 2) and simple.cut  # exit 2 always fires: nobody reaches 3
    _same_outcomes(ev, cut, simple)
    assert ev.quick(simple) == ev.quick(cut)
    # the structural worst case (a sample going on to the cut end) is exit 2's now
    assert ev.exit_cost(simple)[-1] < ev.exit_cost(cut)[-1]


def test_equal_members_merge_keeping_the_simplest(world):
    ev = world.ev()
    long = ExitConfig(_linear(world, 1, 2, 3), "confidence", (0.6, 2.0, 0.6))
    short = ExitConfig(_linear(world, 1, 3), "confidence", (0.6, 0.6))
    points = [CurvePoint(c, *ev.quick(c)[:2]) for c in (long, short)]
    front = simple_front(points, BudgetConstraint(None), ev)
    assert [p.config for p in front] == [short]


@pytest.mark.parametrize(
    "criterion,threshold,text",
    [
        ("confidence", 0.9, "conf>=0.9"),
        ("confidence", 1.5, "never"),
        ("confidence", 0.0, "always"),
        ("entropy", 0.25, "entropy<=0.25"),
        ("entropy", -0.5, "never"),
        ("entropy", 1.0, "always"),
        ("uncertainty", 0.3, "u<=0.3"),
        ("uncertainty", 1.2, "always"),
        ("patience", 2, "same>=2"),
        ("patience", 0, "always"),
    ],
)
def test_thresholds_print_the_comparison_they_make(criterion, threshold, text):
    assert create_criterion(criterion).describe_threshold(threshold) == text
