"""The ``pause`` section of a search space: parsing, the grid, one-line errors."""

from __future__ import annotations

import pytest

from exitsearch.errors import SearchSpaceError
from exitsearch.pausing import PauseConfig
from exitsearch.search.space import (
    MAX_PAUSE_GRID,
    PauseOptions,
    load_search_space,
    parse_search_space,
)

BASE = {"heads": {"linear": {}}, "criteria": ["confidence"]}


def space(pause):  # type: ignore[no-untyped-def]
    return parse_search_space({**BASE, "pause": pause}, source="s.yaml")


def test_the_issues_example_parses_into_its_grid():
    s = space(
        {"layers": [3, 5, 7], "taus": [0.0, 0.2, 0.4, 0.6], "mode": "entropy", "max_layers": 2}
    )
    assert s.pause == PauseOptions((3, 5, 7), (0.0, 0.2, 0.4, 0.6), "entropy", 2, None)
    grid = s.pause.grid()
    # no pausing, 3 layers x 3 taus alone, 3 pairs of layers x 3 x 3 taus
    assert len(grid) == s.pause.grid_size == 1 + 9 + 27
    assert grid[0] == PauseConfig() and len({c.key for c in grid}) == len(grid)
    # taus are proportions of the tokens still processed (the paper's Table 1 reading)
    assert PauseConfig.from_relative({3: 0.4, 5: 0.6}) in grid
    assert PauseConfig({3: 0.4, 5: 0.36}) in grid
    assert all(len(c) <= 2 for c in grid)


def test_defaults_and_ranges():
    s = space({"layers": {"low": 2, "high": 6, "step": 2}})
    assert s.pause.layers == (2, 4, 6) and s.pause.taus == (0.0, 0.2, 0.4, 0.6)
    assert s.pause.mode == "entropy" and s.pause.max_layers is None
    assert len(s.pause.grid()) == 4**3  # every combination of three layers
    assert space({"layers": [3], "taus": [0.5], "trials": 5}).pause.trials == 5


def test_pause_round_trips_and_other_spaces_keep_their_plain_form():
    s = space({"layers": [3, 5], "taus": [0, 0.5], "mode": "random", "max_layers": 1})
    again = parse_search_space(s.to_dict(), source="s.yaml")
    assert again.pause == s.pause and again.to_dict() == s.to_dict()
    # a space without the section has no `pause` key, so its cache keys did not change
    assert "pause" not in parse_search_space(BASE).to_dict()
    assert parse_search_space(BASE).pause is None


def test_the_shipped_paumer_space():
    s = load_search_space("paumer")
    assert s.name == "paumer" and s.pause is not None
    assert len(s.pause.grid()) == 37
    assert {h.location for h in s.candidate_heads(12)} == {2, 4, 6, 8, 10}
    s.pause.check(12)
    with pytest.raises(SearchSpaceError, match=r"pause\.layers: \[5, 7\] lie outside 1\.\.4"):
        s.pause.check(5, s.source)


@pytest.mark.parametrize(
    ("pause", "message"),
    [
        ([3, 5], "s.yaml: pause: must be a mapping"),
        ({"taus": [0.2]}, "s.yaml: pause.layers: missing"),
        ({"layers": [0, 3]}, "s.yaml: pause.layers: got 0; allowed: integers >= 1"),
        ({"layers": "3"}, "s.yaml: pause.layers: got '3'; allowed: a list"),
        (
            {"layers": [3], "taus": [0.2, 1.0]},
            r"s.yaml: pause.taus: got 1; allowed: numbers in \[0, 1\)",
        ),
        ({"layers": [3], "taus": []}, "s.yaml: pause.taus: must be a non-empty list"),
        ({"layers": [3], "taus": ["x"]}, "s.yaml: pause.taus: must be a number, got 'x'"),
        ({"layers": [3], "taus": [0.0]}, "s.yaml: pause.taus: holds no proportion above 0"),
        (
            {"layers": [3], "mode": "greedy"},
            "s.yaml: pause.mode: got 'greedy'; allowed: entropy, random",
        ),
        ({"layers": [3], "max_layers": 0}, "s.yaml: pause.max_layers: must be an integer >= 1"),
        ({"layers": [3], "trials": "many"}, "s.yaml: pause.trials: must be an integer >= 1"),
        (
            {"layers": [3], "tau": [0.2]},
            "s.yaml: pause.tau: unknown key; allowed: layers, max_layers",
        ),
        (
            {"layers": list(range(1, 12)), "taus": [0, 0.2, 0.4, 0.6, 0.8]},
            f"s.yaml: pause: the grid holds 48828125 configurations, more than {MAX_PAUSE_GRID}",
        ),
    ],
)
def test_errors_name_the_file_the_key_and_what_is_allowed(pause, message):  # type: ignore[no-untyped-def]
    with pytest.raises(SearchSpaceError, match=message) as info:
        space(pause)
    assert "\n" not in str(info.value)


def test_a_large_grid_is_fine_when_sampled():
    s = space({"layers": list(range(1, 12)), "taus": [0, 0.2, 0.4, 0.6, 0.8], "trials": 20})
    assert s.pause.trials == 20 and s.pause.grid_size == 5**11
