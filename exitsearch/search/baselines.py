"""Hand-set configurations from the papers, scored by the same evaluator on the same caches.

Each baseline is a placement whose threshold is swept exactly (:func:`shared_curve`), giving a
front to compare the search's front with (hypervolume ratio).

* ``backbone``: the backbone alone.
* ``ryu@m``: one linear exit after block m = L/4, L/2, 3L/4 (3, 6, 9 for L = 12), as Ryu's
  "Make Vision Transformer Faster with Multi-Exit Architecture" places it.
* ``multiexit-vit-<head>``: exits of one head type at every candidate location (Multi-Exit ViT,
  Bakhtiarnia et al.).
* ``lgvit-uniform``: exits after blocks L/3, L/2, 2L/3, 5L/6 (4, 6, 8, 10 for L = 12), local
  heads in the shallow half, global heads in the deep half, LGViT's default mappings.
* ``mevit``: linear exits after blocks L/2 .. L-1 (6..11 for L = 12) with MEViT's uncertainty
  criterion when predictors were trained, confidence otherwise.
* ``anytime`` (tasks without a softmax, such as counting): Multi-Exit ViT's anytime setting,
  where the budget decides one exit that every sample leaves at; its front is every trained head
  alone, the model cut there.
"""

from __future__ import annotations

from dataclasses import dataclass

from exitsearch.core.config import ExitConfig
from exitsearch.core.task import CLASSIFICATION
from exitsearch.heads import HeadSpec
from exitsearch.heads.mappings import KernelMapping, WindowMapping
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.refine import CurvePoint, shared_curve
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import parse_search_space
from exitsearch.search.study import BudgetConstraint, cut_to_budget, front_of

__all__ = [
    "PAPER000_HEADS",
    "Baseline",
    "anytime_baseline",
    "baseline_placements",
    "score_baselines",
]

PAPER000_HEADS = ("mlp", "cnn_ignore", "cnn_add", "cnn_project", "vit", "mixer", "resmlp")


@dataclass(frozen=True)
class Baseline:
    name: str
    description: str
    placement: ExitConfig | None  # None: the backbone alone
    front: list[CurvePoint]


def _pick(heads: dict[int, dict[str, HeadSpec]], m: int, head_type: str) -> HeadSpec | None:
    options = [s for s in heads.get(m, {}).values() if s.type == head_type]
    return sorted(options, key=lambda s: s.key)[0] if options else None


def baseline_placements(heads: list[HeadSpec], depth: int) -> list[tuple[str, str, ExitConfig]]:
    """The baseline placements the trained ``heads`` allow (others are left out)."""
    by_loc: dict[int, dict[str, HeadSpec]] = {}
    for s in heads:
        by_loc.setdefault(s.location, {})[s.key] = s
    out: list[tuple[str, str, ExitConfig]] = []

    def add(
        name: str, description: str, exits: list[HeadSpec | None], criterion: str = "confidence"
    ) -> None:
        if exits and all(e is not None for e in exits):
            out.append(
                (
                    name,
                    description,
                    ExitConfig(tuple(exits), criterion, (1.0,) * len(exits), "shared"),
                )
            )  # type: ignore[arg-type]

    for m in sorted({max(1, round(depth * f)) for f in (0.25, 0.5, 0.75)}):
        add(
            f"ryu@{m}",
            f"Ryu: one linear exit after block {m}",
            [_pick(by_loc, m, "linear")],
        )
    locations = sorted(by_loc)
    for t in PAPER000_HEADS:
        exits = [_pick(by_loc, m, t) for m in locations]
        exits = [e for e in exits if e is not None]
        if len(exits) == len(locations):
            add(f"multiexit-vit-{t}", f"Multi-Exit ViT: {t} exits at every location", exits)
    lg_locs = sorted(
        {max(1, min(depth - 1, round(depth * f))) for f in (1 / 3, 1 / 2, 2 / 3, 5 / 6)}
    )
    space = parse_search_space(
        {"heads": {"lph": {"half": "shallow"}, "gah": {"half": "deep"}}, "placement": "lgvit"}
    )
    lg_heads = [s for s in heads if s.type in ("lph", "gah")]
    if lg_heads and all(any(s.location == m for s in lg_heads) for m in lg_locs):
        try:
            exits = ConfigSampler(space, lg_heads, depth).lgvit_exits(
                lg_locs, KernelMapping(), WindowMapping()
            )
            add("lgvit-uniform", f"LGViT: local then global heads after blocks {lg_locs}", exits)
        except ValueError:
            pass
    me_locs = list(range(depth // 2, depth))
    me = [_pick(by_loc, m, "linear") for m in me_locs]
    if all(me):
        crit = "uncertainty" if all(e.uncertainty for e in me if e) else "confidence"
        add(
            "mevit",
            f"MEViT: linear exits after blocks {me_locs[0]}..{me_locs[-1]}, {crit}",
            me,
            crit,
        )
    return out


def score_baselines(
    ev: Evaluator, heads: list[HeadSpec], depth: int, budget: BudgetConstraint
) -> list[Baseline]:
    """Every baseline's feasible front on ``ev``'s split (the backbone alone first)."""
    bb = ev.backbone()
    result = [Baseline("backbone", "the backbone alone", None, [])]
    bb_cost = bb.mean_ms if budget.ms is not None else bb.mean_flops
    if not budget.limited or (bb_cost is not None and bb_cost <= budget.limit * (1 + 1e-12)):  # type: ignore[operator]
        result[0] = Baseline(
            "backbone",
            "the backbone alone",
            None,
            [CurvePoint(ExitConfig((), "confidence", ()), bb.accuracy, ev.backbone_cost)],
        )
    for name, description, config in baseline_placements(heads, depth):
        cut = cut_to_budget(config, ev, budget)
        points = shared_curve(ev, cut) if cut is not None else []
        result.append(Baseline(name, description, config, front_of(points, budget, ev)))
    if ev.task.name != CLASSIFICATION:
        result.append(anytime_baseline(ev, heads, budget))
    return result


def anytime_baseline(ev: Evaluator, heads: list[HeadSpec], budget: BudgetConstraint) -> Baseline:
    """Multi-Exit ViT's anytime setting: every sample leaves at one exit, the model cut there;
    the front of every head alone."""
    points = []
    for s in heads:
        config = ExitConfig((s,), "confidence", (1.0,), "shared", cut=True)
        quality, mean, _ = ev.quick(config)
        points.append(CurvePoint(config, quality, mean))
    return Baseline(
        "anytime",
        "Multi-Exit ViT's anytime setting: every sample leaves at the one exit the budget affords",
        None,
        front_of(points, budget, ev),
    )
