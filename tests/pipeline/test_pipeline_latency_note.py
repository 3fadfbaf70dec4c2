"""A budget in milliseconds says when the latency table's parts do not add up to the whole."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from exitsearch.budget import parse_budget
from exitsearch.pipeline.run import resolve_budget
from exitsearch.profile import LatencyTable
from exitsearch.profile.latency import PARTS_TOLERANCE, parts_note


def _table(full_ms: float, batch: int = 4) -> LatencyTable:
    # parts: 0.4 + 4 x 0.3 + 0.4 = 2.0 ms per batch of 4, 0.5 ms per sample
    return LatencyTable("m", "cpu", "cpu", batch, 0.4, [0.3] * 4, 0.4, full_ms, 2, 10)


@pytest.mark.parametrize(
    ("full_ms", "word"),
    [
        (2.0, None),
        (2.0 * (1 + PARTS_TOLERANCE * 0.9), None),
        (10.6, "understated"),
        (1.5, "overstated"),
    ],
)
def test_parts_that_miss_the_whole_get_a_note(full_ms, word):
    note = parts_note(_table(full_ms).per_sample())
    if word is None:
        assert note is None
    else:
        assert word in note and "parts sum to 0.5 ms per sample" in note


def test_a_millisecond_budget_carries_the_note():
    costs = SimpleNamespace(latency=_table(10.6))
    _, constraint, note = resolve_budget(parse_budget("0.4ms"), "mean", costs, 1.0, min_exit_ms=0.1)
    assert constraint.ms == pytest.approx(0.4)
    assert note is not None and "a plain forward of the backbone took 2.65 ms" in note
    # above the parts' sum, both notes
    _, _, note = resolve_budget(parse_budget("0.6ms"), "mean", costs, 1.0, min_exit_ms=0.1)
    assert "understated" in note and "above the backbone's own 0.5 ms" in note
    # parts that add up: no note below the backbone's cost
    _, _, note = resolve_budget(
        parse_budget("0.4ms"), "mean", SimpleNamespace(latency=_table(2.0)), 1.0, 0.1
    )
    assert note is None
