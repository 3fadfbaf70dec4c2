"""Turning an Optuna trial into an :class:`ExitConfig` of a search space (define-by-run).

Parameters, by placement:

* ``free``: ``exit@m`` for every candidate location m: ``none`` or one head variant trained
  there (``linear``, ``lph[k=3]``...).
* ``uniform``: ``num_exits`` and one ``head`` type; exits evenly spaced over the candidates.
* ``lgvit``: ``exit@m`` yes/no, plus the mappings ``k_first``, ``k_last`` (shallow half) and
  ``s_first``, ``s_last`` (deep half); the space trains every value they can map to, so the
  head at a location is the variant with the mapped value (the nearest trained one for heads
  given by hand).

Then ``criterion``, ``thresholds`` (``shared``/``per_exit``) and the thresholds themselves:
``threshold`` (shared) or ``threshold@m`` (per exit), in the criterion's range.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import optuna

from exitsearch.core.config import ExitConfig
from exitsearch.heads import HeadSpec
from exitsearch.heads.mappings import KernelMapping, WindowMapping, split_halves
from exitsearch.search.space import MAPPED_PARAM, FloatRange, IntRange, Placement, SearchSpace

__all__ = ["NONE", "ConfigSampler"]

NONE = "none"


@dataclass
class ConfigSampler:
    """Samples configurations of ``space`` whose heads are among ``heads`` (the trained ones)."""

    space: SearchSpace
    heads: list[HeadSpec]
    depth: int

    def __post_init__(self) -> None:
        self.by_location: dict[int, dict[str, HeadSpec]] = defaultdict(dict)
        for s in self.heads:
            self.by_location[s.location][s.variant] = s
        self.locations = sorted(self.by_location)
        self.criteria = [
            c
            for c in self.space.criteria
            if c != "uncertainty"
            or self.space.native_uncertainty
            or all(s.uncertainty for s in self.heads)
        ]

    # ------------------------------------------------------------- placements
    def _free(self, trial: optuna.Trial) -> list[HeadSpec]:
        exits = []
        for m in self.locations:
            choice = trial.suggest_categorical(f"exit@{m}", [NONE, *sorted(self.by_location[m])])
            if choice != NONE:
                exits.append(self.by_location[m][choice])
        return exits

    def uniform_locations(self, n: int) -> list[int]:
        """``n`` exits evenly spaced over the candidate locations (by block index)."""
        n = min(n, len(self.locations))
        picks = []
        for i in range(1, n + 1):
            target = i * self.depth / (n + 1)
            m = min(self.locations, key=lambda loc: (abs(loc - target), loc))
            picks.append(m)
        return sorted(set(picks))

    def _uniform(self, trial: optuna.Trial) -> list[HeadSpec]:
        types = sorted({s.type for s in self.heads})
        r = self.space.num_exits
        n = trial.suggest_int("num_exits", r.low, min(r.high, len(self.locations)))
        head_type = trial.suggest_categorical("head", types)
        exits = []
        for m in self.uniform_locations(n):
            variants = [s for s in self.by_location[m].values() if s.type == head_type]
            if variants:
                exits.append(variants[0])
        return exits

    def _lgvit(self, trial: optuna.Trial) -> list[HeadSpec]:
        chosen = [
            m for m in self.locations if trial.suggest_categorical(f"exit@{m}", [False, True])
        ]
        k_first = trial.suggest_categorical("k_first", list(self.space.kernel_first))
        k_last = trial.suggest_categorical("k_last", list(self.space.kernel_last))
        kernel = KernelMapping(max(k_first, k_last), min(k_first, k_last))
        s_first = trial.suggest_categorical("s_first", list(self.space.window_first))
        s_last = trial.suggest_categorical("s_last", list(self.space.window_last))
        window = WindowMapping(min(s_first, s_last), max(s_first, s_last))
        return self.lgvit_exits(chosen, kernel, window)

    def lgvit_exits(
        self, chosen: list[int], kernel: KernelMapping, window: WindowMapping
    ) -> list[HeadSpec]:
        """LGViT heads at ``chosen`` with the mapped k/s (the nearest trained variant when a
        hand-given head list lacks the exact one)."""
        shallow, deep = split_halves(chosen, self.depth)
        exits = []
        for half, mapping in ((shallow, kernel), (deep, window)):
            for m, value in mapping.assign(half).items():
                exits.append(self._nearest(m, mapping.head_type, value))
        return exits

    def _nearest(self, m: int, head_type: str, value: int) -> HeadSpec:
        param = MAPPED_PARAM[head_type]
        options = [s for s in self.by_location[m].values() if s.type == head_type]
        if not options:
            raise ValueError(f"no trained {head_type} head at location {m}")
        return min(
            options, key=lambda s: (abs(int(s.params[param]) - value), -int(s.params[param]))
        )

    # ------------------------------------------------------------------ public
    def exits(self, trial: optuna.Trial) -> list[HeadSpec]:
        placement = self.space.placement
        if placement is Placement.UNIFORM:
            return self._uniform(trial)
        if placement is Placement.LGVIT:
            return self._lgvit(trial)
        return self._free(trial)

    def sample(self, trial: optuna.Trial) -> ExitConfig | None:
        """A configuration, or None when the trial chose no exit at all."""
        exits = self.exits(trial)
        criterion = trial.suggest_categorical("criterion", self.criteria)
        mode = trial.suggest_categorical("thresholds", list(self.space.threshold_modes))
        if not exits:
            return None
        rng = self.threshold_range(criterion)
        if mode == "shared":
            t = self._suggest(trial, f"threshold_{criterion}", rng)
            thresholds = [t] * len(exits)
        else:
            thresholds = [
                self._suggest(trial, f"threshold_{criterion}@{s.location}", rng) for s in exits
            ]
        return ExitConfig(tuple(exits), criterion, tuple(thresholds), mode)

    def single_exits(self) -> list[ExitConfig]:
        """Every trained head alone, under each criterion, in a space of free placement: a
        single exit's exact threshold curve costs one sort of the cached predictions, while
        trials reach a given one of them only by chance (they draw a head or none at every
        location). Other placement rules have none: a lone head is outside them."""
        if self.space.placement is not Placement.FREE:
            return []
        return [
            ExitConfig((s,), c, (self.threshold_range(c).low,), "shared")
            for s in sorted(self.heads, key=lambda s: (s.location, s.key))
            for c in self.criteria
        ]

    def threshold_range(self, criterion: str) -> FloatRange | IntRange:
        return {
            "confidence": self.space.confidence,
            "entropy": self.space.entropy,
            "patience": self.space.patience,
            "uncertainty": self.space.uncertainty_range,
        }[criterion]

    @staticmethod
    def _suggest(trial: optuna.Trial, name: str, rng: FloatRange | IntRange) -> float:
        if isinstance(rng, IntRange):
            return float(trial.suggest_int(name, rng.low, rng.high, step=rng.step))
        return trial.suggest_float(name, rng.low, rng.high, log=rng.log)
