"""Holding a p99 latency target by moving along the bundle's operating points.

An exported bundle carries a ladder of operating points: threshold settings of one placement,
from the most accurate to the cheapest (anytime operation). Under load a request's latency is
mostly the wait for the requests queued before it, so the controller predicts the latency of a
request arriving now at each operating point,

    predicted(p) = (queued + 1) * seconds_per_sample(p) + batch_wait,

with ``seconds_per_sample`` measured on the batches the server ran (an exponentially weighted
mean per point; a point not yet run is scaled from a measured one by its predicted FLOPs). When
the prediction at the point in use passes ``high`` x target, the server moves down to the most
accurate point predicted to stay under it; it moves back up one point at a time once the more
accurate point's prediction has stayed under ``low`` x target for ``hold_s`` (hysteresis: no
flapping at the boundary). It never goes above the point it started at. When even the cheapest
point cannot meet the target, new requests are refused (503) instead of queued: a latency
target that accepts everything cannot hold under overload.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

__all__ = ["LatencyTarget", "TargetSettings", "ladder"]


@dataclass(frozen=True)
class TargetSettings:
    """The latency target and the controller's constants.

    Attributes:
        slo_ms: the p99 latency to hold, in milliseconds (server side).
        high: move to a cheaper point when the predicted latency passes ``high * slo_ms``.
        low: move back up when the more accurate point predicts under ``low * slo_ms``...
        hold_s: ...for this many seconds in a row.
        smoothing: weight of the newest batch in the per-point time average.
    """

    slo_ms: float
    high: float = 0.8
    low: float = 0.5
    hold_s: float = 2.0
    smoothing: float = 0.2

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ValueError(
                f"the latency target must be a positive number of ms, got {self.slo_ms}"
            )
        if not 0 < self.low < self.high <= 1:
            raise ValueError(
                f"`0 < low < high <= 1` must hold, got low={self.low}, high={self.high}"
            )
        if self.hold_s < 0 or not 0 < self.smoothing <= 1:
            raise ValueError("hold_s must be >= 0 and smoothing in (0, 1]")


def ladder(costs: Sequence[float], accuracies: Sequence[float], start: int) -> list[int]:
    """Operating point indices from ``start`` down to the cheapest, each cheaper than the one
    before; points that are both dearer and less accurate than another are left out."""
    n = len(costs)
    steps = [start]
    for i in sorted(range(n), key=lambda i: (-costs[i], -accuracies[i])):
        if costs[i] >= costs[steps[-1]]:
            continue
        if any(costs[j] <= costs[i] and accuracies[j] > accuracies[i] for j in range(n)):
            continue  # another point is as cheap and more accurate
        steps.append(i)
    return steps


class LatencyTarget:
    """Chooses the operating point of each batch and admits or refuses requests.

    Args:
        settings: the target.
        steps: operating point indices from the most accurate allowed to the cheapest
            (:func:`ladder`).
        costs: predicted mean FLOPs per sample of every operating point (by index).
        batch_wait_s: how long a batch waits to fill (added to every prediction).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        settings: TargetSettings,
        steps: Sequence[int],
        costs: Sequence[float],
        batch_wait_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not steps:
            raise ValueError("a latency target needs at least one operating point")
        self.settings = settings
        self.steps = list(steps)
        self.costs = list(costs)
        self.batch_wait_s = batch_wait_s
        self.clock = clock
        self.level = 0  # position on the ladder: 0 is the most accurate allowed point
        self.switches = 0
        self._per_sample: dict[int, float] = {}
        self._calm_since: float | None = None

    @property
    def point(self) -> int:
        """The operating point in use."""
        return self.steps[self.level]

    def observe(self, point: int, samples: int, seconds: float) -> None:
        """Record that a batch of ``samples`` took ``seconds`` at operating ``point``."""
        if samples < 1 or not seconds > 0:
            return
        value = seconds / samples
        old = self._per_sample.get(point)
        a = self.settings.smoothing
        self._per_sample[point] = value if old is None else (1 - a) * old + a * value

    def seconds_per_sample(self, point: int) -> float | None:
        """Measured (or, for a point not yet run, FLOP-scaled) seconds per sample."""
        if point in self._per_sample:
            return self._per_sample[point]
        if not self._per_sample:
            return None
        known, value = min(
            self._per_sample.items(), key=lambda kv: abs(self.costs[kv[0]] - self.costs[point])
        )
        return value * self.costs[point] / self.costs[known]

    def predicted_ms(self, point: int, queued: int) -> float:
        """Predicted latency in ms of a request arriving behind ``queued`` others."""
        s = self.seconds_per_sample(point)
        if s is None:
            return 0.0
        return 1000.0 * ((queued + 1) * s + self.batch_wait_s)

    def update(self, queued: int) -> int:
        """Move along the ladder for a queue of ``queued`` requests; the point to use."""
        cfg = self.settings
        now = self.clock()
        high, low = cfg.high * cfg.slo_ms, cfg.low * cfg.slo_ms
        if self.predicted_ms(self.point, queued) > high:
            level = self.level
            while (
                level + 1 < len(self.steps) and self.predicted_ms(self.steps[level], queued) > high
            ):
                level += 1
            if level != self.level:
                self.level, self.switches = level, self.switches + 1
            self._calm_since = None
        elif self.level > 0 and self.predicted_ms(self.steps[self.level - 1], queued) < low:
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= cfg.hold_s:
                self.level, self.switches = self.level - 1, self.switches + 1
                self._calm_since = now
        else:
            self._calm_since = None
        return self.point

    def admit(self, queued: int) -> bool:
        """Whether a request arriving behind ``queued`` others can still meet the target at
        the cheapest point (False: refuse it now rather than answer it late)."""
        return self.predicted_ms(self.steps[-1], queued) <= self.settings.slo_ms
