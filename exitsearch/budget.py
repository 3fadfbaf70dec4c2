"""Compute budgets: parsing the strings users type, and what a budget means for a run.

Accepted forms (DESIGN.md): ``8GFLOPs``, ``8 GFLOPs``, ``750MFLOPs``, ``8e9`` (FLOPs),
``45%`` (of the full backbone's FLOPs), ``12ms`` (needs a latency table). ``GMACs``/``MMACs``
are synonyms: exitsearch counts one multiply-accumulate as one FLOP.
"""

from __future__ import annotations

import enum
import math
import re
from dataclasses import dataclass

from exitsearch.errors import BudgetError

__all__ = ["Budget", "BudgetKind", "BudgetUnit", "parse_budget"]

ACCEPTED = "accepted: 8GFLOPs, 8 GFLOPs, 750MFLOPs, 8e9, 2.5GMACs, 45% (of the backbone), 12ms"

_SCALE = {"": 1.0, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
_PATTERN = re.compile(
    r"""^\s*(?P<num>[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?)\s*
        (?P<unit>([KMGT]?(FLOPS|MACS))|%|MS)?\s*$""",
    re.VERBOSE | re.IGNORECASE | re.ASCII,
)


class BudgetUnit(str, enum.Enum):
    FLOPS = "flops"
    FRACTION = "fraction"
    MILLISECONDS = "ms"


class BudgetKind(str, enum.Enum):
    """``mean``: expected cost per validation sample; ``max``: no sample may cost more."""

    MEAN = "mean"
    MAX = "max"


@dataclass(frozen=True)
class Budget:
    """A parsed budget: ``value`` in ``unit`` (FLOPs, fraction of the backbone, or ms)."""

    value: float
    unit: BudgetUnit
    kind: BudgetKind = BudgetKind.MEAN
    text: str = ""

    @property
    def bare(self) -> bool:
        """Written as a number alone, without a unit (read as FLOPs)."""
        m = _PATTERN.match(self.text)
        return m is not None and not m.group("unit")

    def __post_init__(self) -> None:
        if not math.isfinite(self.value) or self.value <= 0:
            raise BudgetError(
                f"budget must be a positive, finite amount, got {self.text or self.value!r}; {ACCEPTED}"
            )
        if self.unit is BudgetUnit.FRACTION and self.value > 1.0 + 1e-12:
            raise BudgetError(f"a budget in percent must be at most 100%, got {self.text!r}")

    def to_flops(self, backbone_flops: float) -> float:
        """The budget in FLOPs (a fraction is taken of ``backbone_flops``)."""
        if self.unit is BudgetUnit.FLOPS:
            return self.value
        if self.unit is BudgetUnit.FRACTION:
            return self.value * backbone_flops
        raise BudgetError(
            f"budget {self.text!r} is in milliseconds; it is compared with a latency table"
        )

    def describe(self) -> str:
        from exitsearch.units import format_flops

        if self.unit is BudgetUnit.FLOPS:
            amount = format_flops(self.value)
        elif self.unit is BudgetUnit.FRACTION:
            amount = f"{self.value:.4g} of the backbone"
        else:
            amount = f"{self.value:.4g} ms"
        return f"{self.kind.value} cost <= {amount}"


def parse_budget(text: str, kind: BudgetKind | str = BudgetKind.MEAN) -> Budget:
    """Parse a budget string.

    Example:
        >>> parse_budget("8 GFLOPs").value
        8000000000.0
        >>> parse_budget("45%").unit
        <BudgetUnit.FRACTION: 'fraction'>

    Raises:
        BudgetError: the text is empty, malformed, not positive, or in an unknown unit; the
            message lists what is accepted.
    """
    try:
        kind = BudgetKind(kind)
    except ValueError:
        raise BudgetError(f"unknown budget kind {kind!r}; expected mean or max") from None
    if text is None or not str(text).strip():
        raise BudgetError(f"empty budget; {ACCEPTED}")
    m = _PATTERN.match(str(text))
    if m is None:
        raise BudgetError(f"cannot read budget {text!r}; {ACCEPTED}")
    num = float(m.group("num"))
    unit = (m.group("unit") or "").upper()
    if unit == "%":
        return Budget(num / 100.0, BudgetUnit.FRACTION, kind, text)
    if unit == "MS":
        return Budget(num, BudgetUnit.MILLISECONDS, kind, text)
    # The prefix is what precedes the base word: "MFLOPS" -> "M", "MACS" -> "".
    base = "FLOPS" if unit.endswith("FLOPS") else "MACS"
    prefix = unit[: -len(base)] if unit else ""
    return Budget(num * _SCALE[prefix], BudgetUnit.FLOPS, kind, text)
