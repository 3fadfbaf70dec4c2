"""The paper-003 report: skyline, metric drop at a speed-up, files written, extra points."""

from __future__ import annotations

import csv

import pytest

from exitsearch._io import read_json
from exitsearch.pausing import ReportPoint, write_paumer_report
from exitsearch.pausing.report import skyline, speedup_drops


def _p(series: str, pause: str, metric: float, ips: float, **kw) -> ReportPoint:
    return ReportPoint(series, pause, kw.pop("mode", "entropy"), metric, ips, 1000, **kw)


BASE = _p("no pausing", "", 0.80, 100.0)
ENTROPY = [
    _p("entropy", "", 0.81, 98.0),
    _p("entropy", "3:0.2", 0.79, 130.0),
    _p("entropy", "5:0.4", 0.77, 155.0),  # the best at least x1.5 as fast
    _p("entropy", "3:0.4", 0.70, 160.0),
    _p("entropy", "3:0.6", 0.74, 150.0),  # beaten by 5:0.4 on both axes
    _p("entropy", "5:0.8", 0.60, 190.0),
]


def test_skyline_keeps_the_points_nobody_beats():
    assert [p.pause for p in skyline(ENTROPY)] == ["", "3:0.2", "5:0.4", "3:0.4", "5:0.8"]


def test_drop_at_a_speedup_is_a_skyline_query():
    drops = speedup_drops(ENTROPY, BASE)
    assert drops["+50%"]["pause"] == "5:0.4"
    assert drops["+50%"]["drop"] == pytest.approx(0.03)
    assert drops["+50%"]["relative_drop"] == pytest.approx(0.03 / 0.80)
    assert drops["+50%"]["speedup"] == pytest.approx(1.55)
    assert drops["+100%"] == {"reached": False}


def test_report_files_with_extra_points(tmp_path):
    extra = [_p("search front", "3:0.2", 0.785, 140.0, info={"exits": "linear@4"})]
    doc = write_paumer_report([BASE, *ENTROPY], tmp_path, extra=extra, settings={"metric": "mIoU"})
    assert {f.name for f in tmp_path.iterdir()} == {
        "paumer_report.json",
        "paumer_report.csv",
        "paumer_report.png",
    }
    assert read_json(tmp_path / "paumer_report.json") == doc
    assert doc["baseline"]["series"] == "no pausing" and doc["metric"] == "mIoU"
    assert set(doc["summary"]) == {"entropy", "search front"}
    rows = list(csv.DictReader((tmp_path / "paumer_report.csv").open()))
    assert len(rows) == 1 + len(ENTROPY) + 1
    last = rows[-1]
    assert last["series"] == "search front" and last["extra"] == "1"
    assert float(last["speedup"]) == pytest.approx(1.4) and last["pause"] == "3:0.2"
    assert rows[0]["pause"] == "none" and float(rows[0]["drop"]) == 0.0
    assert (tmp_path / "paumer_report.png").read_bytes()[:4] == b"\x89PNG"
