"""What the exported runtime spends beyond a latency table's parts.

A latency table times the stem, each block, each head and the final head one by one. A sample
that runs through :class:`~exitsearch.export.MultiExitModel` also pays the decision at every
early exit it reaches (scores from the logits, the criterion, who leaves, compaction) and, once
per batch, checking the input and assembling the output rows. At batch 1 on a CPU these are a
large share of a small model's time; a prediction in milliseconds that leaves them out is
optimistic by as much.

:func:`measure_exit_overhead` measures both on a probe: linear heads after the first blocks that
no sample leaves at, run the way the runtime runs. The decision is timed directly (the runtime's
profiling hook brackets it); the fixed part is the whole call minus everything the hook
attributes to a part or a decision.
"""

from __future__ import annotations

import math
import statistics
import time

import torch

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.spec import HeadSpec
from exitsearch.export.runtime import MultiExitModel
from exitsearch.export.staged import BOOKKEEPING
from exitsearch.heads import HeadContext
from exitsearch.heads.registry import create_head
from exitsearch.profile.latency import LatencyTable, resolve_device

__all__ = ["measure_exit_overhead", "with_exit_overhead"]


def measure_exit_overhead(
    backbone: Backbone,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    exits: int = 3,
) -> tuple[float, float]:
    """``(decision_ms, fixed_ms)`` per batch of ``batch_size``: the decision at one early exit,
    and the runtime's work once per batch (medians over ``repeats`` calls)."""
    dev = resolve_device(device)
    n = max(1, min(exits, backbone.depth - 1))
    specs = tuple(HeadSpec("linear", m) for m in range(1, n + 1))
    ctx = HeadContext.from_backbone(backbone)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        heads = [create_head(s, ctx) for s in specs]
    # a confidence above 1 is never reached: every sample passes every exit to the final one
    config = ExitConfig(specs, "confidence", (math.inf,) * n, "per_exit")
    model = MultiExitModel(backbone, heads, config).to(dev).eval()
    x = torch.randn(batch_size, backbone.in_chans, *backbone.img_size, device=dev)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)

    decisions: list[float] = []
    fixed: list[float] = []
    for r in range(warmup + repeats):
        marks: list[tuple[str, float]] = []

        def tick(part: str) -> None:
            sync()
            marks.append((part, time.perf_counter()))  # noqa: B023 (called within this loop)

        sync()
        t0 = time.perf_counter()
        if model.check_inputs:
            model.inputs.check(x)
        with torch.inference_mode():
            model.run(x, tick)
        sync()
        whole = (time.perf_counter() - t0) * 1e3
        if r < warmup:
            continue
        spans = [
            (part, (t - prev) * 1e3)
            for (part, t), prev in zip(marks, [t0, *(t for _, t in marks[:-1])], strict=True)
        ]
        decided = [ms for part, ms in spans if part == BOOKKEEPING]
        # the first n decisions are the early exits'; the last is the final exit's output
        per_exit = sum(decided[:n]) / n
        decisions.append(per_exit)
        parts = sum(ms for part, ms in spans if part != BOOKKEEPING)
        fixed.append(whole - parts - n * per_exit)
    return statistics.median(decisions), max(0.0, statistics.median(fixed))


def with_exit_overhead(
    table: LatencyTable, backbone: Backbone, warmup: int = 3, repeats: int = 10
) -> LatencyTable:
    """``table`` with the runtime's per-exit and per-batch work measured on its device and batch
    size (:meth:`LatencyTable.with_exit_overhead`)."""
    decision, fixed = measure_exit_overhead(
        backbone, table.device, table.batch_size, warmup, repeats
    )
    return table.with_exit_overhead(decision, fixed)
