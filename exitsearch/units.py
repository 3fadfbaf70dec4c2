"""Formatting of costs in the project's unit (FLOPs = multiply-accumulates)."""

from __future__ import annotations

__all__ = ["format_flops", "format_ms"]

_PREFIXES = ((1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "K"))


def format_flops(value: float, digits: int = 4) -> str:
    """``17582740224 -> '17.58 GFLOPs'`` (FLOPs counted as multiply-accumulates)."""
    for scale, prefix in _PREFIXES:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}g} {prefix}FLOPs"
    return f"{value:.{digits}g} FLOPs"


def format_ms(value: float) -> str:
    return f"{value:.3g} ms"
