"""Measured latency per block: a lookup table for budgets in milliseconds.

Each part (stem, every block, final norm + head) is timed on its own real input shape after a
warm-up, and the median of the repeats is kept. The sum of the parts is checked against a timed
full forward, and both are stored, so the table says how much of the end-to-end time the parts
explain.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

import torch

from exitsearch._memory import check_fits_in_memory
from exitsearch.backbone.adapter import Backbone
from exitsearch.core.costs import EXIT_DECISION, EXIT_FIXED, LatencyTable
from exitsearch.errors import ConfigError

__all__ = [
    "EXIT_DECISION",
    "EXIT_FIXED",
    "LatencyTable",
    "check_timing",
    "measure_latency",
    "parts_note",
    "resolve_device",
    "time_call",
]


def resolve_device(device: str) -> torch.device:
    """``cpu`` or ``cuda`` (``cuda:N``); a CUDA request without a GPU is a clear error."""
    if device == "cpu":
        return torch.device("cpu")
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {device!r} requested but no CUDA GPU is available here")
        return torch.device(device)
    raise ConfigError(f"unknown device {device!r}; expected cpu or cuda")


def time_call(
    fn: Callable[[], Any], device: torch.device, warmup: int = 3, repeats: int = 10
) -> list[float]:
    """Milliseconds of each of ``repeats`` calls of ``fn`` after ``warmup`` untimed calls."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    with torch.inference_mode():
        for _ in range(warmup):
            fn()
        sync()
        out = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            fn()
            sync()
            out.append((time.perf_counter() - t0) * 1e3)
    return out


# The parts of a latency table may miss the whole forward by this share before a run says so.
PARTS_TOLERANCE = 0.10


def parts_note(lat: LatencyTable) -> str | None:
    """A note when the table's parts (stem, blocks, head) do not add up to a plain forward of
    the backbone within :data:`PARTS_TOLERANCE`.

    Tables timed inside the exported runtime (:mod:`exitsearch.export.timing`) keep each part's
    time in a plain forward, measured in the same rounds as the forward itself, so their parts
    add up to it unless the machine's speed changed while they were measured. Parts that add up
    to less than the whole miss something the model runs; parts that add up to more overstate
    every configuration's time."""
    if lat.full_ms <= 0:
        return None
    gap = lat.parts_ms / lat.full_ms - 1.0
    if abs(gap) <= PARTS_TOLERANCE:
        return None
    return (
        f"the latency table's parts sum to {lat.parts_ms:.4g} ms per sample and a plain forward "
        f"of the backbone took {lat.full_ms:.4g} ms ({gap:+.0%}), so predicted milliseconds are "
        f"{'under' if gap < 0 else 'over'}stated by about as much; a machine whose speed "
        "changes while the table is measured (a busy one) does this: measure it again on a "
        "quiet one, or let `exitsearch bench` measure the exported model itself"
    )


def check_timing(
    backbone: Backbone, batch_size: int, warmup: int, repeats: int, states: int
) -> None:
    """Refuse a batch size or repeat count below 1, a negative warm-up, and a batch whose input
    and ``states`` hidden states of the backbone's largest shape do not fit in memory."""
    if batch_size < 1:
        raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={batch_size}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"`repeats >= 1` and `warmup >= 0` must hold, but got ({repeats=}, {warmup=})"
        )
    largest = max(
        backbone.state_tokens(m) * backbone.state_dim(m) for m in range(backbone.depth + 1)
    )
    check_fits_in_memory(
        batch_size
        * 4
        * (backbone.in_chans * backbone.img_size[0] * backbone.img_size[1] + states * largest),
        f"latency at batch size {batch_size}",
        "choose a smaller --batch-size",
    )


def measure_latency(
    backbone: Backbone,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
) -> LatencyTable:
    """Time the stem, each block and the head of ``backbone`` at ``batch_size`` on ``device``."""
    # the input, and every block's tokens kept for timing the blocks one by one
    check_timing(backbone, batch_size, warmup, repeats, states=backbone.depth + 1)
    dev = resolve_device(device)
    bb = backbone.to(dev).eval()
    x = torch.randn(batch_size, bb.in_chans, *bb.img_size, device=dev)
    with torch.inference_mode():
        tokens = [bb.embed(x)]
        for i in range(bb.depth):
            tokens.append(bb.run_blocks(tokens[-1], i, i + 1))

    def med(fn: Callable[[], Any]) -> float:
        return statistics.median(time_call(fn, dev, warmup, repeats))

    stem = med(lambda: bb.embed(x))
    blocks = [med(lambda i=i: bb.run_blocks(tokens[i], i, i + 1)) for i in range(bb.depth)]
    head = med(lambda: bb.final_head(tokens[-1]))
    full = med(lambda: bb(x))
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    return LatencyTable(
        model=bb.spec.model,
        device=device,
        device_name=name,
        batch_size=batch_size,
        stem_ms=stem,
        block_ms=blocks,
        head_ms=head,
        full_ms=full,
        threads=torch.get_num_threads(),
        repeats=repeats,
    )
