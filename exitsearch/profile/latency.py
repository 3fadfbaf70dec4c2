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
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch

from exitsearch._memory import check_fits_in_memory
from exitsearch.backbone.adapter import Backbone
from exitsearch.errors import ConfigError

__all__ = [
    "EXIT_DECISION",
    "EXIT_FIXED",
    "LatencyTable",
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


# Keys of LatencyTable.extra: what the exported runtime spends beyond the parts, per batch
# (exitsearch.export.overhead measures them; 0 when a table was written without them).
EXIT_DECISION = "exit_decision_ms"
"""Deciding at one early exit: scores from the logits, the criterion, who leaves."""
EXIT_FIXED = "exit_fixed_ms"
"""Once per batch whatever the exits: input checks, the final exit's output, assembling rows."""


@dataclass(frozen=True)
class LatencyTable:
    """Median milliseconds per batch of ``batch_size`` for each part of the backbone, and
    (in ``extra``) the runtime's work between the parts: :data:`EXIT_DECISION` per early exit
    a sample passes, :data:`EXIT_FIXED` per batch."""

    model: str
    device: str
    device_name: str
    batch_size: int
    stem_ms: float
    block_ms: list[float]
    head_ms: float
    full_ms: float
    threads: int
    repeats: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def parts_ms(self) -> float:
        return self.stem_ms + sum(self.block_ms) + self.head_ms

    @property
    def exit_decision_ms(self) -> float:
        return float(self.extra.get(EXIT_DECISION, 0.0))

    @property
    def exit_fixed_ms(self) -> float:
        return float(self.extra.get(EXIT_FIXED, 0.0))

    def with_exit_overhead(self, decision_ms: float, fixed_ms: float) -> LatencyTable:
        """This table with the runtime's per-exit and per-batch work (milliseconds per batch)."""
        return replace(self, extra={**self.extra, EXIT_DECISION: decision_ms, EXIT_FIXED: fixed_ms})

    def cumulative_ms(self, location: int) -> float:
        """Milliseconds of the stem and blocks ``1..location`` per batch."""
        return self.stem_ms + sum(self.block_ms[:location])

    def per_sample(self) -> LatencyTable:
        b = self.batch_size
        return LatencyTable(
            self.model,
            self.device,
            self.device_name,
            1,
            self.stem_ms / b,
            [x / b for x in self.block_ms],
            self.head_ms / b,
            self.full_ms / b,
            self.threads,
            self.repeats,
            {k: v / b for k, v in self.extra.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "parts_ms": self.parts_ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LatencyTable:
        d = {k: v for k, v in d.items() if k != "parts_ms"}
        return cls(**d)


# The parts of a latency table may miss the whole forward by this share before a run says so.
PARTS_TOLERANCE = 0.10


def parts_note(lat: LatencyTable) -> str | None:
    """A note when the table's parts (stem, blocks, head, timed one by one) do not add up to
    the whole forward: costs in milliseconds are sums of parts, so they are off by as much."""
    if lat.full_ms <= 0:
        return None
    gap = lat.parts_ms / lat.full_ms - 1.0
    if abs(gap) <= PARTS_TOLERANCE:
        return None
    return (
        f"the latency table's parts sum to {lat.parts_ms:.4g} ms per sample but the whole "
        f"backbone took {lat.full_ms:.4g} ms ({gap:+.0%}); costs in milliseconds are sums of "
        f"parts, so a configuration's predicted time is {'under' if gap < 0 else 'over'}"
        "stated by about as much; `exitsearch bench` measures the exported model itself"
    )


def measure_latency(
    backbone: Backbone,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
) -> LatencyTable:
    """Time the stem, each block and the head of ``backbone`` at ``batch_size`` on ``device``."""
    if batch_size < 1:
        raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={batch_size}")
    if repeats < 1 or warmup < 0:
        raise ConfigError(
            f"`repeats >= 1` and `warmup >= 0` must hold, but got ({repeats=}, {warmup=})"
        )
    check_fits_in_memory(
        # the input, and every block's tokens kept for timing the blocks one by one
        batch_size
        * 4
        * (
            backbone.in_chans * backbone.img_size[0] * backbone.img_size[1]
            + sum(
                backbone.state_tokens(m) * backbone.state_dim(m) for m in range(backbone.depth + 1)
            )
        ),
        f"latency at batch size {batch_size}",
        "choose a smaller --batch-size",
    )
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
