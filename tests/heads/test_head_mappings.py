"""LGViT's kernel mapping ``k = f(m)`` and window mapping ``s = g(m)``."""

from __future__ import annotations

import itertools
from fractions import Fraction

import pytest

from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, create_head
from exitsearch.heads.mappings import (
    KernelMapping,
    WindowMapping,
    candidate_values,
    lgvit_heads,
    round_kernel,
    round_window,
    split_halves,
)

KERNELS = [
    KernelMapping(a, b) for a, b in itertools.combinations_with_replacement([7, 5, 3, 1, 0], 2)
]
WINDOWS = [WindowMapping(a, b) for a, b in itertools.combinations_with_replacement([2, 3, 4, 5], 2)]


def subsets(locations: list[int]) -> list[list[int]]:
    return [
        list(c) for r in range(1, len(locations) + 1) for c in itertools.combinations(locations, r)
    ]


# ---------------------------------------------------------------------------- rounding
@pytest.mark.parametrize(
    "value, expected",
    [(0, 0), (0.49, 0), (0.5, 1), (1, 1), (1.99, 1), (2, 3), (2.5, 3), (3, 3), (4.2, 5), (6, 7)],
)
def test_round_kernel_to_nearest_of_0_and_odd(value: float, expected: int) -> None:
    assert round_kernel(value) == expected


@pytest.mark.parametrize(
    "value, expected", [(0, 2), (0.2, 2), (1, 2), (1.49, 2), (1.5, 2), (2.5, 3), (3.2, 3)]
)
def test_round_window_to_nearest_integer_at_least_2(value: float, expected: int) -> None:
    assert round_window(value) == expected


def test_rounding_is_exact_on_fractions() -> None:
    assert round_kernel(Fraction(5, 2)) == 3 and round_window(Fraction(5, 2)) == 3
    with pytest.raises(ConfigError, match="value >= 0"):
        round_kernel(-1)


# ---------------------------------------------------------------------------- by hand
def test_kernel_mapping_by_hand() -> None:
    assert KernelMapping(7, 1).assign([1, 2, 3, 4]) == {1: 7, 2: 5, 3: 3, 4: 1}
    # 5 -> 0 over 2, 4, 6: 5, 2.5 (-> 3), 0
    assert KernelMapping(5, 0).assign([2, 4, 6]) == {2: 5, 4: 3, 6: 0}
    # 3 -> 0 over 1, 2, 5: 3, 2.25 (-> 3), 0
    assert KernelMapping(3, 0).assign([1, 2, 5]) == {1: 3, 2: 3, 5: 0}
    assert KernelMapping().assign([2, 4, 6]) == {2: 3, 4: 1, 6: 0}


def test_window_mapping_by_hand() -> None:
    assert WindowMapping(2, 4).assign([7, 9, 12]) == {7: 2, 9: 3, 12: 4}  # 2 + 2*2/5 = 2.8
    assert WindowMapping(2, 3).assign([7, 8, 9]) == {7: 2, 8: 3, 9: 3}  # 2.5 -> 3
    assert WindowMapping().assign([8, 10, 12]) == {8: 2, 10: 3, 12: 3}  # 2.5 -> 3


def test_single_location_gets_the_first_value() -> None:
    assert KernelMapping(5, 1)(3, [3]) == 5
    assert WindowMapping(2, 4)(9, [9]) == 2


def test_location_must_be_one_of_the_locations() -> None:
    with pytest.raises(ConfigError, match=r"location 3 is not one of the exit locations \[2, 4\]"):
        KernelMapping()(3, [2, 4])


# ---------------------------------------------------------------------------- properties
@pytest.mark.parametrize("mapping", KERNELS, ids=str)
def test_kernel_mapping_is_monotone_hits_endpoints_and_allowed(mapping: KernelMapping) -> None:
    for locs in subsets([1, 2, 3, 4, 5, 6]):
        ks = [mapping(m, locs) for m in locs]
        assert ks[0] == mapping.k_first
        if len(locs) > 1:
            assert ks[-1] == mapping.k_last
        assert all(a >= b for a, b in itertools.pairwise(ks))
        assert all(k == 0 or k % 2 == 1 for k in ks)
        assert all(mapping.k_last <= k <= mapping.k_first for k in ks)


@pytest.mark.parametrize("mapping", WINDOWS, ids=str)
def test_window_mapping_is_monotone_hits_endpoints_and_allowed(mapping: WindowMapping) -> None:
    for locs in subsets([7, 8, 9, 10, 11, 12]):
        ss = [mapping(m, locs) for m in locs]
        assert ss[0] == mapping.s_first
        if len(locs) > 1:
            assert ss[-1] == mapping.s_last
        assert all(a <= b for a, b in itertools.pairwise(ss))
        assert all(mapping.s_first <= s <= mapping.s_last for s in ss)


# ---------------------------------------------------------------------------- validation
@pytest.mark.parametrize(
    "k_first, k_last, message",
    [
        (3, 5, r"`k_first >= k_last` must hold, but got \(k_first=3, k_last=5\)"),
        (2, 0, r"`k_first` must be 0 or a positive odd integer, but got 2"),
        (3, -1, r"`k_last` must be 0 or a positive odd integer, but got -1"),
        (3.0, 1, r"`k_first` must be an integer, but got k_first=3.0"),
    ],
)
def test_kernel_mapping_rejects(k_first: int, k_last: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        KernelMapping(k_first, k_last)


@pytest.mark.parametrize(
    "s_first, s_last, message",
    [
        (3, 2, r"`s_first <= s_last` must hold, but got \(s_first=3, s_last=2\)"),
        (1, 2, r"`s_first >= 2` must hold, but got \(s_first=1\)"),
        (2, 2.5, r"`s_last` must be an integer, but got s_last=2.5"),
    ],
)
def test_window_mapping_rejects(s_first: int, s_last: int, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        WindowMapping(s_first, s_last)


def test_mappings_are_frozen_values() -> None:
    with pytest.raises(AttributeError):
        KernelMapping().k_first = 5  # type: ignore[misc]
    assert KernelMapping(3, 0) == KernelMapping(3, 0) and hash(WindowMapping()) == hash(
        WindowMapping(2, 3)
    )


# ---------------------------------------------------------------------------- halves, heads
def test_halves() -> None:
    assert split_halves([9, 1, 6, 7, 12, 6], depth=12) == ([1, 6], [7, 9, 12])
    assert split_halves([3, 4], depth=7) == ([3], [4])  # m <= 3.5 is shallow
    assert KernelMapping().covers(6, 12) and not KernelMapping().covers(7, 12)
    assert WindowMapping().covers(7, 12) and not WindowMapping().covers(6, 12)
    with pytest.raises(ConfigError, match="1 <= location <= depth"):
        split_halves([13], depth=12)


def test_lgvit_heads_place_lph_shallow_and_gah_deep() -> None:
    specs = lgvit_heads([2, 4, 6, 8, 10, 12], depth=12, kernel=KernelMapping(5, 1))
    assert [s.key for s in specs] == [
        "lph[k=5]@2",
        "lph[k=3]@4",
        "lph[k=1]@6",
        "gah[s=2]@8",
        "gah[s=3]@10",
        "gah[s=3]@12",
    ]
    ctx = HeadContext(24, 1, (7, 7), 5, num_heads=3, depth=12)
    for spec in specs:
        create_head(spec, ctx)


def test_candidate_values_by_hand() -> None:
    # m=2 is the last exit of {1, 2} (0), between 1 and 3 (1.5 -> 1), or the first (3)
    assert candidate_values([KernelMapping(3, 0)], [1, 2, 3], depth=6) == {
        1: (3,),
        2: (0, 1, 3),
        3: (0, 3),
    }


def test_candidate_values_cover_every_choice_of_exits() -> None:
    mappings = [KernelMapping(5, 0), KernelMapping(3, 1), WindowMapping(2, 4), WindowMapping(2, 2)]
    locations = [1, 2, 4, 5, 6, 7, 9, 12]
    cands = candidate_values(mappings, locations, depth=12)
    assert set(cands) == set(locations)
    seen: dict[int, set[int]] = {m: set() for m in locations}
    for chosen in subsets(locations):
        shallow, deep = split_halves(chosen, 12)
        for mapping in mappings:
            half = shallow if isinstance(mapping, KernelMapping) else deep
            for m, v in mapping.assign(half).items():
                assert v in cands[m]
                seen[m].add(v)
    assert {m: tuple(sorted(v)) for m, v in seen.items()} == cands  # and nothing more
