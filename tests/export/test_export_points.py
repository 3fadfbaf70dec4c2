"""Operating points: choosing by budget, and switching thresholds at run time exactly."""

from __future__ import annotations

import numpy as np
import pytest
from export_world import SPECS, World

from exitsearch.budget import BudgetKind, parse_budget
from exitsearch.core.config import ExitConfig
from exitsearch.errors import BudgetError, ConfigError
from exitsearch.export import OperatingPoint, choose_point
from exitsearch.search.refine import shared_curve

POINTS = [
    OperatingPoint((0.5,), "shared", 4e6, 0.70),
    OperatingPoint((0.7,), "shared", 6e6, 0.80),
    OperatingPoint((0.8,), "shared", 7e6, 0.80),  # as accurate as the cheaper one
    OperatingPoint((0.9,), "shared", 9e6, 0.85),
]
BACKBONE = 1e7


@pytest.mark.parametrize(
    ("budget", "expected"),
    [
        (4e6, 0),
        (6.5e6, 1),
        (8e6, 1),  # 0.80 at 6e6 beats 0.80 at 7e6
        (9e6, 3),  # a budget equal to the predicted cost fits
        (1e9, 3),
        ("6.5MFLOPs", 1),
        ("65%", 1),
        (parse_budget("90%"), 3),
    ],
)
def test_most_accurate_point_within_the_budget(budget, expected):
    assert choose_point(POINTS, budget, BACKBONE, worst_case_flops=BACKBONE) == expected


def test_budget_below_every_point_is_a_clear_error():
    with pytest.raises(BudgetError) as info:
        choose_point(POINTS, 3e6, BACKBONE, BACKBONE)
    msg = str(info.value)
    assert "no operating point fits" in msg and "4 MFLOPs" in msg and "40.0%" in msg
    assert "\n" not in msg


def test_worst_case_budgets_are_decided_by_the_terminal_exit():
    budget = parse_budget("9.5MFLOPs", BudgetKind.MAX)
    with pytest.raises(BudgetError, match="terminal exit"):
        choose_point(POINTS, budget, BACKBONE, worst_case_flops=BACKBONE)
    assert choose_point(POINTS, budget, BACKBONE, worst_case_flops=9e6) == 3


def test_budgets_in_milliseconds_are_refused():
    with pytest.raises(BudgetError, match="milliseconds"):
        choose_point(POINTS, "12ms", BACKBONE, BACKBONE)


def test_point_round_trips_and_validates():
    assert OperatingPoint.from_dict(POINTS[1].to_dict()) == POINTS[1]
    with pytest.raises(ConfigError, match="threshold_mode"):
        OperatingPoint((0.5,), "global", 1.0, 0.5)


@pytest.fixture(scope="module")
def anytime(world: World):  # type: ignore[no-untyped-def]
    """A model with the placement's whole shared-threshold curve as operating points."""
    curve = shared_curve(world.ev, ExitConfig(SPECS, "confidence", (0.5,) * 3, "shared"))
    step = max(1, len(curve) // 8)
    points = [
        OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy)
        for p in curve[::step]
    ]
    return world.model(curve[0].config, points), points


def test_switching_points_at_run_time_reproduces_their_predictions(world: World, anytime):  # type: ignore[no-untyped-def]
    """No retraining: every operating point runs at exactly its predicted accuracy and cost."""
    model, points = anytime
    labels = world.splits.val.y
    for i, p in enumerate(points):
        assert model.set_operating_point(index=i) == p
        assert model.thresholds == p.thresholds and model.point_index == i
        idx, pred, _ = world.run_split(model, 64)
        assert float((pred == labels).mean()) == pytest.approx(p.val_accuracy, abs=1e-12)
        assert model.costs.mean_flops(idx) == pytest.approx(p.mean_flops, rel=1e-12)


def test_set_operating_point_by_budget(world: World, anytime):  # type: ignore[no-untyped-def]
    model, points = anytime
    backbone = model.costs.backbone_flops
    assert backbone == world.costs.backbone_flops
    for budget in (0.6 * backbone, 0.8 * backbone, 2.0 * backbone):
        fits = [p for p in points if p.mean_flops <= budget]
        best = max(p.val_accuracy for p in fits)
        chosen = model.set_operating_point(budget)
        assert chosen.val_accuracy == best and chosen.mean_flops <= budget
        assert model.thresholds == chosen.thresholds
    chosen = model.set_operating_point("60%")
    assert chosen.mean_flops <= 0.6 * backbone


def test_set_operating_point_rejects_what_cannot_be_met(anytime):  # type: ignore[no-untyped-def]
    model, points = anytime
    cheapest = min(p.mean_flops for p in points)
    before = model.thresholds
    with pytest.raises(BudgetError, match="no operating point fits"):
        model.set_operating_point(0.5 * cheapest)
    assert model.thresholds == before  # a failed switch changes nothing
    with pytest.raises(ConfigError, match="exactly one"):
        model.set_operating_point()
    with pytest.raises(ConfigError, match="exactly one"):
        model.set_operating_point(1e9, index=0)
    with pytest.raises(ConfigError, match="does not exist"):
        model.set_operating_point(index=len(points))


def test_thresholds_of_the_wrong_length_are_refused(world: World):
    model = world.model(ExitConfig(SPECS, "confidence", (0.5,) * 3))
    with pytest.raises(ConfigError, match="3 exits need 3 thresholds"):
        model.set_thresholds((0.5,))
    with pytest.raises(ConfigError, match="thresholds for 3 exits"):
        world.model(ExitConfig(SPECS, "confidence", (0.5,) * 3), [POINTS[0]])
    assert np.isfinite(model.costs.exit_flops).all()
