"""LGViT's location mappings: PDConv kernel ``k = f(m)`` and PFC window ``s = g(m)``.

LGViT (§3.3) puts local perception heads (``lph``) on the shallow half of the exit
locations, ``m <= L/2``, with a kernel that a *decreasing* linear ``f`` assigns, and global
aggregation heads (``gah``) on the deep half, ``L/2 < m <= L``, with a window that an
*increasing* linear ``g`` assigns. The paper gives neither function; here each is the straight
line through the first and the last exit location of its half:

    value(m) = first + (last - first) * (m - m_first) / (m_last - m_first),

computed exactly (fractions), then rounded to the nearest value the head accepts (ties go to
the larger one): 0 or an odd integer for ``k`` (1 stays 1, a 1x1 depth-wise convolution; only
values below 1/2 bypass PDConv), an integer >= 2 for ``s`` ("the minimum window size is
generally set to 2"). A half with a single exit gets ``first``. Rounding is monotone, so ``k``
never grows and ``s`` never shrinks with depth, and the endpoints are hit exactly. A search over
LGViT placements trains every value the mappings can produce (:func:`candidate_values`), so a
mapped value is never replaced by a neighbour.

Example:
    >>> KernelMapping(k_first=5, k_last=0).assign([2, 4, 6])
    {2: 5, 4: 3, 6: 0}
    >>> WindowMapping(s_first=2, s_last=4).assign([7, 9, 12])
    {7: 2, 9: 3, 12: 4}
    >>> [s.key for s in lgvit_heads([2, 4, 6, 8, 10, 12], depth=12)]
    ['lph[k=3]@2', 'lph[k=1]@4', 'lph[k=0]@6', 'gah[s=2]@8', 'gah[s=3]@10', 'gah[s=3]@12']
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import ClassVar, Protocol

from exitsearch.errors import ConfigError
from exitsearch.heads.base import HeadSpec
from exitsearch.heads.common import check, check_int

__all__ = [
    "MIN_WINDOW",
    "KernelMapping",
    "LocationMapping",
    "WindowMapping",
    "candidate_values",
    "lgvit_heads",
    "round_kernel",
    "round_window",
    "split_halves",
]


def round_kernel(value: float | Fraction) -> int:
    """Nearest PDConv kernel size to ``value >= 0``: 0 or an odd integer; ties go up."""
    v = Fraction(value)
    if v < 0:
        raise ConfigError(f"`value >= 0` must hold, but got (value={value})")
    if v < Fraction(1, 2):
        return 0
    return 2 * math.floor(v / 2) + 1  # [2j, 2j+2) -> 2j+1; at 2j the tie goes up


MIN_WINDOW = 2


def round_window(value: float | Fraction) -> int:
    """Nearest PFC window to ``value``: an integer >= :data:`MIN_WINDOW` (2); ties go up."""
    return max(MIN_WINDOW, math.floor(Fraction(value) + Fraction(1, 2)))


def _line(first: int, last: int, location: int, locations: Sequence[int]) -> Fraction:
    """The straight line through (m_first, first) and (m_last, last), at ``location``."""
    if location not in locations:
        raise ConfigError(
            f"location {location} is not one of the exit locations {sorted(locations)}"
        )
    lo, hi = min(locations), max(locations)
    if lo == hi:
        return Fraction(first)
    return Fraction(first) + Fraction((last - first) * (location - lo), hi - lo)


def split_halves(locations: Iterable[int], depth: int) -> tuple[list[int], list[int]]:
    """Exit locations of the shallow half (``m <= L/2``) and of the deep half, each sorted.

    Raises:
        ConfigError: a location outside ``1..depth``.
    """
    locs = sorted(set(locations))
    for m in locs:
        check(1 <= m <= depth, "1 <= location <= depth", location=m, depth=depth)
    return [m for m in locs if 2 * m <= depth], [m for m in locs if 2 * m > depth]


class LocationMapping(Protocol):
    """What :func:`candidate_values` needs of a mapping: the head it parameterises, the half of
    the backbone it covers, and the value at a location."""

    head_type: ClassVar[str]
    param: ClassVar[str]

    def covers(self, location: int, depth: int) -> bool: ...

    def __call__(self, location: int, locations: Sequence[int]) -> int: ...


@dataclass(frozen=True)
class KernelMapping:
    """LGViT's ``k = f(m)`` for ``m <= L/2`` (LGViT, eq. 1): decreasing linear in ``m``,
    ``k_first`` at the half's first exit location, ``k_last`` at its last.

    The defaults run from 3x3 (the only kernel the paper names, App. A.2) at the shallowest
    exit down to 0 (PDConv bypassed) at the last shallow one.

    Raises:
        ConfigError: a value that is neither 0 nor a positive odd integer, or
            ``k_first < k_last``.
    """

    k_first: int = 3
    k_last: int = 0

    head_type: ClassVar[str] = "lph"
    param: ClassVar[str] = "k"

    def __post_init__(self) -> None:
        for name, k in (("k_first", self.k_first), ("k_last", self.k_last)):
            check_int(name, k)
            if not (k == 0 or (k > 0 and k % 2 == 1)):
                raise ConfigError(f"`{name}` must be 0 or a positive odd integer, but got {k}")
        check(
            self.k_first >= self.k_last,
            "k_first >= k_last",
            k_first=self.k_first,
            k_last=self.k_last,
        )

    def covers(self, location: int, depth: int) -> bool:
        """Whether ``location`` lies in the shallow half, ``m <= L/2``."""
        return location >= 1 and 2 * location <= depth

    def __call__(self, location: int, locations: Sequence[int]) -> int:
        """``k`` at ``location``, one of ``locations`` (the exits of the shallow half).

        Raises:
            ConfigError: ``location`` is not one of ``locations``.
        """
        return round_kernel(_line(self.k_first, self.k_last, location, locations))

    def assign(self, locations: Sequence[int]) -> dict[int, int]:
        """``k`` at every one of ``locations``."""
        return {m: self(m, locations) for m in sorted(set(locations))}


@dataclass(frozen=True)
class WindowMapping:
    """LGViT's ``s = g(m)`` for ``L/2 < m <= L`` (LGViT, eq. 3): increasing linear in
    ``m``, ``s_first`` at the half's first exit location, ``s_last`` at its last.

    The default starts at 2 ("the minimum window size is generally set to 2") and ends at 3,
    which still leaves 3x3 tokens of a 7x7 grid and 5x5 of a 14x14 one.

    Raises:
        ConfigError: ``s_first < 2`` or ``s_first > s_last``.
    """

    s_first: int = 2
    s_last: int = 3

    head_type: ClassVar[str] = "gah"
    param: ClassVar[str] = "s"

    def __post_init__(self) -> None:
        check_int("s_first", self.s_first)
        check_int("s_last", self.s_last)
        check(self.s_first >= MIN_WINDOW, f"s_first >= {MIN_WINDOW}", s_first=self.s_first)
        check(
            self.s_first <= self.s_last,
            "s_first <= s_last",
            s_first=self.s_first,
            s_last=self.s_last,
        )

    def covers(self, location: int, depth: int) -> bool:
        """Whether ``location`` lies in the deep half, ``L/2 < m <= L``."""
        return 2 * location > depth and location <= depth

    def __call__(self, location: int, locations: Sequence[int]) -> int:
        """``s`` at ``location``, one of ``locations`` (the exits of the deep half).

        Raises:
            ConfigError: ``location`` is not one of ``locations``.
        """
        return round_window(_line(self.s_first, self.s_last, location, locations))

    def assign(self, locations: Sequence[int]) -> dict[int, int]:
        """``s`` at every one of ``locations``."""
        return {m: self(m, locations) for m in sorted(set(locations))}


def lgvit_heads(
    locations: Iterable[int],
    depth: int,
    kernel: KernelMapping | None = None,
    window: WindowMapping | None = None,
) -> list[HeadSpec]:
    """LGViT's heads for a set of exit locations: ``lph`` with ``k = f(m)`` on the shallow
    half, ``gah`` with ``s = g(m)`` on the deep half (LGViT, §3.3, Fig. 3).

    Raises:
        ConfigError: a location outside ``1..depth``.
    """
    kernel = KernelMapping() if kernel is None else kernel
    window = WindowMapping() if window is None else window
    shallow, deep = split_halves(locations, depth)
    return [HeadSpec("lph", m, {"k": k}) for m, k in kernel.assign(shallow).items()] + [
        HeadSpec("gah", m, {"s": s}) for m, s in window.assign(deep).items()
    ]


def candidate_values(
    mappings: Iterable[LocationMapping], locations: Iterable[int], depth: int
) -> dict[int, tuple[int, ...]]:
    """Every value that any of ``mappings`` can give each candidate exit location.

    A mapping's value at ``m`` depends only on the first and last chosen exits of ``m``'s half,
    so the values at ``m`` are those for every pair ``m_first <= m <= m_last`` of candidate
    locations in that half. These are the head variants (``lph[k=...]@m``, ``gah[s=...]@m``)
    to train once when a search may choose any subset of ``locations``. Each mapping answers
    only for the locations its half covers; a location no mapping covers is left out.

    Example:
        >>> candidate_values([KernelMapping(3, 0)], [1, 2, 3], depth=6)
        {1: (3,), 2: (0, 1, 3), 3: (0, 3)}

    Raises:
        ConfigError: a location outside ``1..depth``.
    """
    mappings = list(mappings)
    locs = sorted(set(locations))
    for m in locs:
        check(1 <= m <= depth, "1 <= location <= depth", location=m, depth=depth)
    found: dict[int, set[int]] = {}
    for mapping in mappings:
        half = [m for m in locs if mapping.covers(m, depth)]
        for i, m in enumerate(half):
            values = found.setdefault(m, set())
            for lo in half[: i + 1]:
                for hi in half[i:]:
                    values.add(mapping(m, sorted({lo, m, hi})))
    return {m: tuple(sorted(v)) for m, v in sorted(found.items())}
