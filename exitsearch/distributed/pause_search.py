"""The multi-objective search over pause configurations (PAUMER), trials by inference.

A pause configuration cannot be scored from cached predictions: every trial is a pass over the
validation split (:func:`~exitsearch.pausing.run_pause_job`), which is what is worth spreading
over a cluster. Optuna stays the source of truth on the driver: trials are asked and told
there, the budget is a constraint (``Trial.set_constraint``, feasible when <= 0), samplers are
reseeded per trial (:mod:`exitsearch.search.samplers`), and only the evaluations run
elsewhere, through a :class:`~exitsearch.distributed.executors.TrialExecutor`.

Trials run in synchronous batches of ``batch_size``: a batch is asked, evaluated in parallel,
and told in trial order once every job of the batch has returned. What the sampler sees at each
ask therefore never depends on which worker finished first, on how many workers there are, or
on a worker lost and its job retried: the same seed gives the same trials and the same front
in-process, on a process pool and on a cluster. A driver killed mid-batch has told none of the
batch; on resume its trials are marked interrupted and asked again with the same seeds.

Objectives: maximise the task metric on the split, minimise FLOPs per image as a fraction of
the unpaused model's (FLOPs = multiply-accumulates, see :mod:`exitsearch.pausing.costs`).
A configuration over the budget is not evaluated (its cost is exact without inference): it is
told with metric 0 and its violation, which is all a constrained sampler uses of it.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import BaseStorage
from optuna.trial import TrialState

from exitsearch.budget import BudgetUnit, parse_budget
from exitsearch.core.pause import PauseConfig
from exitsearch.data.splits import DataSpec
from exitsearch.distributed.executors import LocalExecutor, TrialExecutor, TrialFailure
from exitsearch.errors import BudgetError, ConfigError
from exitsearch.pausing.pause import PauseMode
from exitsearch.pausing.pool import PauseJob
from exitsearch.progress import NullProgress, Progress
from exitsearch.search.driver import (
    FAILED,
    finished,
    open_study,
    run_rounds,
    settle_interrupted,
)
from exitsearch.search.pareto import pareto_mask
from exitsearch.search.samplers import INTERRUPTED, create_sampler

__all__ = [
    "PausePoint",
    "PauseSearchResult",
    "PauseSearchSettings",
    "PauseSpace",
    "front_table",
    "run_pause_search",
]

_OVER_BUDGET = "over_budget"


@dataclass(frozen=True)
class PauseSpace:
    """Pause configurations as Optuna parameters ``tau@l``, one per candidate layer ``l``.

    ``tau@l`` is the proportion of the tokens *still processed* at layer ``l`` that pause there
    (the reading of PAUMER's Table 1, converted by :meth:`PauseConfig.from_relative`), so
    every combination is a valid configuration; ``0`` means no pausing at ``l``.

    Example:
        >>> space = PauseSpace(layers=(3, 5), taus=(0.0, 0.5))
        >>> space.size
        4
    """

    layers: tuple[int, ...]
    taus: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6, 0.8)
    mode: str = "entropy"

    def __post_init__(self) -> None:
        layers = tuple(sorted({int(x) for x in self.layers}))
        if not layers or layers[0] < 1:
            raise ConfigError(f"pause layers must be integers >= 1, got {self.layers!r}")
        taus = tuple(sorted({round(float(t), 6) for t in self.taus}))
        if not taus or taus[0] < 0 or taus[-1] >= 1:
            raise ConfigError(f"`0 <= tau < 1` must hold for every tau, but got {self.taus!r}")
        PauseMode.parse(self.mode)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "taus", taus)

    @classmethod
    def for_depth(
        cls, depth: int, min_layer: int = 1, max_layer: int | None = None, **kwargs: Any
    ) -> PauseSpace:
        """Layers ``min_layer..max_layer`` (default ``depth - 1``: pausing after the last block
        saves nothing)."""
        top = depth - 1 if max_layer is None else max_layer
        if not 1 <= min_layer <= top <= depth - 1:
            raise ConfigError(
                f"`1 <= min_layer <= max_layer <= depth - 1` must hold, but got "
                f"({min_layer=}, max_layer={top}, {depth=})"
            )
        return cls(layers=tuple(range(min_layer, top + 1)), **kwargs)

    @property
    def size(self) -> int:
        return len(self.taus) ** len(self.layers)

    def sample(self, trial: optuna.Trial) -> PauseConfig:
        taus = {
            layer: trial.suggest_categorical(f"tau@{layer}", self.taus) for layer in self.layers
        }
        return PauseConfig.from_relative({k: v for k, v in taus.items() if v > 0})


@dataclass(frozen=True)
class PauseSearchSettings:
    """How the pause search runs.

    Attributes:
        sampler: a registered sampler (``nsga2``, ``tpe``, ``random``...).
        n_trials: trials in the study in total (a resumed study runs only the missing ones).
        seed: seeds every trial's sampler; the same seed gives the same front.
        population_size: NSGA-II/III population.
        batch_size: trials evaluated in parallel per round (default: ``population_size``).
            Part of what determines the trials, so it does not follow the cluster's size.
        split: the split the metric is measured on (the search sees validation only).
        eval_batch_size: images per forward pass of an evaluation (does not change metrics).
        device: where trials run (``cpu``, ``cuda``, ``cuda:N``, ``auto`` for the worker's GPU
            when it has one); with Ray, each trial then requests a GPU.
    """

    sampler: str = "nsga2"
    n_trials: int = 60
    seed: int = 0
    population_size: int = 16
    batch_size: int | None = None
    split: str = "val"
    eval_batch_size: int = 256
    device: str = "cpu"

    def __post_init__(self) -> None:
        if self.n_trials < 1:
            raise ConfigError(f"`n_trials >= 1` must hold, but got n_trials={self.n_trials}")
        if self.batch_size is not None and self.batch_size < 1:
            raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if self.split == "test":
            raise ConfigError("the search sees validation only; test is for reporting the front")

    @property
    def round_size(self) -> int:
        return self.batch_size or self.population_size


@dataclass(frozen=True)
class PausePoint:
    """A searched pause configuration with its figures."""

    pause: str
    metric: float
    flops: int
    flops_fraction: float
    trial: int


@dataclass
class PauseSearchResult:
    """The feasible front (cheapest first) and every trial of the study."""

    front: list[PausePoint]
    trials: list[dict[str, Any]] = field(default_factory=list)
    n_trials: int = 0
    n_failed: int = 0
    seconds: float = 0.0
    study_name: str = ""
    metric_name: str = ""
    full_flops: int = 0
    budget_flops: float | None = None

    @property
    def trials_per_second(self) -> float:
        ran = sum(1 for t in self.trials if t.get("ran_now"))
        return ran / self.seconds if self.seconds > 0 else float("nan")

    @property
    def nodes(self) -> dict[str, int]:
        """Trials evaluated per node in this run (``local`` outside Ray)."""
        return dict(Counter(t["node"] for t in self.trials if t.get("ran_now") and t["node"]))


def _budget_flops(budget: str | float | None, full: int) -> float | None:
    if budget is None:
        return None
    if isinstance(budget, int | float):
        if budget <= 0:
            raise BudgetError(f"budget must be positive, got {budget}")
        return float(budget)
    parsed = parse_budget(budget)
    if parsed.unit is BudgetUnit.MILLISECONDS:
        raise BudgetError(
            f"budget {budget!r} is in milliseconds; the pause search takes FLOPs or percent"
        )
    return parsed.to_flops(full)


@dataclass
class _Plan:
    trial: optuna.Trial
    config: PauseConfig | None
    flops: int
    job: PauseJob | None


def run_pause_search(
    model_dir: str | Path,
    data: DataSpec,
    space: PauseSpace | None = None,
    settings: PauseSearchSettings | None = None,
    *,
    budget: str | float | None = None,
    executor: TrialExecutor | None = None,
    storage: BaseStorage | None = None,
    study_name: str = "pause-search",
    resume: bool = True,
    progress: Progress | None = None,
) -> PauseSearchResult:
    """Search pause configurations of the PAUMER model in ``model_dir`` on ``data``.

    Args:
        model_dir: a folder written by ``PaumerModel.save`` / ``train_paumer``.
        data: the data; with a Ray executor it must be readable at that path on every node.
        space: the configurations (default: every layer ``1..depth-1``, taus 0-0.8).
        budget: FLOPs per image (``"3MFLOPs"``, ``"60%"`` of the unpaused model, a number).
        executor: where evaluations run (default: this process, in order).
        storage: Optuna storage (default: in memory); one driver per study at a time.
        resume: continue a study of the same name (else it is replaced).

    Raises:
        ConfigError: a layer of the space outside the model, or bad settings.
        BudgetError: a malformed budget, or one in milliseconds.
    """
    from exitsearch.pausing.costs import pause_cost
    from exitsearch.pausing.model import load_paumer

    settings = settings or PauseSearchSettings()
    progress = progress or NullProgress()
    model = load_paumer(model_dir)
    depth = model.vit.depth
    space = space or PauseSpace.for_depth(depth)
    if space.layers[-1] > depth - 1:
        raise ConfigError(
            f"pause layer {space.layers[-1]} is outside 1..{depth - 1} for this {depth}-block model"
        )
    full = pause_cost(model, None, space.mode).total
    budget_flops = _budget_flops(budget, full)
    metric_name = model.task.new_metric().name
    owned = executor is None
    executor = executor or LocalExecutor()

    study = open_study(
        storage,
        study_name,
        directions=["maximize", "minimize"],
        sampler=create_sampler(
            settings.sampler, settings.seed, population_size=settings.population_size
        ),
        resume=resume,
        metric_names=[metric_name, "flops_fraction"],
    )
    settle_interrupted(study, progress, "pause search")
    done = finished(study)
    remaining = max(0, settings.n_trials - done)
    if done:
        progress.log(f"pause search: {done} finished trial(s) kept, {remaining} to go")

    def plan(trial: optuna.Trial) -> _Plan:
        config = space.sample(trial)
        try:
            config = model.vit.resolve(config)
        except ConfigError as exc:  # every token paused after rounding
            trial.set_user_attr("error", str(exc))
            trial.set_constraint("budget", 1.0)
            return _Plan(trial, None, full, None)
        flops = pause_cost(model, config, space.mode).total
        trial.set_user_attr("pause", config.key)
        trial.set_user_attr("flops", flops)
        violation = -1.0 if budget_flops is None else (flops - budget_flops) / full
        trial.set_constraint("budget", violation)
        if violation > 0:
            trial.set_user_attr(_OVER_BUDGET, True)
            return _Plan(trial, config, flops, None)
        job = PauseJob(
            str(Path(model_dir).resolve()),
            data.to_dict(),
            settings.split,
            config.to_dict(),
            space.mode,
            eval_batch_size=settings.eval_batch_size,
            seed=settings.seed,
            label=str(trial.number),
            device=settings.device,
        )
        return _Plan(trial, config, flops, job)

    task = "pause search"
    progress.start(task, settings.n_trials)
    progress.advance(task, done)
    ran_now: set[int] = set()

    def run_round(trials: list[optuna.Trial]) -> list[Any]:
        plans = [plan(t) for t in trials]
        todo = [p for p in plans if p.job is not None]
        results = iter(executor.map([p.job for p in todo]) if todo else [])
        told: list[Any] = []
        for p in plans:
            frac = p.flops / full
            if p.job is None:
                told.append([0.0, frac])
                continue
            res = next(results)
            if isinstance(res, TrialFailure):
                p.trial.set_user_attr("error", res.error)
                told.append(FAILED)
            else:
                p.trial.set_user_attr("node", res.get("node_id", ""))
                told.append([float(res["metric"]), frac])
            ran_now.add(p.trial.number)
        return told

    t0 = time.perf_counter()
    try:
        run_rounds(
            study,
            remaining,
            settings.round_size,
            run_round,
            done=done,
            progress=progress,
            task=task,
        )
    finally:
        progress.finish(task)
        if owned:
            executor.close()
    seconds = time.perf_counter() - t0
    return _result(study, ran_now, seconds, metric_name, full, budget_flops)


def _result(
    study: optuna.Study,
    ran_now: set[int],
    seconds: float,
    metric_name: str,
    full: int,
    budget_flops: float | None,
) -> PauseSearchResult:
    trials = [t for t in study.get_trials(deepcopy=False) if not t.system_attrs.get(INTERRUPTED)]
    rows: list[dict[str, Any]] = []
    for t in trials:
        feasible = bool(t.constraints) and all(v <= 0 for v in t.constraints.values())
        rows.append(
            {
                "number": t.number,
                "state": t.state.name,
                "pause": t.user_attrs.get("pause"),
                "metric": t.values[0] if t.values else None,
                "flops": t.user_attrs.get("flops"),
                "feasible": feasible and t.state is TrialState.COMPLETE,
                "evaluated": "node" in t.user_attrs,
                "node": t.user_attrs.get("node", ""),
                "error": t.user_attrs.get("error"),
                "ran_now": t.number in ran_now,
                "params": dict(t.params),
            }
        )
    pool = [r for r in rows if r["feasible"] and r["evaluated"]]
    seen: set[str] = set()
    unique = []
    for r in pool:  # one point per configuration: the first trial that evaluated it
        if r["pause"] not in seen:
            seen.add(r["pause"])
            unique.append(r)
    front: list[PausePoint] = []
    if unique:
        mask = pareto_mask([r["metric"] for r in unique], [r["flops"] for r in unique])
        front = sorted(
            (
                PausePoint(r["pause"], r["metric"], r["flops"], r["flops"] / full, r["number"])
                for r, keep in zip(unique, mask, strict=True)
                if keep
            ),
            key=lambda p: (p.flops, -p.metric),
        )
    return PauseSearchResult(
        front=front,
        trials=rows,
        n_trials=len(rows),
        n_failed=sum(r["state"] == "FAIL" for r in rows),
        seconds=seconds,
        study_name=study.study_name,
        metric_name=metric_name,
        full_flops=full,
        budget_flops=budget_flops,
    )


def front_table(result: PauseSearchResult) -> Sequence[tuple[str, float, int]]:
    """``(pause, metric, flops)`` of the front: what two runs are compared on."""
    return [(p.pause, p.metric, p.flops) for p in result.front]
