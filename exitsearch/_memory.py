"""Refusing, before allocating, a request that cannot fit in this machine's memory.

A batch size of 100,000,000 would otherwise allocate until the machine swaps or the kernel
kills the process; the sizes below are lower bounds of what the request needs, so a request
refused here could never have run.
"""

from __future__ import annotations

import os

from exitsearch.errors import ConfigError

__all__ = ["available_memory", "check_fits_in_memory", "format_bytes"]


def available_memory() -> int | None:
    """Bytes the kernel says can be allocated without swapping (``MemAvailable``), or None."""
    try:
        with open("/proc/meminfo") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def check_fits_in_memory(needed: int, what: str, advice: str) -> None:
    """Raise unless ``needed`` bytes (a lower bound) fit in the memory available now.

    Raises:
        ConfigError: ``what needs at least N of memory, more than the M available; advice``.
    """
    available = available_memory()
    if available is not None and needed > available:
        raise ConfigError(
            f"{what} needs at least {format_bytes(needed)} of memory, more than the "
            f"{format_bytes(available)} available; {advice}"
        )
