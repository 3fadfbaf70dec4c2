"""The latency target: down the ladder when the queue puts p99 at risk, back up when calm,
refuse what even the cheapest point cannot answer in time."""

from __future__ import annotations

import pytest

from exitsearch.serve.target import LatencyTarget, TargetSettings, ladder

COSTS = [80.0, 40.0, 20.0, 60.0, 20.0]
ACCS = [0.90, 0.85, 0.80, 0.70, 0.75]


def test_ladder_keeps_cheaper_and_efficient_points():
    assert ladder(COSTS, ACCS, 0) == [0, 1, 2]  # 3 is dearer than 1 and worse; 4 ties 2 worse
    assert ladder(COSTS, ACCS, 1) == [1, 2]


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def make(clock: Clock, slo: float = 100.0) -> LatencyTarget:
    t = LatencyTarget(TargetSettings(slo, hold_s=2.0), [0, 1, 2], COSTS, max_batch=10, clock=clock)
    # point 0: a batch of n takes 2 ms + 1 ms per image; point 2 half the per-image part
    for n in (1, 5, 10, 3):
        t.observe(0, n, 0.002 + 0.001 * n)
        t.observe(2, n, 0.002 + 0.00025 * n)
    return t


def test_prediction_follows_the_fitted_line():
    t = make(Clock())
    a, b = t.batch_seconds(0)
    assert a == pytest.approx(0.002) and b == pytest.approx(0.001)
    assert t.predicted_ms(0, 0) == pytest.approx(3.0)
    assert t.predicted_ms(0, 24) == pytest.approx(3 * 12.0)  # 25 images: 3 batches of 10
    a1, b1 = t.batch_seconds(1)  # never run: the nearest measured point (2) scaled by FLOPs
    assert a1 == pytest.approx(0.002) and b1 == pytest.approx(0.00025 * 40 / 20)


def test_moves_down_under_load_and_back_after_the_hold():
    clock = Clock()
    t = make(clock)
    assert t.update(0) == 0
    assert t.update(120) == 2  # 13 batches: 0 predicts 156 ms > 80, 1 91 ms, 2 58.5 ms
    assert t.switches == 1
    clock.now = 1.0
    assert t.update(0) == 2  # calm, but not for long enough
    clock.now = 2.5
    assert t.update(0) == 2
    clock.now = 3.1
    assert t.update(0) == 0  # calm for 2.1 s: back to the most accurate under 50 ms
    assert t.switches == 2
    clock.now = 3.2
    assert t.update(45) == 0  # 5 batches, 60 ms: between low and high, stays


def test_refuses_what_the_cheapest_point_cannot_meet():
    t = make(Clock())
    assert t.admit(100)  # 11 batches of 4.5 ms at point 2
    assert not t.admit(400)  # 41 batches of 4.5 ms: 184 ms > 100


def test_no_measurement_predicts_nothing():
    t = LatencyTarget(TargetSettings(10.0), [0, 1], COSTS)
    assert t.predicted_ms(0, 1000) == 0.0 and t.update(1000) == 0 and t.admit(1000)


def test_settings_are_checked():
    for bad in ({"slo_ms": 0}, {"slo_ms": 5, "low": 0.9, "high": 0.8}, {"slo_ms": 5, "hold_s": -1}):
        with pytest.raises(ValueError):
            TargetSettings(**bad)


def test_measurements_expire_and_the_target_returns_to_the_top():
    clock = Clock()
    t = make(clock)
    assert t.update(120) == 2
    clock.now = 5.5  # every measurement is older than fresh_s (5 s): that load has passed
    assert t.batch_seconds(0) is None and t.predicted_ms(0, 120) == 0.0
    assert t.update(0) == 2  # calm from now on
    clock.now = 7.6
    assert t.update(0) == 0


def test_concurrency_limit_shrinks_when_late_and_grows_when_binding():
    from exitsearch.serve.target import ConcurrencyLimit

    clock = Clock()
    limit = ConcurrencyLimit(
        TargetSettings(100.0), initial=10, maximum=12, window_s=1.0, clock=clock
    )
    assert limit.admit(9) and not limit.admit(10)
    for _ in range(50):
        limit.record(150.0)  # p99 over 80 ms
    clock.now = 1.0
    limit.adjust()
    assert int(limit.limit) == 7 and not limit.admit(7)
    for now in (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0):
        assert not limit.admit(int(limit.limit))  # the limit is reached...
        limit.record(10.0)  # ...and answers are fast
        clock.now = now
        limit.adjust()
    assert int(limit.limit) == 12  # grew by one per window, up to the maximum
    clock.now = 20.0
    limit.adjust()  # an idle window changes nothing
    assert int(limit.limit) == 12
