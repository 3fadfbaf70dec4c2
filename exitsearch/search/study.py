"""The budget-aware multi-objective search over exit configurations.

Objectives (Optuna directions): maximise validation accuracy, minimise the mean cost as a
fraction of the backbone's, in the evaluator's unit: FLOPs, or the latency table's milliseconds
when the budget is in milliseconds (the search then ranks by measured time). The budget is a constraint (``Trial.set_constraint``): feasible when the
budgeted cost minus the budget is <= 0. After the trials, every placement on the trials' best
fronts is refined exactly (:mod:`exitsearch.search.refine`) and the feasible Pareto set of all
refined points is the result.
"""

from __future__ import annotations

import contextlib
import itertools
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from exitsearch.budget import BudgetKind
from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.progress import NullProgress, Progress
from exitsearch.search.driver import finished, mark_interrupted, open_study, settle_interrupted
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import pareto_mask
from exitsearch.search.refine import CurvePoint, refine_placement, shared_curve
from exitsearch.search.samplers import EXHAUSTIVE, INTERRUPTED, create_sampler, list_samplers
from exitsearch.search.sampling import NONE, ConfigSampler
from exitsearch.search.space import Placement

__all__ = [
    "BudgetConstraint",
    "SearchResult",
    "SearchSettings",
    "cut_to_budget",
    "enumerate_placements",
    "exhaustive_front",
    "front_of",
    "run_search",
]


@dataclass(frozen=True)
class SearchSettings:
    """How the search runs.

    Attributes:
        sampler: ``nsga2`` (default), ``nsga3``, ``tpe``, ``gp``, ``random`` (Optuna samplers,
            :mod:`exitsearch.search.samplers`) or ``exhaustive`` (every configuration).
        n_trials: trials to run in total (a resumed study runs only the missing ones).
        timeout: stop starting trials after this many seconds.
        seed: seeds the sampler (per trial), so the same seed gives the same front.
        population_size: NSGA-II/III population.
        refine: refine thresholds of Pareto placements exactly after the trials.
        refine_fronts: how many non-dominated layers of trials have their placements refined.
        max_refine: at most this many placements are refined.
    """

    sampler: str = "nsga2"
    n_trials: int = 1500
    timeout: float | None = None
    seed: int = 0
    population_size: int = 40
    refine: bool = True
    refine_fronts: int = 3
    max_refine: int = 80

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ConfigError(f"`n_trials >= 1` must hold, but got n_trials={self.n_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"`timeout > 0` must hold, but got timeout={self.timeout}")
        if self.sampler not in list_samplers():  # before any stage runs, not after the heads
            raise ConfigError(
                f"unknown sampler {self.sampler!r}; known: {', '.join(list_samplers())}"
            )


@dataclass(frozen=True)
class BudgetConstraint:
    """A budget per sample, in FLOPs or in milliseconds (``None`` for both: unconstrained), of a
    kind: ``mean`` (expected cost on the validation split) or ``max`` (worst case).

    Milliseconds are per sample at the latency table's device and batch size.
    """

    flops: float | None
    kind: BudgetKind = BudgetKind.MEAN
    ms: float | None = None

    def __post_init__(self) -> None:
        if self.flops is not None and self.ms is not None:
            raise ConfigError("a budget is in FLOPs or in milliseconds, not both")

    @property
    def limited(self) -> bool:
        return self.flops is not None or self.ms is not None

    @property
    def unit(self) -> str:
        """The unit the budget limits, and so the one the search ranks by."""
        return "ms" if self.ms is not None else "flops"

    def cost(self, ev: Evaluator, config: ExitConfig, mean_cost: float, max_cost: float) -> float:
        """The configuration's budgeted cost in the budget's unit and kind (``mean_cost`` and
        ``max_cost``: its costs in ``ev``'s unit, as :meth:`Evaluator.quick` gives them)."""
        worst = self.kind is BudgetKind.MAX
        if ev.unit == self.unit:
            return max_cost if worst else mean_cost
        e = ev.evaluate(config)
        if self.ms is None:
            return float(e.max_flops if worst else e.mean_flops)
        if e.mean_ms is None:
            raise ConfigError("a budget in milliseconds needs a latency table")
        return float(e.max_ms if worst else e.mean_ms)

    def violation(
        self, ev: Evaluator, config: ExitConfig, mean_cost: float, max_cost: float
    ) -> float:
        """Relative excess over the budget: feasible when <= 0 (Optuna's constraint convention)."""
        if not self.limited:
            return -1.0
        limit = self.ms if self.ms is not None else self.flops
        return (self.cost(ev, config, mean_cost, max_cost) - limit) / limit  # type: ignore[operator]

    def fits(self, ev: Evaluator, config: ExitConfig, mean_cost: float, max_cost: float) -> bool:
        return self.violation(ev, config, mean_cost, max_cost) <= 1e-12

    def exit_costs(self, ev: Evaluator, config: ExitConfig) -> np.ndarray:
        """Cost of leaving at each exit of ``config``, in the budget's unit."""
        if self.ms is not None:
            ms = ev.costs.exit_ms(config)
            if ms is None:
                raise ConfigError("a budget in milliseconds needs a latency table")
            return ms
        return ev.costs.exit_flops(config)

    @property
    def limit(self) -> float | None:
        return self.ms if self.ms is not None else self.flops


def cut_to_budget(config: ExitConfig, ev: Evaluator, budget: BudgetConstraint) -> ExitConfig | None:
    """For worst-case budgets: keep the exits up to the last one whose cost fits, and end the
    model there (DESIGN.md); a configuration whose worst case fits whole (every exit, then the
    backbone's own head) stays as it is. None when even the first exit does not fit."""
    if budget.kind is not BudgetKind.MAX or not budget.limited:
        return config
    if not config.cut and budget.exit_costs(ev, config).max() <= budget.limit * (1 + 1e-12):
        return config  # its worst case, every exit and the backbone's own head, fits whole
    full = ExitConfig(
        config.exits, config.criterion, config.thresholds, config.threshold_mode, cut=True
    )
    costs = budget.exit_costs(ev, full)
    fits = np.nonzero(costs <= budget.limit * (1 + 1e-12))[0]  # type: ignore[operator]
    if not len(fits):
        return None
    keep = int(fits[-1]) + 1
    return ExitConfig(
        config.exits[:keep],
        config.criterion,
        config.thresholds[:keep],
        config.threshold_mode,
        cut=True,
    )


@dataclass
class SearchResult:
    """The refined feasible front on validation, with what produced it."""

    front: list[CurvePoint]
    trials: list[dict[str, Any]] = field(default_factory=list)
    n_trials: int = 0
    n_failed: int = 0
    seconds: float = 0.0
    refine_seconds: float = 0.0
    placements_refined: int = 0
    study_name: str | None = None
    ran_now: int = 0  # trials this call ran (the others were kept from an earlier run)

    @property
    def trials_per_second(self) -> float:
        """Trials run by this call per second; NaN when it ran none (nothing to measure)."""
        return self.ran_now / self.seconds if self.ran_now and self.seconds > 0 else float("nan")


def front_of(
    points: Sequence[CurvePoint], budget: BudgetConstraint, ev: Evaluator
) -> list[CurvePoint]:
    """Feasible, non-dominated points, cheapest first (max cost checked for worst-case budgets)."""
    feasible = []
    for p in points:
        if budget.limited:
            if budget.kind is BudgetKind.MAX or budget.unit != ev.unit:
                _, mean, mx = ev.quick(p.config)
                if not budget.fits(ev, p.config, mean, mx):
                    continue
            elif p.mean_cost > budget.limit * (1 + 1e-12):  # type: ignore[operator]
                continue
        feasible.append(p)
    if not feasible:
        return []
    mask = pareto_mask([p.accuracy for p in feasible], [p.mean_cost for p in feasible])
    chosen = [p for p, keep in zip(feasible, mask, strict=True) if keep]
    return sorted(chosen, key=lambda p: (p.mean_cost, -p.accuracy))


def simplify(config: ExitConfig, ev: Evaluator) -> ExitConfig:
    """``config`` without the early exits no validation sample leaves at.

    An exit nobody reaches, or that fires for nobody who reaches it, changes no prediction; the
    samples that pass it no longer pay for its head. A criterion that reads earlier exits
    (patience counts agreeing ones) keeps them all. A cut model ends at the last exit anybody
    leaves at: nobody went on past it, and its worst-case cost drops to that exit's.
    """
    if not config.exits or create_criterion(config.criterion).reads_history:
        return config
    counts = np.bincount(ev.exit_index(config), minlength=len(config.exits) + 1)
    keep = [k for k in range(len(config.exits)) if counts[k] > 0]
    if len(keep) == len(config.exits):
        return config
    return ExitConfig(
        tuple(config.exits[k] for k in keep),
        config.criterion,
        tuple(config.thresholds[k] for k in keep),
        config.threshold_mode,
        config.cut,
        config.pause,
    )


def simple_front(
    front: Sequence[CurvePoint], budget: BudgetConstraint, ev: Evaluator
) -> list[CurvePoint]:
    """The front with each member :func:`simplify`-ed and members that became equal merged
    (same accuracy and cost: the one with fewer exits stays)."""
    points = []
    for p in front:
        config = simplify(p.config, ev)
        if config is p.config:
            points.append(p)
        else:
            acc, mean, _ = ev.quick(config)
            points.append(CurvePoint(config, acc, mean))
    points.sort(key=lambda p: len(p.config.exits))  # stable: among equals the simplest first
    return front_of(points, budget, ev)


def run_search(
    ev: Evaluator,
    sampler: ConfigSampler,
    budget: BudgetConstraint,
    settings: SearchSettings,
    *,
    storage: BaseStorage | None = None,
    study_name: str = "exitsearch",
    resume: bool = True,
    seed_placements: Sequence[ExitConfig] = (),
    progress: Progress | None = None,
    objective_hook: Callable[[ExitConfig], None] | None = None,
    exclusive: bool = True,
) -> SearchResult:
    """Search ``sampler.space`` on ``ev``'s split under ``budget``.

    With ``resume`` a study of the same name in ``storage`` is continued: finished trials are
    kept and only the missing ones run. Without it, an existing study is replaced.
    ``exclusive`` says that no other process works on the study (the run folder's own storage,
    guarded by its lock): trials found running are then leftovers of a killed process and are
    settled. On shared storage they may belong to live workers and are left to Optuna's
    heartbeat.
    """
    progress = progress or NullProgress()
    if settings.sampler == EXHAUSTIVE:
        return exhaustive_front(
            ev, sampler, budget, progress=progress, seed_placements=seed_placements
        )
    scale = ev.backbone_cost
    study = open_study(
        storage,
        study_name,
        directions=["maximize", "minimize"],
        sampler=create_sampler(
            settings.sampler, settings.seed, population_size=settings.population_size
        ),
        resume=resume,
        metric_names=["val_accuracy", f"mean_{ev.unit}_fraction"],
    )
    if exclusive:
        settle_interrupted(study, progress)
    done = finished(study)
    remaining = max(0, settings.n_trials - done)
    if done:
        progress.log(f"search: {done} finished trial(s) kept, {remaining} to go")

    mine: set[int] = set()  # trials this process ran (a shared study has others' too)

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        mine.add(trial._trial_id)
        config = sampler.sample(trial)
        if config is not None:
            config = cut_to_budget(config, ev, budget)
        if config is None:
            trial.set_user_attr("config", None)
            trial.set_constraint("budget", 1.0)
            return 0.0, 1.0
        try:
            if objective_hook is not None:
                objective_hook(config)
            acc, mean, mx = ev.quick(config)
        except KeyboardInterrupt:
            # Optuna records the trial as failed; marked interrupted, a resumed run redoes it.
            study._storage.set_trial_system_attr(trial._trial_id, INTERRUPTED, True)
            raise
        trial.set_user_attr("config", config.to_dict())
        trial.set_constraint("budget", budget.violation(ev, config, mean, mx))
        return acc, mean / scale

    task = "search"
    before = len(study.get_trials(deepcopy=False))
    progress.start(task, settings.n_trials)
    progress.advance(task, done)
    t0 = time.perf_counter()
    if remaining:
        try:
            study.optimize(
                objective,
                n_trials=remaining,
                timeout=settings.timeout,
                catch=(Exception,),
                callbacks=[lambda s, t: progress.advance(task, 1)],
                gc_after_trial=False,
            )
        except KeyboardInterrupt:
            # Interrupted outside the objective (while Optuna asked or told), a trial stays
            # RUNNING: settle it now rather than on the next run.
            # this process's trials only (every RUNNING one when the study is this run's alone);
            # the storage may be mid-transaction: then the next run settles them
            with contextlib.suppress(Exception):
                mark_interrupted(study, None if exclusive else mine)
            raise
    seconds = time.perf_counter() - t0
    progress.finish(task)
    trials = study.get_trials(deepcopy=False)
    complete = [t for t in trials if t.state is TrialState.COMPLETE and t.user_attrs.get("config")]
    failed = [
        t for t in trials if t.state is TrialState.FAIL and not t.system_attrs.get(INTERRUPTED)
    ]
    result = SearchResult(
        front=[],
        ran_now=max(0, len(trials) - before),
        n_trials=sum(1 for t in trials if not t.system_attrs.get(INTERRUPTED)),
        n_failed=len(failed),
        seconds=seconds,
        study_name=study_name,
        trials=[
            {
                "number": t.number,
                "accuracy": t.values[0],
                "mean_cost": t.values[1] * scale,
                "feasible": all(v <= 0 for v in t.constraints.values()),
            }
            for t in complete
        ],
    )
    configs = [ExitConfig.from_dict(t.user_attrs["config"]) for t in complete]
    raw = [
        CurvePoint(c, t.values[0], t.values[1] * scale)
        for c, t in zip(configs, complete, strict=True)
    ]
    if not settings.refine:
        result.front = simple_front(front_of(raw, budget, ev), budget, ev)
        return result
    t1 = time.perf_counter()
    placements = _placements_to_refine(raw, budget, ev, settings)
    for c in seed_placements:
        cut = cut_to_budget(c, ev, budget)
        if cut is not None:
            placements.setdefault(cut.placement_key, cut)
    # every head alone, of which only the curve's own frontier can reach the front
    alone = {}
    for c in sampler.single_exits():
        cut = cut_to_budget(c, ev, budget)
        if cut is not None and cut.placement_key not in placements:
            alone.setdefault(cut.placement_key, cut)
    points = list(raw)
    per_exit = "per_exit" in sampler.space.threshold_modes
    progress.start("refine", len(placements) + len(alone))
    for config in placements.values():
        points += refine_placement(ev, config, per_exit=per_exit)
        progress.advance("refine")
    for config in alone.values():
        points += shared_curve(ev, config, frontier=True)
        progress.advance("refine")
    progress.finish("refine")
    result.front = simple_front(front_of(points, budget, ev), budget, ev)
    result.refine_seconds = time.perf_counter() - t1
    result.placements_refined = len(placements) + len(alone)
    return result


def _placements_to_refine(
    raw: list[CurvePoint], budget: BudgetConstraint, ev: Evaluator, settings: SearchSettings
) -> dict[str, ExitConfig]:
    """Placements of the best ``refine_fronts`` non-dominated layers of feasible trials."""
    pool = [
        p
        for p in raw
        if budget.limit is None
        or budget.kind is BudgetKind.MAX
        or budget.unit != ev.unit
        or p.mean_cost <= budget.limit * (1 + 1e-12)
    ] or list(raw)  # a budget in another unit is checked on the refined points
    chosen: dict[str, ExitConfig] = {}
    remaining = list(pool)
    for _ in range(settings.refine_fronts):
        if not remaining or len(chosen) >= settings.max_refine:
            break
        mask = pareto_mask([p.accuracy for p in remaining], [p.mean_cost for p in remaining])
        layer = [p for p, m in zip(remaining, mask, strict=True) if m]
        remaining = [p for p, m in zip(remaining, mask, strict=True) if not m]
        for p in sorted(layer, key=lambda p: -p.accuracy):
            chosen.setdefault(p.config.placement_key, p.config)
            if len(chosen) >= settings.max_refine:
                break
    return chosen


# -------------------------------------------------------------------- exhaustive
def enumerate_placements(sampler: ConfigSampler, limit: int = 50_000) -> list[ExitConfig]:
    """Every placement (exits and criterion; thresholds left at 0) of a space.

    Raises:
        ConfigError: the space has more than ``limit`` placements.
    """
    space = sampler.space
    exit_sets: list[list[HeadSpec]] = []
    if space.placement is Placement.FREE:
        options = [[NONE, *sorted(sampler.by_location[m])] for m in sampler.locations]
        total = math.prod(len(o) for o in options) * len(sampler.criteria)
        if total > limit:
            raise ConfigError(
                f"the space has {total:,} placements, more than {limit:,} to enumerate; use a sampler"
            )
        for combo in itertools.product(*options):
            exits = [
                sampler.by_location[m][v]
                for m, v in zip(sampler.locations, combo, strict=True)
                if v != NONE
            ]
            if exits:
                exit_sets.append(exits)
    elif space.placement is Placement.UNIFORM:
        types = sorted({s.type for s in sampler.heads})
        for n in range(space.num_exits.low, min(space.num_exits.high, len(sampler.locations)) + 1):
            for t in types:
                exits = [
                    v
                    for m in sampler.uniform_locations(n)
                    for v in sampler.by_location[m].values()
                    if v.type == t
                ][:n]
                if exits:
                    exit_sets.append(exits)
    else:
        raise ConfigError("exhaustive search supports free and uniform placements")
    return [
        ExitConfig(tuple(e), c, (0.0,) * len(e), "shared")
        for e in exit_sets
        for c in sampler.criteria
    ]


def exhaustive_front(
    ev: Evaluator,
    sampler: ConfigSampler,
    budget: BudgetConstraint,
    *,
    progress: Progress | None = None,
    seed_placements: Sequence[ExitConfig] = (),
) -> SearchResult:
    """The exact front of a space with shared thresholds: every placement's whole curve."""
    progress = progress or NullProgress()
    t0 = time.perf_counter()
    placements = enumerate_placements(sampler)
    progress.start("exhaustive", len(placements))
    points: list[CurvePoint] = []
    for config in placements:
        cut = cut_to_budget(config, ev, budget)
        if cut is not None:
            points += shared_curve(ev, cut)
        progress.advance("exhaustive")
    progress.finish("exhaustive")
    seconds = time.perf_counter() - t0
    return SearchResult(
        front=front_of(points, budget, ev),
        n_trials=len(placements),
        seconds=seconds,
        placements_refined=len(placements),
    )
