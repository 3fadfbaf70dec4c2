"""Holding a p99 latency target by moving along the bundle's operating points.

An exported bundle carries a ladder of operating points: threshold settings of one placement,
from the most accurate to the cheapest (anytime operation). Under load a request's latency is
mostly the wait for the work queued before it, so the controller predicts the latency of a
request arriving now behind ``q`` queued images and ``r`` requests in the replica (itself
included), at each operating point ``p``, from batches of at most ``B`` images:

    predicted(p, q, r) = ceil((q + 1) / B) * (a_p + b_p * min(q + 1, B)) + batch_wait + c * r,

where a batch of ``n`` images takes ``a_p + b_p * n`` seconds: a line fitted to the batches the
server ran at ``p`` (least squares with exponential forgetting); and ``c`` is the CPU time the
replica's event loop spends on one request outside the model's batches (receiving, parsing,
decoding, answering or refusing it; :class:`LoopCost`), which every request ahead costs a new
one too, as the loop does it between batches. A request being admitted adds what it has taken
so far and the decoding of its own ``k`` images of ``x`` pixels each, ``k * (d0 + d1 * x)``
seconds (:meth:`LatencyTarget.decode_ms`: a line fitted the same way to the requests decoded,
in pixels per image): ``c`` is an average over requests, and a 224-px JPEG takes about 1.6 ms
to decode and resize on this kind of CPU, 20 of them as much as a third of a batch's latency.
(For a request of the usual size decoded in the loop, its decoding is then counted twice, a
margin of about 2 ms on a 224-px image.) Measurements expire ``fresh_s`` seconds after a point's
last batch (they describe a load that has passed); a point without a current fit takes the
fixed part of the nearest point with one and its per-image part scaled by predicted FLOPs, and
with none at all the model's part is zero: after a burst the server returns to its most
accurate point once the burst's measurements have expired. Admission keeps the last fits
however old they are, so that a burst after a quiet spell is not admitted blind. When
the prediction at the point in use passes ``high`` x target, the server moves down to the most
accurate point predicted to stay under it; it moves back up once the next more accurate point's
prediction has stayed under ``low`` x target for ``hold_s`` (hysteresis: no flapping at the
boundary), to the most accurate point whose prediction is under ``low`` x target. It never goes
above the point it started at. While the replica refuses requests beyond its concurrency
limit, it steps down every 0.5 s, each step to a point that costs at most ``step`` x the
FLOPs of the one before, or to the cheapest (:meth:`LatencyTarget.step_down`; a ladder of 63 close points took 31 s
one point at a time): the short queue the limit keeps predicts no risk, yet requests go
unanswered that a cheaper point could answer. When even the cheapest point cannot meet the target, new
requests are refused (503) instead of queued: a latency target that accepts everything cannot
hold under overload. :class:`ConcurrencyLimit` refuses requests beyond what the replica answers
in time, whatever part of the request is the bottleneck.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["ConcurrencyLimit", "LatencyTarget", "LoopCost", "TargetSettings", "ladder"]


@dataclass(frozen=True)
class TargetSettings:
    """The latency target and the controller's constants.

    Attributes:
        slo_ms: the p99 latency to hold, in milliseconds (server side).
        high: move to a cheaper point when the predicted latency passes ``high * slo_ms``.
        low: move back up when the more accurate point predicts under ``low * slo_ms``...
        hold_s: ...for this many seconds in a row.
        smoothing: weight of the newest batch in the per-point fit (and of the newest
            measurement in the CPU per request).
        fresh_s: a point's fit expires this long after its last batch.
        max_load: a more accurate point is taken only if the requests arriving would keep the
            replica busy less than this share of the time there.
        step: a step down while requests are refused goes to a point that costs at most this
            share of the current one's FLOPs.
    """

    slo_ms: float
    high: float = 0.8
    low: float = 0.5
    hold_s: float = 2.0
    smoothing: float = 0.2
    fresh_s: float = 5.0
    max_load: float = 0.8
    step: float = 0.8

    def __post_init__(self) -> None:
        if not (math.isfinite(self.slo_ms) and self.slo_ms > 0):
            raise ValueError(
                f"the latency target must be a positive number of ms, got {self.slo_ms}"
            )
        if not 0 < self.low < self.high <= 1:
            raise ValueError(
                f"`0 < low < high <= 1` must hold, got low={self.low}, high={self.high}"
            )
        if self.hold_s < 0 or self.fresh_s <= 0 or not 0 < self.smoothing <= 1:
            raise ValueError("hold_s must be >= 0, fresh_s > 0 and smoothing in (0, 1]")
        if not self.max_load > 0:
            raise ValueError(f"max_load must be > 0, got {self.max_load}")
        if not 0 < self.step < 1:
            raise ValueError(f"step must be in (0, 1), got {self.step}")


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


def top_point(costs: Sequence[float], accuracies: Sequence[float], start: int | None) -> int:
    """The ladder's top: ``start``, or with none the most accurate point (the cheaper of
    equals)."""
    if start is not None:
        return start
    return max(range(len(costs)), key=lambda i: (accuracies[i], -costs[i]))


class LatencyTarget:
    """Chooses the operating point of each batch and admits or refuses requests.

    Args:
        settings: the target.
        steps: operating point indices from the most accurate allowed to the cheapest
            (:func:`ladder`).
        costs: predicted mean FLOPs per sample of every operating point (by index).
        max_batch: images per model batch at most.
        batch_wait_s: how long a batch waits to fill (added to every prediction).
        clock: seconds, monotonic (tests pass their own).
    """

    def __init__(
        self,
        settings: TargetSettings,
        steps: Sequence[int],
        costs: Sequence[float],
        max_batch: int = 32,
        batch_wait_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if not steps:
            raise ValueError("a latency target needs at least one operating point")
        self.settings = settings
        self.steps = list(steps)
        self.costs = list(costs)
        self.max_batch = max(1, int(max_batch))
        self.batch_wait_s = batch_wait_s
        self.clock = clock
        self.level = 0  # position on the ladder: 0 is the most accurate allowed point
        self.switches = 0
        self._fits: dict[int, _Fit] = {}
        self._decode = _Fit(keep_slope=True)  # s to decode one image against its pixels
        self._pixels: float | None = None  # pixels per image of the requests decoded
        self._per_request: float | None = None  # s of the replica's loop per request, model aside
        self._rate: float | None = None  # requests arriving per second
        self._images = 1.0  # images per request
        self._batch = 1.0  # images per batch
        self._calm_since: float | None = None

    @property
    def point(self) -> int:
        """The operating point in use."""
        return self.steps[self.level]

    def observe(self, point: int, samples: int, seconds: float) -> None:
        """Record that a batch of ``samples`` took ``seconds`` at operating ``point``."""
        if samples < 1 or not seconds > 0:
            return
        fit = self._fits.setdefault(point, _Fit())
        fit.add(samples, seconds, self.settings.smoothing)
        fit.updated = self.clock()
        self._batch = self._blend(self._batch, samples)

    def observe_decode(
        self, images: int, pixels: int, seconds: float, *, usual: bool = True
    ) -> None:
        """Record that decoding ``images`` images of ``pixels`` pixels in all (and shrinking
        them to the model's size) took ``seconds``; ``usual``: of the size requests send (the
        size that :meth:`decode_ms` assumes when it is not told)."""
        if images < 1 or pixels < 1 or not seconds > 0:
            return
        self._decode.add(pixels / images, seconds / images, self.settings.smoothing)
        if usual:
            self._pixels = self._blend(self._pixels, pixels / images)

    def decode_ms(self, images: int, pixels: int | None = None) -> float:
        """Predicted ms to decode ``images`` images of ``pixels`` pixels in all (None: of the
        usual size, see :meth:`observe_decode`); 0 before any was measured."""
        if images < 1 or not self._decode.w:
            return 0.0
        a, b = self._decode.line()
        if pixels is not None:
            x = pixels / images
        else:
            x = self._decode.n / self._decode.w if self._pixels is None else self._pixels
        return 1000.0 * images * (a + b * x)

    def observe_requests(self, requests: int, seconds: float) -> None:
        """Record that the replica's event loop spent ``seconds`` of CPU outside the model's
        batches (receiving, parsing, decoding, answering, refusing) on ``requests`` requests."""
        if requests < 1 or seconds < 0:
            return
        self._per_request = self._blend(self._per_request, seconds / requests)

    def observe_arrivals(self, requests: int, seconds: float, images: float = 1.0) -> None:
        """Record that ``requests`` requests arrived (answered or refused) in ``seconds``,
        with ``images`` images per request."""
        if not seconds > 0 or requests < 0:
            return
        self._rate = self._blend(self._rate, requests / seconds)
        if requests:
            self._images = self._blend(self._images, max(1.0, images))

    def load(self, point: int) -> float:
        """The share of the replica's time that the requests arriving would take at ``point``:
        arrival rate x (the loop's CPU per request + images per request x the model's time per
        image in batches of the usual size); 0 before anything was measured."""
        line = self.batch_seconds(point, fresh=False)
        if self._rate is None or line is None:
            return 0.0
        a, b = line
        per_image = a / max(1.0, self._batch) + b
        return self._rate * ((self._per_request or 0.0) + self._images * per_image)

    def request_ms(self, requests: int) -> float:
        """Predicted ms that ``requests`` requests in the replica take of its event loop
        outside the model's batches (0 before any was measured)."""
        return 1000.0 * (self._per_request or 0.0) * max(0, requests)

    def _blend(self, old: float | None, new: float) -> float:
        """``new`` averaged into ``old`` with weight ``smoothing`` (``new`` when no ``old``)."""
        w = self.settings.smoothing
        return new if old is None else (1 - w) * old + w * new

    def batch_seconds(self, point: int, *, fresh: bool = True) -> tuple[float, float] | None:
        """``(a, b)``: a batch of ``n`` images takes ``a + b * n`` seconds at ``point``
        (None when no point ran a batch in the last ``fresh_s`` seconds, or with
        ``fresh=False`` ever)."""
        since = self.clock() - self.settings.fresh_s if fresh else -math.inf
        fresh_fits = [k for k, f in self._fits.items() if f.updated >= since]
        if not fresh_fits:
            return None
        if point in fresh_fits:
            return self._fits[point].line()
        near = min(fresh_fits, key=lambda k: abs(self.costs[k] - self.costs[point]))
        a, b = self._fits[near].line()
        return a, b * self.costs[point] / self.costs[near]

    def model_ms(self, point: int, queued: int, *, fresh: bool = True) -> float:
        """Predicted ms of the model's batches until a request arriving behind ``queued``
        images is answered (0 without a fit; ``fresh``: as :meth:`batch_seconds`)."""
        line = self.batch_seconds(point, fresh=fresh)
        if line is None:
            return 0.0
        a, b = line
        n = queued + 1
        batches = math.ceil(n / self.max_batch)
        return 1000.0 * (batches * (a + b * min(n, self.max_batch)) + self.batch_wait_s)

    def predicted_ms(
        self, point: int, queued: int, requests: int = 0, *, fresh: bool = True
    ) -> float:
        """Predicted latency in ms of a request arriving behind ``queued`` images with
        ``requests`` in the replica (itself included; 0: the model's part alone)."""
        return self.model_ms(point, queued, fresh=fresh) + self.request_ms(requests)

    def update(self, queued: int, requests: int = 0) -> int:
        """Move along the ladder for ``queued`` images and ``requests`` in the replica; the
        point to use."""
        cfg = self.settings
        now = self.clock()
        high, low = cfg.high * cfg.slo_ms, cfg.low * cfg.slo_ms
        if self.predicted_ms(self.point, queued, requests) > high:
            level = self.level
            while (
                level + 1 < len(self.steps)
                and self.predicted_ms(self.steps[level], queued, requests) > high
            ):
                level += 1
            if level != self.level:
                self.level, self.switches = level, self.switches + 1
            self._calm_since = None
        elif self.level > 0 and self._calm(self.level - 1, queued, requests, low):
            if self._calm_since is None:
                self._calm_since = now
            elif now - self._calm_since >= cfg.hold_s:
                level = self.level - 1
                while level > 0 and self._calm(level - 1, queued, requests, low):
                    level -= 1
                self.level, self.switches = level, self.switches + 1
                self._calm_since = now
        else:
            self._calm_since = None
        return self.point

    def _calm(self, level: int, queued: int, requests: int, low: float) -> bool:
        """Whether the point at ``level`` would answer a new request under ``low`` ms and keep
        up with the requests arriving (under ``max_load``): the queue that the cheaper point
        keeps short says nothing of the queue a dearer one would build."""
        point = self.steps[level]
        return (
            self.predicted_ms(point, queued, requests) < low
            and self.load(point) < self.settings.max_load
        )

    def step_down(self) -> int:
        """One step cheaper (when the replica refuses requests beyond its concurrency limit:
        the queue the limit keeps short predicts no risk, yet requests go unanswered that a
        cheaper point could answer): to the most accurate point that costs at most
        ``step`` x the current one's FLOPs (or the cheapest, where none is that cheap), so
        that a long ladder of close points is crossed in a few steps; the point to use."""
        if self.level + 1 < len(self.steps):
            level = self.level + 1
            most = self.settings.step * self.costs[self.point]
            while level + 1 < len(self.steps) and self.costs[self.steps[level]] > most:
                level += 1
            self.level, self.switches = level, self.switches + 1
            self._calm_since = None
        return self.point

    def admit(self, queued: int, requests: int = 0, own_ms: float = 0.0) -> bool:
        """Whether a request arriving behind ``queued`` images, with ``requests`` in the
        replica (itself included), can still meet the target at the cheapest point (False:
        refuse it now rather than answer it late), when ``own_ms`` go to the request itself
        before its images queue (what it has taken so far and its decoding). The last fits
        count however old they are."""
        predicted = self.predicted_ms(self.steps[-1], queued, requests, fresh=False)
        return predicted + own_ms <= self.settings.slo_ms

    def most_images(
        self, limit: int, pixels_per_image: float | None = None, share: float | None = None
    ) -> int:
        """The most images, up to ``limit``, of ``pixels_per_image`` pixels each (None: the
        usual size), that one request alone in the replica may hold and still be predicted
        within ``share`` x target (None: ``high``) at the cheapest point (0: not even one):
        the prediction is a mean, and with the target itself as the bound many such requests came late (alone on
        an idle 224-px server, requests of 11-13 images admitted under a 100 ms target took
        111-145 ms in 4 of 11).
        The prediction grows with the images, so the first that fits, from ``limit`` down, is
        the most."""
        most_ms = (self.settings.high if share is None else share) * self.settings.slo_ms
        return next(
            (k for k in range(limit, 0, -1) if self.alone_ms(k, pixels_per_image) <= most_ms),
            0,
        )

    def most_pixels(self, share: float | None = None) -> int | None:
        """The most pixels one image alone in the replica may have and still be predicted
        within ``share`` x target (None: ``high``) at the cheapest point (None: decoding not
        measured yet, or not growing with pixels)."""
        if not self._decode.w:
            return None
        a, b = self._decode.line()
        if not b > 0:
            return None
        most_ms = (self.settings.high if share is None else share) * self.settings.slo_ms
        spare_ms = most_ms - self.predicted_ms(self.steps[-1], 0, 1, fresh=False) - 1000.0 * a
        return max(0, int(spare_ms / (1000.0 * b)))

    def alone_ms(self, images: int, pixels_per_image: float | None = None) -> float:
        """Predicted ms of a request of ``images`` images of ``pixels_per_image`` pixels each
        (None: the usual size) alone in the replica, at the cheapest point."""
        pixels = None if pixels_per_image is None else round(images * pixels_per_image)
        model = self.predicted_ms(self.steps[-1], images - 1, 1, fresh=False)
        return model + self.decode_ms(images, pixels)


class _Fit:
    """``seconds = a + b * images``, least squares over batches with exponential forgetting.

    With ``keep_slope``, once the sizes seen have all but one forgotten (the spread of sizes
    collapses), the last slope measured stays and the line goes through the recent mean:
    the decoding line, given its slope by the warm-up's two sizes, would otherwise turn all
    per pixel after about 120 requests of one size (a 28-px image's fixed cost then predicts
    0.13 s for a megapixel), and a large image refused on that prediction never corrects it."""

    def __init__(self, keep_slope: bool = False) -> None:
        self.w = self.n = self.t = self.nn = self.nt = 0.0
        self.updated = float("-inf")
        self.keep_slope = keep_slope
        self._slope: float | None = None  # the last slope measured (keep_slope)

    def add(self, n: int, t: float, weight: float) -> None:
        keep = 1.0 - weight if self.w else 0.0
        self.w = keep * self.w + weight
        self.n = keep * self.n + weight * n
        self.t = keep * self.t + weight * t
        self.nn = keep * self.nn + weight * n * n
        self.nt = keep * self.nt + weight * n * t
        if self.keep_slope:
            b = self._slope_now()
            if b is not None and b > 0:
                self._slope = b

    def _slope_now(self) -> float | None:
        """The least-squares slope, or None while one size alone carries the weight."""
        mn, mt = self.n / self.w, self.t / self.w
        var = self.nn / self.w - mn * mn
        if var <= 1e-9 * max(1.0, mn * mn):
            return None
        return (self.nt / self.w - mn * mt) / var

    def line(self) -> tuple[float, float]:
        mn, mt = self.n / self.w, self.t / self.w
        b = self._slope_now()
        if b is None:  # one batch size seen so far: all per image
            if self.keep_slope and self._slope is not None:
                b = min(self._slope, mt / mn)
                return mt - b * mn, b
            return 0.0, mt / mn
        if b <= 0:  # noise: time did not grow with images
            return mt, 0.0
        a = mt - b * mn
        if a < 0:
            return 0.0, mt / mn
        return a, b


class ConcurrencyLimit:
    """How many prediction requests a replica takes at once under a latency target.

    Moving to cheaper operating points only shortens the model's part of a request; when the
    rest (receiving, decoding, answering) is what overloads the replica, every request admitted
    beyond what it can answer in time only makes all of them late. The limit adapts to the
    latencies measured (additive increase, multiplicative decrease, as TCP's congestion window):
    every ``window_s`` seconds, if the window's p99 passed ``high`` x target while requests
    overlapped the limit shrinks by ``decrease``; if it stayed under ``low`` x target while the
    limit was reached, it grows by one. A late request that had the replica to itself says
    nothing of concurrency (a large one is the latency target's to refuse), so a window without
    two requests at once leaves the limit be: sent one at a time, requests of 10 to 26 images
    had cut it from 32 to 1. Requests beyond the limit are refused at once (503), before any
    decoding.
    """

    def __init__(
        self,
        settings: TargetSettings,
        initial: int = 32,
        maximum: int = 256,
        window_s: float = 0.5,
        decrease: float = 0.7,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.settings = settings
        self.limit = float(min(initial, maximum))
        self.maximum = maximum
        self.window_s = window_s
        self.decrease = decrease
        self.clock = clock
        self._latencies: list[float] = []
        self._reached = False
        self._overlap = False  # two requests were in the replica at once this window
        self._refused = 0  # since take_refused()
        self._since = clock()

    def admit(self, in_flight: int) -> bool:
        """Whether a request arriving while ``in_flight`` others are answered may start."""
        if in_flight >= int(self.limit):
            self._reached = True
            self._refused += 1
            return False
        if in_flight + 1 >= int(self.limit):
            self._reached = True
        if in_flight:
            self._overlap = True
        return True

    def take_refused(self) -> int:
        """Requests refused since the last call."""
        refused, self._refused = self._refused, 0
        return refused

    def record(self, latency_ms: float) -> None:
        """A request answered after ``latency_ms`` (server side)."""
        self._latencies.append(latency_ms)
        self.adjust()

    def adjust(self) -> None:
        """Close the window when it is over (also called when idle)."""
        now = self.clock()
        if now - self._since < self.window_s:
            return
        cfg = self.settings
        if self._latencies:
            p99 = float(np.percentile(self._latencies, 99))
            if p99 > cfg.high * cfg.slo_ms:
                if self._overlap:
                    self.limit = max(1.0, self.limit * self.decrease)
            elif p99 < cfg.low * cfg.slo_ms and self._reached:
                self.limit = min(float(self.maximum), self.limit + 1.0)
        self._latencies.clear()
        self._reached = self._overlap = False
        self._since = now


class LoopCost:
    """The replica's event loop's CPU time outside the model's batches, per prediction request
    (receiving, parsing, decoding, answering or refusing it): a cost the batch times do not
    show, which the latency target adds for each request in the replica. Measured with the
    loop's own thread's CPU clock (``time.thread_time``), so that neither waiting nor the
    process's other threads count."""

    def __init__(
        self, least: int = 8, longest_s: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.least = least  # requests a measurement needs...
        self.longest_s = longest_s  # ...within this long, or it is dropped (idle time's noise)
        self.clock = clock
        self.requests = 0  # arrived since the CPU measurement started...
        self.model = 0.0  # ...and the CPU seconds of the model's batches and drains since
        self.arrivals = 0  # arrived since the last call of measure()...
        self.images = 0  # ...the images of those parsed...
        self.parsed = 0  # ...and how many were
        self._since: tuple[float, float] | None = None  # (monotonic, thread CPU) at the start
        self._last: float | None = None  # the last call of measure()
        # CPU seconds per second the loop spends with no request at all (its periodic work:
        # the replica's reports, Ray Serve's own), the least over spans without a request
        self.idle_per_s: float | None = None
        self._started = False  # a first span is over (the one after start-up is not idle)

    def arrive(self) -> None:
        """A prediction request arrived."""
        self.requests += 1
        self.arrivals += 1

    def parse(self, images: int) -> None:
        """An arrived request holds ``images`` images."""
        self.images += images
        self.parsed += 1

    def measure(self, target: LatencyTarget) -> None:
        """Give ``target`` (:class:`LatencyTarget`) the requests that arrived since the last
        call, and the CPU per request once enough have; called periodically from the event
        loop."""
        now, cpu = self.clock(), time.thread_time()
        if self._last is not None:
            per = self.images / self.parsed if self.parsed else 1.0
            target.observe_arrivals(self.arrivals, now - self._last, per)
        self._last, self.arrivals, self.images, self.parsed = now, 0, 0, 0
        if self._since is not None:
            span = now - self._since[0]
            spent = max(0.0, cpu - self._since[1] - self.model)
            if self.requests >= self.least:
                periodic = (self.idle_per_s or 0.0) * span  # would have been spent anyway
                target.observe_requests(self.requests, max(0.0, spent - periodic))
            elif span < self.longest_s:
                return  # too few requests yet: keep counting
            elif self.requests == 0 and self._started:
                idle = spent / span
                self.idle_per_s = idle if self.idle_per_s is None else min(self.idle_per_s, idle)
            self._started = True
        self._since, self.requests, self.model = (now, cpu), 0, 0.0
