"""The latency target: down the ladder when the queue puts p99 at risk, back up when calm,
refuse what even the cheapest point cannot answer in time."""

from __future__ import annotations

import time

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
    assert limit.take_refused() == 2 and limit.take_refused() == 0  # 10 and 7 were refused
    for now in (2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0):
        assert not limit.admit(int(limit.limit))  # the limit is reached...
        limit.record(10.0)  # ...and answers are fast
        clock.now = now
        limit.adjust()
    assert int(limit.limit) == 12  # grew by one per window, up to the maximum
    clock.now = 20.0
    limit.adjust()  # an idle window changes nothing
    assert int(limit.limit) == 12


def test_late_requests_one_at_a_time_leave_the_concurrency_limit_be():
    from exitsearch.serve.target import ConcurrencyLimit

    clock = Clock()
    limit = ConcurrencyLimit(TargetSettings(100.0), initial=32, window_s=1.0, clock=clock)
    for now in range(1, 6):  # a large request alone in the replica each window, late
        assert limit.admit(0)
        limit.record(140.0)
        clock.now = float(now)
        limit.adjust()
    assert int(limit.limit) == 32
    assert limit.admit(0) and limit.admit(1)  # two at once, late: now it is concurrency
    limit.record(140.0)
    limit.record(150.0)
    clock.now = 6.0
    limit.adjust()
    assert int(limit.limit) == 22


def test_each_request_in_the_replica_adds_what_the_loop_spends_on_one():
    t = make(Clock())
    assert t.request_ms(5) == 0.0  # nothing measured yet
    t.observe_requests(100, 0.4)  # 4 ms of the event loop's CPU per request, model aside
    assert t.request_ms(10) == pytest.approx(40.0)
    t.observe_requests(0, 1.0)  # no request: no measurement
    t.observe_requests(50, 0.4)  # 8 ms each now: the average moves by `smoothing` (0.2)
    assert t.request_ms(1) == pytest.approx(0.8 * 4.0 + 0.2 * 8.0)
    t.observe_requests(100, 0.4)
    assert t.predicted_ms(2, 0, 10) == pytest.approx(t.model_ms(2, 0) + t.request_ms(10))
    per = t.request_ms(1)
    # point 2 alone admits 100 queued images (11 batches of 4.5 ms, 49.5 ms); with as many
    # requests in the replica as fit in the other 50.5 ms, and not one more
    fit = int(50.5 / per)
    assert t.admit(100, fit) and not t.admit(100, fit + 1)
    # the same queue moves down the ladder once the requests' own part is counted: 30 queued
    # images take 48 ms at point 0 and 28 ms at point 1, against `high`, 80 ms
    assert t.update(30) == 0
    assert t.update(30, int(31 / per)) == 0
    assert t.update(30, int(32 / per) + 1) == 1
    assert t.update(30, int(52 / per) + 1) == 2


def test_admission_keeps_the_last_fits_after_they_expire():
    clock = Clock()
    t = make(clock)
    assert not t.admit(400)
    clock.now = 60.0  # a quiet minute: the point switching forgets the load...
    assert t.predicted_ms(2, 400) == 0.0
    # ...but a burst that starts now is not admitted blind
    assert not t.admit(400) and t.admit(100)


def _burn(seconds: float) -> float:
    """Spend about ``seconds`` of this thread's CPU; how much it spent."""
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        sum(range(1000))
    return time.thread_time() - start


def test_loop_cost_is_the_threads_cpu_outside_the_model_per_request():
    from exitsearch.serve.target import LoopCost

    clock = Clock()
    t = make(clock)
    loop = LoopCost(least=8, longest_s=5.0, clock=clock)
    loop.measure(t)  # starts counting
    spent = _burn(0.05)
    loop.requests, loop.model = 10, 0.02  # 10 requests; the model's batches took 20 ms of it
    time.sleep(0.05)  # waiting is not CPU
    loop.measure(t)
    assert t.request_ms(1) == pytest.approx(1000 * (spent - 0.02) / 10, abs=0.5)
    # too few requests: it keeps counting rather than divide idle noise by one or two...
    before = t.request_ms(1)
    loop.requests = 3
    _burn(0.02)
    loop.measure(t)
    assert t.request_ms(1) == before and loop.requests == 3
    # ...for at most `longest_s`, then drops what it had
    clock.now = 6.0
    loop.measure(t)
    assert t.request_ms(1) == before and loop.requests == 0


def test_loop_cost_leaves_out_what_the_loop_spends_without_requests():
    """The loop's periodic work (reports, Ray Serve's own) is no request's cost: at light load
    it would otherwise be divided among the few requests there are."""
    from exitsearch.serve.target import LoopCost

    clock = Clock()
    t = make(clock)
    loop = LoopCost(least=8, longest_s=5.0, clock=clock)
    loop.measure(t)
    _burn(0.03)  # start-up work in the first span: not taken for idle
    clock.now = 6.0
    loop.measure(t)
    assert loop.idle_per_s is None
    spent = _burn(0.06)  # 6 s without a request: 10 ms of CPU a second
    clock.now = 12.0
    loop.measure(t)
    assert loop.idle_per_s == pytest.approx(spent / 6.0, rel=0.2)
    _burn(0.12)  # a busier span without requests does not raise it (the least counts)
    clock.now = 18.0
    loop.measure(t)
    assert loop.idle_per_s == pytest.approx(spent / 6.0, rel=0.2)
    # 10 requests in 2 s: the 2 s of periodic work come off what the loop spent
    total = _burn(0.07)
    loop.requests = 10
    clock.now = 20.0
    loop.measure(t)
    expected = (total - 2.0 * loop.idle_per_s) / 10
    assert t.request_ms(1) == pytest.approx(1000 * expected, abs=0.6)
    assert t.request_ms(1) < 1000 * total / 10 - 1.0  # not all of it


def test_the_most_images_a_request_may_hold_to_be_answered_in_time_alone():
    # the cheapest point: a batch of n takes 2 ms + 0.25 ms per image, 10 images at most
    t = make(Clock(), slo=12.5)
    # within 0.8 x 12.5 = 10 ms: 20 images, two batches of 10, 4.5 ms each (9 ms); 21 need a
    # third (13.5 ms)
    assert t.most_images(64) == 20
    assert t.admit(19, 1) and not t.admit(20, 1)  # 20 images: 9 ms; 21: 13.5, over 12.5
    assert t.most_images(5) == 5
    t.observe_requests(10, 0.1)  # the loop adds 10 ms a request: not even one image fits
    assert t.most_images(64) == 0


def test_decoding_is_a_line_in_pixels_per_image():
    t = make(Clock(), slo=10.0)
    assert t.decode_ms(4) == 0.0  # nothing decoded yet
    # an image of x pixels takes 0.1 ms + 1 ms per megapixel to decode
    for images, x in ((1, 50_000), (4, 1_000_000), (2, 250_000), (8, 50_000)):
        t.observe_decode(images, images * x, images * (1e-4 + 1e-9 * x))
    assert t.decode_ms(1, 1_000_000) == pytest.approx(1.1)
    assert t.decode_ms(10, 10 * 50_000) == pytest.approx(10 * 0.15)
    # not told the size: the usual one (a blend of those seen), not the warm-up's large one
    assert 0.15 < t.decode_ms(1) < 1.1
    t.observe_decode(1, 4_000_000, 0.0041, usual=False)
    assert t.decode_ms(1, 4_000_000) == pytest.approx(4.1)
    assert 0.15 < t.decode_ms(1) < 1.1
    t.observe_decode(0, 0, 1.0)  # nothing to learn from
    assert t.decode_ms(1, 1_000_000) == pytest.approx(1.1)


def test_the_most_pixels_one_image_alone_may_have():
    # the cheapest point: one image takes 2.25 ms of batch; decoding 0.1 ms + 1 ms a megapixel
    t = make(Clock(), slo=10.0)
    assert t.most_pixels(share=1.0) is None  # nothing decoded yet
    for images, x in ((1, 50_000), (4, 1_000_000), (2, 250_000)):
        t.observe_decode(images, images * x, images * (1e-4 + 1e-9 * x))
    most = t.most_pixels(share=1.0)  # 10 - 2.25 - 0.1 ms left: 7.65 megapixels
    assert most == pytest.approx(7_650_000, rel=1e-6)
    assert t.alone_ms(1, most) == pytest.approx(10.0, rel=1e-6)
    assert t.most_images(1, most - 1_000, share=1.0) == 1
    assert t.most_images(1, most + 1_000, share=1.0) == 0
    assert t.most_pixels() == pytest.approx(5_650_000, rel=1e-6)  # within 0.8 x 10 ms


def test_a_requests_own_time_and_decoding_count_in_its_admission():
    # the cheapest point: a batch of n takes 2 ms + 0.25 ms per image, 10 images at most
    t = make(Clock(), slo=12.5)
    assert t.admit(19, 1) and not t.admit(19, 1, own_ms=4.0)  # 9 ms of batches + 4 its own
    assert t.most_images(64) == 20  # nothing decoded yet: the batches alone (9 ms <= 10)
    t.observe_decode(1, 1_000, 0.0002)  # 0.2 ms an image
    # 11 to 20 images: two batches, 9 ms, and 2.2 ms or more to decode; 10: 4.5 + 2
    assert t.alone_ms(20, 1_000) == pytest.approx(9.0 + 4.0)
    assert t.alone_ms(10, 1_000) == pytest.approx(4.5 + 2.0)
    assert t.most_images(64, 1_000) == t.most_images(64) == 10


def test_the_most_images_at_the_target_itself_when_none_fits_the_margin():
    # alone, n images take 2 + 0.25 n ms of batch and 0.4 ms of the loop: one image 2.65 ms,
    # over 0.8 x 3 ms; two 2.9 ms, within 3; three 3.15 ms
    t = make(Clock(), slo=3.0)
    t.observe_requests(10, 0.004)
    assert t.most_images(20) == 0 and t.most_images(20, share=1.0) == 2


def test_the_decoding_line_keeps_its_slope_after_one_size_for_long():
    t = make(Clock())
    t.observe_decode(1, 1_000, 0.0001)  # warm-up: 0.1 ms for 1,000 pixels...
    t.observe_decode(1, 1_000_000, 0.010)  # ...and 10 ms for a megapixel
    for i in range(400):  # then only small images, their times a little noisy
        t.observe_decode(1, 1_000, 0.0001 * (1.1 if i % 2 else 0.9))
    # a megapixel still about 10 ms, not 1,000 x the small image's time (100 ms)
    assert 8.0 < t.decode_ms(1, 1_000_000) < 12.0
    assert t.decode_ms(1, 1_000) == pytest.approx(0.1, rel=0.15)


def test_moves_up_only_when_the_dearer_point_would_keep_up_with_arrivals():
    clock = Clock()
    t = make(clock)
    assert t.update(120) == 2  # a burst moved it to the cheapest point
    assert t.load(0) == 0.0  # no arrivals measured yet
    # 300 requests a second, 1 image each, 1 ms of the loop per request; batches of 10 images
    # take 12 ms at point 0 (1.2 ms an image): 300 x 2.2 ms = 0.66 of the replica's time
    t.observe_requests(100, 0.1)
    for n in [10] * 40:
        t.observe(2, n, 0.002 + 0.00025 * n)
    t.observe_arrivals(150, 0.5)
    assert t.load(0) == pytest.approx(300 * (0.001 + 0.0012), rel=0.01)
    # calm (a short queue predicts little) and the load fits under max_load (0.8): back up
    clock.now = 1.0
    assert t.update(0) == 2
    clock.now = 3.1
    assert t.update(0) == 0
    # 500 requests a second would take 1.1 at point 0 and 0.85 at point 1 (0.7 ms an image,
    # point 2's line scaled by FLOPs): a short queue alone does not take it back up
    assert t.update(120) == 2
    for _ in range(60):
        t.observe_arrivals(250, 0.5)
    assert t.load(0) > 0.8 and t.load(1) > 0.8
    for now in (4.0, 6.5, 9.0):
        clock.now = now
        assert t.update(0) == 2


def test_steps_down_one_point_at_a_time_and_stops_at_the_cheapest():
    t = make(Clock())
    assert t.point == 0 and t.step_down() == 1 and t.step_down() == 2
    assert t.step_down() == 2 and t.switches == 2


def test_a_step_down_crosses_close_points_at_once():
    """A ladder of points 5 % of the backbone apart: each step cuts the cost by a fifth at
    least (one point at a time, 14 steps of 0.5 s would take 7 s to reach the cheapest)."""
    costs = [100.0 - 5 * i for i in range(15)]  # 100, 95, ..., 30
    accs = [0.9 - 0.01 * i for i in range(15)]
    steps = ladder(costs, accs, 0)
    assert steps == list(range(15))
    t = LatencyTarget(TargetSettings(100.0), steps, costs)
    seen = [t.step_down() for _ in range(6)]
    # <= 80, <= 64, <= 48, <= 36, then 28 is below every point: the cheapest
    assert [costs[p] for p in seen] == [80.0, 60.0, 45.0, 35.0, 30.0, 30.0]
    assert t.switches == 5
