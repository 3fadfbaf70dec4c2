"""Metrics: Prometheus text that a scraper parses, summed over replicas."""

from __future__ import annotations

import re

from exitsearch.serve.metrics import LATENCY_BUCKETS, Metrics, merge, render

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
