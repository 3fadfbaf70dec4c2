"""Samplers: a registry of Optuna samplers, seeded per trial for reproducibility (``exhaustive``
enumerates every configuration instead; it is listed with them but is no sampler).

Every trial's sampler is built afresh with a seed derived from the study seed and the trial's
index among the trials that were not interrupted. Samplers keep their state in the study's
storage (NSGA-II caches its parent population there and counts only completed trials), so a
study resumed after an interruption samples exactly what the uninterrupted study would have:
the killed trial is marked failed and interrupted, and its successor gets its seed.
"""

from __future__ import annotations

import zlib
from collections.abc import Callable
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseGASampler, BaseSampler

# Optuna's samplers keep their generators in this class (stable across Optuna 5.x, pinned).
from optuna.samplers._lazy_random_state import LazyRandomState
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from exitsearch._io import derive_seed
from exitsearch.errors import ConfigError
from exitsearch.registry import Registry

__all__ = [
    "EXHAUSTIVE",
    "INTERRUPTED",
    "REGISTRY",
    "create_sampler",
    "list_samplers",
    "register_sampler",
]

EXHAUSTIVE = "exhaustive"
INTERRUPTED = "exitsearch:interrupted"  # system attribute of trials killed mid-run

SamplerFactory = Callable[[int, dict[str, Any]], BaseSampler]
REGISTRY: Registry[SamplerFactory] = Registry("sampler")


def register_sampler(name: str) -> Callable[[SamplerFactory], SamplerFactory]:
    return REGISTRY.register(name)


def list_samplers() -> list[str]:
    return sorted([*REGISTRY.names(), EXHAUSTIVE])


@register_sampler("nsga2")
def _nsga2(seed: int, options: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.NSGAIISampler(
        population_size=options.get("population_size", 40), seed=seed
    )


@register_sampler("nsga3")
def _nsga3(seed: int, options: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.NSGAIIISampler(
        population_size=options.get("population_size", 40), seed=seed
    )


@register_sampler("tpe")
def _tpe(seed: int, options: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.TPESampler(
        seed=seed,
        multivariate=True,
        group=True,
        n_startup_trials=options.get("n_startup_trials", 30),
    )


@register_sampler("gp")
def _gp(seed: int, options: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.GPSampler(
        seed=seed, n_startup_trials=options.get("n_startup_trials", 20)
    )


@register_sampler("random")
def _random(seed: int, options: dict[str, Any]) -> BaseSampler:
    return optuna.samplers.RandomSampler(seed=seed)


def create_sampler(name: str, seed: int, **options: Any) -> BaseSampler:
    """The sampler registered as ``name``, reseeded per trial from ``seed``.

    Raises:
        ConfigError: unknown sampler (the message lists the known ones).
    """
    if name not in REGISTRY:  # exhaustive is listed but is no sampler
        raise ConfigError(f"unknown sampler {name!r}; known: {', '.join(list_samplers())}")
    return PerTrialSeededSampler(REGISTRY.get(name), seed, options)


def _reseed(sampler: BaseSampler, seed: int) -> bool:
    """Reseed every random generator of ``sampler`` and of the samplers it holds."""
    found = False
    stack: list[Any] = [sampler]
    seen: set[int] = set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        for name, value in vars(obj).items():
            if isinstance(value, LazyRandomState):
                value.rng.seed(_derive(seed, zlib.crc32(name.encode())))
                found = True
            elif isinstance(value, BaseSampler):
                stack.append(value)
    return found


def _derive(seed: int, number: int) -> int:
    return derive_seed(seed, number)


class PerTrialSeededSampler(BaseSampler):
    """Delegates to one sampler whose random generators are reseeded before each trial.

    The seed derives from the trial's index among the trials that were not interrupted.
    Optuna's samplers draw from ``LazyRandomState`` generators (the sampler's own and those of
    the samplers it delegates to); reseeding them keeps the sampler's caches (NSGA-II's search
    space, for one) across trials. A sampler without such generators is rebuilt instead.
    """

    def __init__(self, factory: SamplerFactory, seed: int, options: dict[str, Any]) -> None:
        self._factory = factory
        self._seed = seed
        self._options = options
        self._inner = factory(seed, options)

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        index = sum(
            1
            for t in study.get_trials(deepcopy=False)
            if t.number < trial.number and not t.system_attrs.get(INTERRUPTED)
        )
        if isinstance(self._inner, BaseGASampler):
            # Settle this generation's parents before reseeding. Optuna hands the freshly
            # selected parents over in selection order but cached ones in trial order, so a
            # resumed study (parents cached) would breed its first child from a reordered list;
            # selecting (and caching) first makes every child read the cached order.
            generation = self._inner.get_trial_generation(study, trial)
            self._inner.get_parent_population(study, generation)
        seed = _derive(self._seed, index)
        if not _reseed(self._inner, seed):
            self._inner = self._factory(seed, self._options)
        self._inner.before_trial(study, trial)

    def infer_relative_search_space(
        self, study: Study, trial: FrozenTrial
    ) -> dict[str, BaseDistribution]:
        return self._inner.infer_relative_search_space(study, trial)

    def sample_relative(
        self, study: Study, trial: FrozenTrial, search_space: dict[str, BaseDistribution]
    ) -> dict[str, Any]:
        return self._inner.sample_relative(study, trial, search_space)

    def sample_independent(
        self,
        study: Study,
        trial: FrozenTrial,
        param_name: str,
        param_distribution: BaseDistribution,
    ) -> Any:
        return self._inner.sample_independent(study, trial, param_name, param_distribution)

    def after_trial(
        self, study: Study, trial: FrozenTrial, state: TrialState, values: list[float] | None
    ) -> None:
        self._inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self._inner.reseed_rng()
