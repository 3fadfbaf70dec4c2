"""Metrics: Prometheus text that a scraper parses, summed over replicas."""

from __future__ import annotations

import re

from exitsearch.serve.metrics import LATENCY_BUCKETS, Metrics, Reports, merge, render

LINE = re.compile(r'^[a-z_]+(\{[a-z_]+="[^"]*"(,[a-z_]+="[^"]*")*\})? -?[0-9.e+-]+$')


def parse(text: str) -> dict[str, float]:
    out = {}
    for line in text.splitlines():
        if line.startswith("#"):
            assert line.startswith(("# HELP ", "# TYPE "))
            continue
        assert LINE.match(line), line
        key, value = line.rsplit(" ", 1)
        out[key] = float(value)
    return out


def test_two_replicas_sum_and_keep_their_gauges():
    a, b = Metrics(), Metrics()
    a.inc("exitsearch_requests_total", code=200)
    a.inc("exitsearch_requests_total", code=200)
    b.inc("exitsearch_requests_total", code=200)
    b.inc("exitsearch_requests_total", code=415)
    for m, values in ((a, (0.004, 0.02)), (b, (0.3, 9.0))):
        for v in values:
            m.observe("exitsearch_request_latency_seconds", v)
    a.set("exitsearch_operating_point", 3)
    b.set("exitsearch_operating_point", 5)
    got = parse(render(merge({"r1": a.snapshot(), "r2": b.snapshot()})))
    assert got['exitsearch_requests_total{code="200"}'] == 3
    assert got['exitsearch_requests_total{code="415"}'] == 1
    assert got['exitsearch_operating_point{replica="r1"}'] == 3
    assert got['exitsearch_operating_point{replica="r2"}'] == 5
    name = "exitsearch_request_latency_seconds"
    assert got[f"{name}_count"] == 4 and abs(got[f"{name}_sum"] - 9.324) < 1e-9
    buckets = [got[f'{name}_bucket{{le="{float(b)!r}"}}'] for b in LATENCY_BUCKETS]
    assert buckets == sorted(buckets)  # cumulative
    assert got[f'{name}_bucket{{le="0.005"}}'] == 1 and got[f'{name}_bucket{{le="0.3"}}'] == 3
    assert got[f'{name}_bucket{{le="+Inf"}}'] == 4  # 9 s is above every bound


def test_label_values_are_escaped():
    m = Metrics()
    m.inc("exitsearch_exits_total", exit='a"b\\c')
    text = render(merge({"r": m.snapshot()}))
    assert 'exit="a\\"b\\\\c"' in text


def test_replicas_gone_keep_their_counts_and_lose_their_gauges():
    now = [0.0]
    reports = Reports(stale_s=30, fold_s=600, clock=lambda: now[0])

    def replica(images: int, queue: float) -> dict:
        m = Metrics()
        m.inc("exitsearch_images_total", images)
        m.observe("exitsearch_batch_size", images)
        m.set("exitsearch_queue_depth", queue)
        return m.snapshot()

    def shown() -> dict[str, float]:
        return parse(render(merge(reports.report())))

    reports.put("a", replica(5, 1))
    reports.put("b", replica(7, 2))
    assert shown()["exitsearch_images_total"] == 12
    # b is stopped (an update, a scale-down): its gauges go after 30 s, its counts stay
    now[0] = 20
    reports.put("a", replica(9, 3))
    now[0] = 40
    assert set(reports.live()) == {"a"}
    text = shown()
    assert text["exitsearch_images_total"] == 16 and text["exitsearch_batch_size_count"] == 2
    assert 'exitsearch_queue_depth{replica="a"}' in text
    assert not any('replica="b"' in k for k in text)
    # a replica silent for a long batch and heard from again counts once, with its gauges
    reports.put("b", replica(8, 4))
    assert set(reports.live()) == {"a", "b"} and shown()["exitsearch_images_total"] == 17
    # gone for 10 min: folded into one total; two folds add up; the sums never go down
    now[0] = 700
    reports.put("c", replica(1, 0))
    assert shown()["exitsearch_images_total"] == 18
    assert set(reports.report()) == {"c", Reports.GONE}
    now[0] = 1400
    reports.put("d", replica(2, 0))
    text = shown()
    assert text["exitsearch_images_total"] == 20 and text["exitsearch_batch_size_count"] == 4
    assert set(reports.report()) == {"d", Reports.GONE} and set(reports.live()) == {"d"}
