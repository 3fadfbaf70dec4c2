"""Search spaces from YAML: the shipped ones load, malformed ones fail with the file and key."""

from __future__ import annotations

import contextlib
import itertools
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from exitsearch.errors import SearchSpaceError
from exitsearch.heads import list_heads
from exitsearch.search.space import (
    Placement,
    builtin_spaces,
    load_search_space,
    parse_search_space,
)

SHIPPED = ("default", "lgvit", "multiexit-vit", "paumer", "uniform")


def test_the_shipped_spaces_are_found():
    assert set(builtin_spaces()) == set(SHIPPED)


@pytest.mark.parametrize("name", SHIPPED)
def test_every_shipped_space_loads_and_has_candidates(name):
    space = load_search_space(name)
    assert space.name == name
    assert space.source == str(builtin_spaces()[name])
    heads = space.candidate_heads(12)
    assert heads
    assert len({s.key for s in heads}) == len(heads)
    assert all(1 <= s.location <= 11 for s in heads)
    # the plain form round-trips (it feeds the cache keys)
    again = parse_search_space(space.to_dict(), source=space.source)
    assert again.candidate_heads(12) == heads
    assert again.to_dict() == space.to_dict()


def test_default_space_candidates_by_hand():
    space = load_search_space("default")
    heads = space.candidate_heads(12)
    # 12 plain types (vit, mixer, resmlp with their ratio-2 variants, tokenmap) at 11
    # locations, lph k in {0, 3, 5} at 1..6, gah s in {1, 2, 3} at 7..11
    assert len(heads) == 12 * 11 + 3 * 6 + 3 * 5 == 165
    assert {s.location for s in heads if s.type == "lph"} == set(range(1, 7))
    assert {s.location for s in heads if s.type == "gah"} == set(range(7, 12))
    assert all(s.uncertainty for s in heads)
    assert space.placement is Placement.FREE


def test_lgvit_space_trains_exactly_the_values_its_mappings_produce():
    space = load_search_space("lgvit")
    heads = space.candidate_heads(12)
    trained = {(s.location, s.type, next(iter(s.params.values()))) for s in heads}
    # every mapping the space allows, over every choice of exits, by brute force
    produced = set()
    for mapping in space.mappings():
        half = [m for m in range(1, 12) if mapping.covers(m, 12)]
        for r in range(1, len(half) + 1):
            for chosen in itertools.combinations(half, r):
                for m, v in mapping.assign(list(chosen)).items():
                    produced.add((m, mapping.head_type, v))
    assert trained == produced
    # a mapped k of 1 is trained (a 1x1 depth-wise convolution), windows start at 2
    assert (4, "lph", 1) in trained
    assert min(v for _, t, v in trained if t == "gah") == 2


def test_lgvit_placement_takes_its_heads_as_a_list_too():
    # same mappings as the shipped lgvit space (its defaults), so the same heads to train
    listed = parse_search_space({"placement": "lgvit", "heads": ["lph", "gah"]})
    assert listed.candidate_heads(12) == load_search_space("lgvit").candidate_heads(12)


def test_spaces_load_by_path_too(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text(
        "heads: {linear: {}, mlp: {half: deep}}\ncriteria: confidence\nlocations: [2, 3, 5]\n"
    )
    space = load_search_space(path)
    assert space.name == "mine"  # defaults to the file's stem
    # the deep half of 6 blocks is m > 3: mlp only at 5
    assert [s.key for s in space.candidate_heads(6)] == [
        "linear@2+u",
        "linear@3+u",
        "linear@5+u",
        "mlp@5+u",
    ]
    assert space.criteria == ("confidence",)


# ----------------------------------------------------------------------- malformed files
BASE: dict[str, Any] = {"heads": {"linear": {}, "mlp": {}}, "criteria": ["confidence"]}

MALFORMED = [
    ("unknown top-level key", {**BASE, "budget": "8GFLOPs"}, "budget"),
    ("unknown head type", {"heads": {"linear": {}, "transformer": {}}}, "heads.transformer"),
    ("unknown head option", {"heads": {"linear": {"depth": 2}}}, "heads.linear.depth"),
    ("k on a head without kernel", {"heads": {"linear": {"k": [3]}}}, "heads.linear.k"),
    ("criteria not a list", {**BASE, "criteria": 3}, "criteria"),
    ("unknown criterion", {**BASE, "criteria": ["margin"]}, "criteria"),
    ("uncertainty not a bool", {**BASE, "uncertainty": "yes"}, "uncertainty"),
    ("range not a mapping", {**BASE, "confidence": 0.5}, "confidence"),
    ("range bound not a number", {**BASE, "entropy": {"low": "zero"}}, "entropy.low"),
    ("range outside [0, 1]", {**BASE, "confidence": {"low": 0.2, "high": 1.5}}, "confidence"),
    ("range reversed", {**BASE, "confidence": {"low": 0.9, "high": 0.5}}, "confidence"),
    ("patience bound not an integer", {**BASE, "patience": {"low": 1.5}}, "patience.low"),
    ("max_exits zero", {**BASE, "max_exits": 0}, "max_exits"),
    ("name not a string", {**BASE, "name": 7}, "name"),
    ("placement unknown", {**BASE, "placement": "random"}, "placement"),
    ("locations garbage", {**BASE, "locations": "some"}, "locations"),
    ("location zero", {**BASE, "locations": [0, 2]}, "locations"),
    ("empty criteria", {**BASE, "criteria": []}, "criteria"),
    ("empty thresholds", {**BASE, "thresholds": {"choices": []}}, "thresholds"),
    (
        "empty kernel choices",
        {**BASE, "kernel_mapping": {"k_first": {"choices": []}}},
        "kernel_mapping.k_first",
    ),
    ("empty head kernel list", {"heads": {"lph": {"k": []}}}, "heads.lph.k"),
    ("even head kernel", {"heads": {"lph": {"k": [0, 3, 4]}}}, "heads.lph.k"),
    ("even mapped kernel", {**BASE, "kernel_mapping": {"k_last": [2]}}, "kernel_mapping.k_last"),
    ("window below one", {"heads": {"gah": {"s": [0, 2]}}}, "heads.gah.s"),
    ("half invalid", {"heads": {"linear": {"half": "middle"}}}, "heads.linear.half"),
    (
        "lgvit with other heads",
        {"placement": "lgvit", "heads": {"lph": {}, "gah": {}, "linear": {}}},
        "heads",
    ),
    ("lgvit without gah", {"placement": "lgvit", "heads": {"lph": {}}}, "heads"),
    (
        "lgvit with a hand-given kernel list",
        {"placement": "lgvit", "heads": {"lph": {"k": [0, 3]}, "gah": {}}},
        "heads.lph.k",
    ),
    (
        "lgvit with a global head in the shallow half",
        {"placement": "lgvit", "heads": {"lph": {}, "gah": {"half": "shallow"}}},
        "heads.gah.half",
    ),
    (
        "a window below LGViT's minimum of 2",
        {**BASE, "window_mapping": {"s_first": [1]}},
        "window_mapping.s_first",
    ),
    (
        "uncertainty criterion without predictors",
        {**BASE, "criteria": ["confidence", "uncertainty"], "uncertainty": False},
        "criteria",
    ),
    (
        "unknown mapping key",
        {**BASE, "window_mapping": {"s_middle": [2]}},
        "window_mapping.s_middle",
    ),
    ("heads missing", {"criteria": ["confidence"]}, "heads"),
    ("heads empty", {"heads": {}}, "heads"),
]


@pytest.mark.parametrize(("doc", "key"), [m[1:] for m in MALFORMED], ids=[m[0] for m in MALFORMED])
def test_malformed_file_names_file_and_key(tmp_path, doc, key):
    path = tmp_path / "space.yaml"
    path.write_text(yaml.safe_dump(doc))
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    message = str(info.value)
    assert message.startswith(f"{path}: {key}: "), message
    assert "\n" not in message


def test_locations_beyond_the_depth_fail_when_resolved(tmp_path):
    path = tmp_path / "deep.yaml"
    path.write_text(yaml.safe_dump({**BASE, "locations": [2, 6, 12]}))
    space = load_search_space(path)  # the depth is not known yet
    assert space.candidate_locations(13) == [2, 6, 12]
    with pytest.raises(SearchSpaceError) as info:
        space.candidate_locations(12)
    message = str(info.value)
    assert message.startswith(f"{path}: locations: ")
    assert "[12]" in message and "1..11" in message
    with pytest.raises(SearchSpaceError, match="locations"):
        space.candidate_heads(6)


def test_shallow_heads_with_no_shallow_location_leave_no_candidate(tmp_path):
    path = tmp_path / "none.yaml"
    path.write_text(yaml.safe_dump({"heads": {"mlp": {"half": "shallow"}}, "locations": [9, 10]}))
    with pytest.raises(SearchSpaceError, match=f"{path}: no candidate head"):
        load_search_space(path).candidate_heads(12)


@pytest.mark.parametrize(
    ("text", "what"),
    [
        ("- linear\n- mlp\n", "mapping"),
        ("just a string\n", "mapping"),
        ("", "mapping"),  # an empty file is None
        ("heads: [linear\n", "not valid YAML"),
        ("heads: {linear: {}}\n  criteria: - x\n", "not valid YAML"),
    ],
)
def test_non_mapping_and_invalid_yaml_name_the_file(tmp_path, text, what):
    path = tmp_path / "broken.yaml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError) as info:
        load_search_space(path)
    assert str(info.value).startswith(f"{path}: ")
    assert what in str(info.value)


def test_binary_file_and_unknown_name(tmp_path):
    path = tmp_path / "binary.yaml"
    path.write_bytes(b"\xff\xfe\x00heads")
    with pytest.raises(SearchSpaceError, match=str(path)):
        load_search_space(path)
    with pytest.raises(SearchSpaceError) as info:
        load_search_space("no-such-space")
    for name in SHIPPED:
        assert name in str(info.value)


# ------------------------------------------------------------------------ property tests
_TOP = [
    "name",
    "description",
    "locations",
    "placement",
    "heads",
    "criteria",
    "thresholds",
    "max_exits",
    "num_exits",
    "uncertainty",
    "confidence",
    "entropy",
    "patience",
    "uncertainty_threshold",
    "kernel_mapping",
    "window_mapping",
]
_WORDS = sorted(
    {
        *_TOP,
        *("half", "k", "s", "params", "low", "high", "step", "log", "choices"),
        *("k_first", "k_last", "s_first", "s_last", "all", "free", "uniform", "lgvit"),
        *("shallow", "deep", "shared", "per_exit"),
        *list_heads(),
    }
)
_SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(-(10**6), 10**6)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=6)
    | st.sampled_from(_WORDS)
)
_KEYS = st.sampled_from(_WORDS) | st.text(max_size=6)
# YAML-shaped documents with string keys, lists of scalars and integers a float can hold; the
# documents outside this (mixed key types, lists in lists, huge integers) raise other errors:
# see test_yaml_garbage_found_by_hand_raises_search_space_error below.
_STRING_KEYED = st.recursive(
    _SCALARS,
    lambda inner: st.lists(_SCALARS, max_size=5) | st.dictionaries(_KEYS, inner, max_size=5),
    max_leaves=25,
)
# a valid document with one value replaced by garbage: reaches the deeper checks
_ONE_BAD_VALUE = st.builds(
    lambda key, value: {**BASE, key: value}, st.sampled_from(_TOP), _STRING_KEYED
) | st.builds(
    lambda head, opts: {"heads": {head: opts}}, st.sampled_from(list_heads()), _STRING_KEYED
)


@settings(
    max_examples=400,
    deadline=None,
    database=None,
    derandomize=True,
    suppress_health_check=[HealthCheck.too_slow],
)
@given(st.dictionaries(_KEYS, _STRING_KEYED, max_size=8) | _STRING_KEYED | _ONE_BAD_VALUE)
def test_garbage_raises_only_search_space_errors(doc):
    try:
        space = parse_search_space(doc, source="garbage.yaml")
    except SearchSpaceError as exc:
        assert str(exc).startswith("garbage.yaml: ")
        return
    # whatever parses resolves or refuses with the same error type
    with contextlib.suppress(SearchSpaceError):
        heads = space.candidate_heads(12)
        assert heads and all(1 <= s.location <= 11 for s in heads)


@pytest.mark.parametrize(
    "text",
    [
        # two unknown top-level keys of different types: sorted() compares int with str
        "1: a\nfoo: b\n",
        "heads: {linear: {}}\nkernel_mapping: {2: [3], k_middle: [3]}\n",
        "heads: {linear: {1: 2, hidden: 3}}\n",
        # a list item of ``heads`` that is itself a list or a mapping: unhashable
        "heads: [[linear]]\n",
        "heads: [{linear: {}}]\n",
        # an integer too large for a float as a range bound: math.isfinite overflows
        "heads: {linear: {}}\nconfidence: {low: 1" + "0" * 400 + "}\n",
    ],
    ids=[
        "mixed-key-types-top",
        "mixed-key-types-mapping",
        "mixed-key-types-head",
        "list-in-heads-list",
        "mapping-in-heads-list",
        "huge-int-bound",
    ],
)
def test_yaml_garbage_found_by_hand_raises_search_space_error(tmp_path, text):
    path = tmp_path / "garbage.yaml"
    path.write_text(text)
    with pytest.raises(SearchSpaceError, match=str(path)):
        load_search_space(path)
