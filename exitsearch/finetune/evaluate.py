"""Scoring a fine-tuned configuration the way the search scored it, and re-fitting thresholds.

The new weights' per-sample outputs are computed with the same
:func:`~exitsearch.core.criteria.exit_statistics` (through
:func:`~exitsearch.training.predict.predict`), scored by the same
:class:`~exitsearch.search.evaluator.Evaluator` and cost model, and the thresholds of the
placement are fitted again on validation with the exact curve of
:func:`~exitsearch.search.refine.refine_placement` (shared, then per-exit), keeping the Pareto
optimal settings: the operating points are directly comparable with the searched front. Test is
only re-scored, never fitted on.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from exitsearch.backbone import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.errors import BudgetError
from exitsearch.export.points import ExitCosts, OperatingPoint, choose_point
from exitsearch.heads import HeadContext, profile_heads
from exitsearch.profile import profile_backbone
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import hypervolume, pareto_mask, spread
from exitsearch.search.refine import refine_placement
from exitsearch.training.predict import Predictions

# Operating points a report lists (the bundle keeps them all): evenly spread over the cost range,
# with the point matched to the budget.
REPORTED_POINTS = 64

__all__ = [
    "cost_model",
    "exit_costs_of",
    "matched_point",
    "refit_operating_points",
    "score_placement",
]


def cost_model(backbone: Backbone, config: ExitConfig) -> CostModel:
    """The search's cost model for ``config``'s exits on ``backbone`` (fvcore FLOPs)."""
    heads = profile_heads(config.exits, HeadContext.from_backbone(backbone))
    return CostModel(profile_backbone(backbone), {k: c.flops for k, c in heads.items()})


def exit_costs_of(costs: CostModel, config: ExitConfig) -> ExitCosts:
    """The bundle's :class:`ExitCosts` from the cost model (what ``exit_costs`` counts)."""
    return ExitCosts(float(costs.backbone_flops), tuple(float(v) for v in costs.exit_flops(config)))


def refit_operating_points(
    predictions: Predictions, costs: CostModel, config: ExitConfig
) -> list[OperatingPoint]:
    """The Pareto-optimal threshold settings of ``config``'s placement on validation, cheapest
    first (as ``placements.json`` lists them for a searched placement)."""
    ev = Evaluator(predictions, "val", costs)
    pts = refine_placement(ev, config, per_exit=True)
    keep = pareto_mask([p.accuracy for p in pts], [p.mean_cost for p in pts])
    chosen = sorted((p for p, k in zip(pts, keep, strict=True) if k), key=lambda p: p.mean_cost)
    return [
        OperatingPoint(p.config.thresholds, p.config.threshold_mode, p.mean_cost, p.accuracy)
        for p in chosen
    ]


def matched_point(points: Sequence[OperatingPoint], budget: float, costs: CostModel) -> int:
    """Index of the most accurate point whose validation cost fits ``budget`` (mean FLOPs per
    sample), or of the cheapest point when none fits."""
    try:
        return choose_point(points, float(budget), float(costs.backbone_flops), float("inf"))
    except BudgetError:
        return min(range(len(points)), key=lambda i: points[i].mean_flops)


def score_placement(
    predictions: Predictions,
    costs: CostModel,
    config: ExitConfig,
    points: Sequence[OperatingPoint],
    budget: float,
) -> dict[str, Any]:
    """Per-exit and final accuracy, the operating points on validation and test (at most
    :data:`REPORTED_POINTS` of them and the matched one; ``index``: the position among all
    ``points``, which the bundle keeps), the point matched to ``budget`` and the validation
    hypervolume of all points (reference: chance accuracy and the backbone's cost)."""
    val, test = Evaluator(predictions, "val", costs), Evaluator(predictions, "test", costs)
    scale = float(costs.backbone_flops)
    m = matched_point(points, budget, costs)
    rows = []
    for i in spread(len(points), REPORTED_POINTS, keep=(m,)):
        p = points[i]
        cfg = config.with_thresholds(p.thresholds, p.threshold_mode)
        t_acc, t_flops, _ = test.quick(cfg)
        rows.append(
            {
                "index": i,
                "thresholds": list(p.thresholds),
                "threshold_mode": p.threshold_mode,
                "val": {"accuracy": p.val_accuracy, "mean_flops": p.mean_flops},
                "test": {"accuracy": t_acc, "mean_flops": t_flops},
            }
        )
    matched_cfg = config.with_thresholds(points[m].thresholds, points[m].threshold_mode)
    val_acc = predictions.splits["val"].accuracy()
    test_acc = predictions.splits["test"].accuracy()
    return {
        "exits": [
            {"key": s.key, "val_accuracy": float(val_acc[i]), "test_accuracy": float(test_acc[i])}
            for i, s in enumerate(predictions.heads)
        ],
        "final": {"val_accuracy": float(val_acc[-1]), "test_accuracy": float(test_acc[-1])},
        "points": len(points),
        "operating_points": rows,
        "matched": {
            "index": m,
            "thresholds": list(points[m].thresholds),
            "val": val.evaluate(matched_cfg).to_dict(),
            "test": test.evaluate(matched_cfg).to_dict(),
        },
        "hypervolume_val": hypervolume(
            [p.val_accuracy for p in points],
            [p.mean_flops / scale for p in points],
            1.0 / predictions.num_classes,
            1.0,
        ),
    }
