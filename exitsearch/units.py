"""Formatting of costs in the project's unit (FLOPs = multiply-accumulates)."""

from __future__ import annotations

import re

__all__ = ["format_bytes", "format_flops", "format_ms", "parse_bytes"]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_flops(value: float, digits: int = 4) -> str:
    """``17582740224 -> '17.58 GFLOPs'`` (FLOPs counted as multiply-accumulates)."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}FLOPs"
    return f"{value:.{digits}g} FLOPs"


def format_ms(value: float) -> str:
    return f"{value:.3g} ms"


def format_bytes(value: float) -> str:
    """``1536`` -> ``1.5 KiB``; binary units as ``free`` and ``top`` show them."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(value) < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


_BYTE_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "m": 1000**2,
    "mb": 1000**2,
    "g": 1000**3,
    "gb": 1000**3,
    "t": 1000**4,
    "tb": 1000**4,
    "kib": 1024,
    "mib": 1024**2,
    "gib": 1024**3,
    "tib": 1024**4,
}


def parse_bytes(text: str) -> int:
    """``'6GB' -> 6_000_000_000``, ``'6GiB' -> 6_442_450_944``, ``'512MiB'``, ``'1e9'``.

    Raises:
        ValueError: not a positive size.
    """
    m = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[+-]?[0-9]+)?)\s*([a-z]*)\s*", text.lower())
    if m is None or m[2] not in _BYTE_UNITS or float(m[1]) <= 0:
        raise ValueError(
            f"{text!r} is not a memory size; expected a positive number with an optional unit "
            "(B, KB, MB, GB, TB, KiB, MiB, GiB, TiB), e.g. 6GB"
        )
    return int(float(m[1]) * _BYTE_UNITS[m[2]])
