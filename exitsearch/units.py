"""Formatting of costs in the project's unit (FLOPs = multiply-accumulates)."""

from __future__ import annotations

__all__ = ["format_bytes", "format_flops", "format_ms"]

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
