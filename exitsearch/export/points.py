"""Operating points: threshold settings of one placement that an exported model switches between.

A placement (exits, heads, criterion) trained once admits many threshold settings; refinement
(:mod:`exitsearch.search.refine`) keeps the Pareto-optimal ones on validation and the run folder
lists them in ``placements.json``. The exported model carries them all, so a deployment picks
the most accurate setting that fits its budget at run time, without retraining ("anytime"
operation).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from exitsearch.budget import Budget, BudgetKind, BudgetUnit, parse_budget
from exitsearch.errors import BudgetError, ConfigError
from exitsearch.units import format_flops

__all__ = ["Anytime", "ExitCosts", "OperatingPoint", "choose_point"]

# Relative slack when comparing a predicted cost with a budget: the costs are sums of integers
# held in float64, so a budget typed as the exact cost must fit.
_SLACK = 1e-12


@dataclass(frozen=True)
class OperatingPoint:
    """One threshold setting with what validation predicted for it.

    Attributes:
        thresholds: one per early exit (a cut model's last value is unused: that exit always
            fires).
        threshold_mode: ``shared`` or ``per_exit``.
        mean_flops: predicted mean FLOPs per sample on the validation split.
        val_accuracy: validation accuracy.
    """

    thresholds: tuple[float, ...]
    threshold_mode: str
    mean_flops: float
    val_accuracy: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        if self.threshold_mode not in ("shared", "per_exit"):
            raise ConfigError(
                f"threshold_mode must be shared or per_exit, got {self.threshold_mode!r}"
            )
        if not self.mean_flops > 0:
            raise ConfigError(f"`mean_flops > 0` must hold, but got mean_flops={self.mean_flops}")

    def to_dict(self) -> dict[str, Any]:
        return {
            "thresholds": list(self.thresholds),
            "threshold_mode": self.threshold_mode,
            "val_accuracy": self.val_accuracy,
            "mean_flops": self.mean_flops,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> OperatingPoint:
        return cls(
            thresholds=tuple(d["thresholds"]),
            threshold_mode=str(d.get("threshold_mode", "per_exit")),
            mean_flops=float(d["mean_flops"]),
            val_accuracy=float(d["val_accuracy"]),
        )


@dataclass(frozen=True)
class ExitCosts:
    """FLOPs per sample (fvcore, 1 MAC = 1 FLOP) of leaving at each exit, and of the backbone."""

    backbone_flops: float
    exit_flops: tuple[float, ...]

    def mean_flops(self, exit_index: np.ndarray) -> float:
        return float(np.asarray(self.exit_flops, dtype=np.float64)[exit_index].mean())

    def to_dict(self) -> dict[str, Any]:
        return {"backbone_flops": self.backbone_flops, "exit_flops": list(self.exit_flops)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ExitCosts:
        return cls(float(d["backbone_flops"]), tuple(float(v) for v in d["exit_flops"]))


def budget_flops(budget: float | str | Budget, backbone_flops: float) -> tuple[float, BudgetKind]:
    """A budget as FLOPs per sample and its kind; strings are parsed as on the command line."""
    if isinstance(budget, str):
        try:
            budget = parse_budget(budget)
        except BudgetError as exc:  # what is wrong, then what a budget here can be
            reason = str(exc).split(";")[0]
            raise BudgetError(
                f"{reason}; operating points are chosen by FLOPs: give a share of the backbone "
                "such as 40% or FLOPs per sample such as 30MFLOPs"
            ) from None
    if isinstance(budget, Budget):
        if budget.unit is BudgetUnit.MILLISECONDS:
            raise BudgetError(
                f"budget {budget.text!r} is in milliseconds; operating points are chosen by "
                "FLOPs (give FLOPs or a percentage of the backbone)"
            )
        return budget.to_flops(backbone_flops), budget.kind
    value = float(budget)
    if not value > 0:
        raise BudgetError(f"budget must be a positive number of FLOPs, got {budget!r}")
    return value, BudgetKind.MEAN


def choose_point(
    points: Sequence[OperatingPoint],
    budget: float | str | Budget,
    backbone_flops: float,
    worst_case_flops: float,
) -> int:
    """Index of the most accurate point whose predicted mean cost fits ``budget``.

    Ties in accuracy go to the cheaper point. A worst-case (``max``) budget is decided by the
    placement, not the thresholds: some sample may always reach the terminal exit, which costs
    ``worst_case_flops``; if that fits, every point fits.

    Raises:
        BudgetError: no point fits (the message gives the cheapest), or the budget is in ms.

    Example:
        >>> pts = [OperatingPoint((0.9,), "shared", 5e6, 0.80),
        ...        OperatingPoint((0.99,), "shared", 8e6, 0.85)]
        >>> choose_point(pts, 6e6, backbone_flops=1e7, worst_case_flops=1e7)
        0
    """
    if not points:
        raise ConfigError("the model has no operating points")
    flops, kind = budget_flops(budget, backbone_flops)
    limit = flops * (1 + _SLACK)
    if kind is BudgetKind.MAX:
        if worst_case_flops > limit:
            raise BudgetError(
                f"worst-case budget {format_flops(flops)} is below the cost of this model's "
                f"terminal exit ({format_flops(worst_case_flops)}); thresholds cannot lower "
                "the worst case, export a configuration cut to this budget instead"
            )
        fitting = list(range(len(points)))
    else:
        fitting = [i for i, p in enumerate(points) if p.mean_flops <= limit]
    if not fitting:
        cheapest = min(points, key=lambda p: p.mean_flops)
        raise BudgetError(
            f"no operating point fits a mean cost of {format_flops(flops)} per sample: the "
            f"cheapest predicts {format_flops(cheapest.mean_flops)} "
            f"({cheapest.mean_flops / backbone_flops:.1%} of the backbone, validation accuracy "
            f"{cheapest.val_accuracy:.4f})"
        )
    return max(fitting, key=lambda i: (points[i].val_accuracy, -points[i].mean_flops))


class Anytime:
    """Switching thresholds at run time: shared by the PyTorch and the ONNX runtime.

    The host class provides ``criterion`` (an :class:`~exitsearch.core.criteria.ExitCriterion`),
    ``operating_points``, ``num_exits`` and ``costs`` (:class:`ExitCosts`), and calls
    :meth:`set_thresholds` once when it is built.
    """

    criterion: Any
    operating_points: list[OperatingPoint]
    point_index: int | None
    _thresholds: tuple[float, ...]
    _bounds: list[float]

    @property
    def num_exits(self) -> int:
        raise NotImplementedError

    @property
    def costs(self) -> ExitCosts:
        raise NotImplementedError

    @property
    def thresholds(self) -> tuple[float, ...]:
        """The thresholds in use, one per early exit."""
        return self._thresholds

    def set_thresholds(self, thresholds: Sequence[float]) -> None:
        """Use these thresholds (one per early exit) from the next forward pass on."""
        thresholds = tuple(float(t) for t in thresholds)
        if len(thresholds) != self.num_exits:
            raise ConfigError(
                f"{self.num_exits} exits need {self.num_exits} thresholds, got {len(thresholds)}"
            )
        self._thresholds = thresholds
        self._bounds = [self.criterion.bound(t) for t in thresholds]
        self.point_index = next(
            (i for i, p in enumerate(self.operating_points) if p.thresholds == thresholds), None
        )

    def set_operating_point(
        self, budget: float | str | Budget | None = None, *, index: int | None = None
    ) -> OperatingPoint:
        """Switch to an operating point: by ``index``, or the most accurate one whose predicted
        mean cost (FLOPs per sample) fits ``budget`` (FLOPs, a budget string such as
        ``"2.5MFLOPs"`` or ``"40%"``, or a parsed :class:`~exitsearch.budget.Budget`).

        Takes effect from the next forward pass; nothing is retrained.

        Raises:
            BudgetError: no operating point fits the budget.
            ConfigError: neither or both of ``budget`` and ``index`` given; index out of range.
        """
        if (budget is None) == (index is None):
            raise ConfigError("give exactly one of a budget or an operating point index")
        if index is None:
            c = self.costs
            index = choose_point(
                self.operating_points,
                budget,
                c.backbone_flops,
                max(c.exit_flops),  # type: ignore[arg-type]
            )
        if not 0 <= index < len(self.operating_points):
            raise ConfigError(
                f"operating point {index} does not exist; this model has "
                f"{len(self.operating_points)} (0..{len(self.operating_points) - 1})"
            )
        point = self.operating_points[index]
        self.set_thresholds(point.thresholds)
        return point
