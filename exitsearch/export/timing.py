"""Latency as the exported runtime spends it: every part timed where the runtime runs it.

Timed one by one, back to back, a block or a head runs with its weights in the nearest caches
and the thread pool awake; the runtime runs them one after another, a head and a decision
between blocks, so each part finds its weights further away and, on several threads, a pool
that has gone idle. Milliseconds predicted from parts timed alone miss the runtime's time by
as much (10-80 % at batch 1 on a CPU).

:func:`measure_in_runtime` times the parts inside the runtime instead. A *probe* is a
:class:`~exitsearch.export.MultiExitModel` with a head after every block and thresholds no
sample reaches, run with the runtime's profiling hook (``tick``). Every candidate head sits in
some probe (one head per location; the other locations hold linear heads), so the probes cover
the candidates in as many runs as the most crowded location has heads. The stem, each block,
the final head and the decision at an exit are medians over every probe and repeat; each head
is the median of its own probe's repeats; the work once per batch (checking the input,
assembling the output) is the whole call less everything the hook attributes.

Every probe call is followed by a plain forward of the backbone through the same parts, every
block in a row, so that both see the machine in the same state. A part that comes after an
exit takes longer than in the plain forward (its weights and, on several threads, the thread
pool went cold while the head and the decision ran); the median of (the probe's parts less the
plain forward) over its early exits is that cold start, :data:`~exitsearch.core.costs.EXIT_RESUME`,
charged per early exit a sample goes on from. The table's parts are the in-a-row times (each
part after an exit less the cold start), so the stem, blocks and final head add up to the plain
forward (``full_ms``) and a configuration's prediction adds what its own exits cost.
"""

from __future__ import annotations

import math
import re
import statistics
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.core.spec import HeadSpec
from exitsearch.errors import ConfigError
from exitsearch.export.runtime import MultiExitModel
from exitsearch.export.staged import BOOKKEEPING
from exitsearch.heads import HeadContext
from exitsearch.heads.registry import create_head
from exitsearch.profile.latency import LatencyTable, check_timing, resolve_device, time_call

__all__ = ["ENGINES", "RuntimeLatency", "check_request", "measure_in_runtime", "probe_layout"]

ENGINES = ("torch", "onnx")

_BLOCK = re.compile(r"blocks (\d+)-(\d+)$")
_HEAD = "head "


@dataclass(frozen=True)
class RuntimeLatency:
    """What :func:`measure_in_runtime` measured, per batch of ``table.batch_size``.

    Attributes:
        table: stem, blocks and final head as a plain forward runs them (in a row), the
            decision at and the cold start after an early exit and the work once per batch
            (``extra``), and the plain forward itself (``full_ms``).
        heads_ms: median milliseconds of every candidate head (with its statistics, and its
            uncertainty predictor when it has one), by key.
        call_ms: median milliseconds of a whole probe call (every block, a head and a decision
            after each), the sum the parts are taken from.
    """

    table: LatencyTable
    heads_ms: dict[str, float]
    call_ms: float


def probe_layout(specs: Sequence[HeadSpec], depth: int) -> list[tuple[HeadSpec, ...]]:
    """The probes' exits: every spec once, one head per location ``1..depth-1`` (and a spec's
    own location beyond), linear heads where no spec is left. Heads with MEViT's uncertainty
    predictor go in probes of their own (they run under the uncertainty criterion, which reads
    it)."""
    out: list[tuple[HeadSpec, ...]] = []
    for unc in (False, True):
        chosen = sorted({s for s in specs if s.uncertainty == unc}, key=lambda s: s.key)
        if not chosen and (unc or specs):
            continue
        packed: list[dict[int, HeadSpec]] = []
        for s in chosen:
            slot = next((p for p in packed if s.location not in p), None)
            if slot is None:
                packed.append(slot := {})
            slot[s.location] = s
        for p in packed or [{}]:
            top = max([depth - 1, *p])
            out.append(
                tuple(p.get(m) or HeadSpec("linear", m, uncertainty=unc) for m in range(1, top + 1))
            )
    return out


Call = Callable[[Any, Callable[[str], None]], Any]
"""A probe's call: ``call(x, tick)`` runs one batch as the runtime's ``__call__`` does."""


def _torch_probe(model: MultiExitModel) -> tuple[Call, Callable[[Any], Any]]:
    """The probe's call, and the plain backbone's forward."""

    def call(x: torch.Tensor, tick: Callable[[str], None]) -> Any:
        if model.check_inputs:
            model.inputs.check(x)
        with torch.inference_mode():
            return model.run(x, tick)

    return call, model.backbone


def _onnx_probe(
    model: MultiExitModel, folder: Path, threads: int, shared: bool
) -> tuple[Call, Callable[[Any], Any]]:
    """The probe's graphs under onnxruntime, and the backbone through the same graphs."""
    from exitsearch.export.onnx import export_onnx
    from exitsearch.export.onnx_runtime import OnnxMultiExitModel

    graphs = export_onnx(model, folder, exporter="legacy", check=False, fallback=True)
    onnx = OnnxMultiExitModel(
        folder, graphs, model.config, threads=threads, shared_threads=shared, task=model.task.name
    )
    return onnx.run, onnx.backbone_forward


def _spans(call: Call, x: Any, sync: Callable[[], None]) -> tuple[float, list[tuple[str, float]]]:
    """One timed call: ``(whole_ms, [(part, ms), ...])`` in the order the runtime ran them."""
    marks: list[tuple[str, float]] = []

    def tick(part: str) -> None:
        sync()
        marks.append((part, time.perf_counter()))

    sync()
    t0 = time.perf_counter()
    call(x, tick)
    sync()
    whole = (time.perf_counter() - t0) * 1e3
    starts = [t0, *(t for _, t in marks[:-1])]
    return whole, [(p, (t - s) * 1e3) for (p, t), s in zip(marks, starts, strict=True)]


def check_request(
    backbone: Backbone,
    device: str,
    batch_size: int,
    warmup: int = 3,
    repeats: int = 10,
    engine: str = "torch",
) -> None:
    """Refuse what :func:`measure_in_runtime` cannot measure, before anything runs.

    Raises:
        ConfigError: an unknown engine, ONNX on another device than the CPU, a batch size or
            repeat count below 1, or a batch that does not fit in memory.
    """
    if engine not in ENGINES:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    if engine == "onnx" and device != "cpu":
        raise ConfigError(f"the ONNX runtime runs on the CPU, not on {device!r}")
    # the input, and a block's tokens in and out with its activations (about four states)
    check_timing(backbone, batch_size, warmup, repeats, states=4)


def measure_in_runtime(
    backbone: Backbone,
    specs: Sequence[HeadSpec],
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
    task: str | None = None,
    engine: str = "torch",
    shared_threads: bool = False,
) -> RuntimeLatency:
    """Time ``backbone``'s parts, every head in ``specs`` and the runtime's own work at
    ``batch_size`` on ``device``, inside the exported runtime (see the module's text).

    ``engine`` is the runtime timed: ``torch`` (:class:`MultiExitModel`) or ``onnx`` (the
    probes exported to ONNX graphs and run by onnxruntime on the CPU with PyTorch's thread
    count; ``shared_threads`` as :class:`~exitsearch.export.onnx_runtime.OnnxMultiExitModel`
    takes it).

    Raises:
        ConfigError: a batch size or repeat count below 1, an unknown engine, ONNX on another
            device than the CPU, or an unavailable device.
    """
    check_request(backbone, device, batch_size, warmup, repeats, engine)
    dev = resolve_device(device)
    bb = backbone.to(dev).eval()
    ctx = HeadContext.from_backbone(bb)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    # inputs of the probe's own generator: measuring leaves the global random state alone
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(batch_size, bb.in_chans, *bb.img_size, generator=gen).to(dev)
    threads = torch.get_num_threads()
    tmp = tempfile.TemporaryDirectory(prefix="exitsearch-probe-") if engine == "onnx" else None

    stem: list[float] = []
    blocks: list[list[float]] = [[] for _ in range(bb.depth)]
    final: list[float] = []
    final_after_exit: list[float] = []
    decisions: list[float] = []
    fixed: list[float] = []
    calls: list[float] = []
    plain: list[float] = []
    resumes: list[float] = []  # per call: (parts - plain forward) per early exit
    heads: dict[str, float] = {}
    wanted = {s.key for s in specs}
    try:
        for i, exits in enumerate(probe_layout(specs, bb.depth)):
            unc = any(s.uncertainty for s in exits)
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(0)
                modules = [create_head(s, ctx) for s in exits]
            # no readiness reaches a bound of +inf: every sample passes every exit to the final one
            criterion = "uncertainty" if unc else "confidence"
            never = create_criterion(criterion).threshold(math.inf)
            config = ExitConfig(exits, criterion, (never,) * len(exits), "per_exit")
            model = MultiExitModel(bb, modules, config, task=task).to(dev).eval()
            if tmp is None:
                (call, forward), inputs = _torch_probe(model), x
            else:
                folder = Path(tmp.name) / f"probe{i}"
                (call, forward), inputs = (
                    _onnx_probe(model, folder, threads, shared_threads),
                    x.numpy(),
                )
            own: dict[str, list[float]] = {}
            for r in range(warmup + repeats):
                whole, spans = _spans(call, inputs, sync)
                # right after: the plain forward through the same parts, every block in a row
                in_a_row = time_call(lambda f=forward, v=inputs: f(v), dev, 0, 1)[0]
                if r < warmup:
                    continue
                calls.append(whole)
                plain.append(in_a_row)
                decided = [ms for part, ms in spans if part == BOOKKEEPING]
                if len(decided) != len(exits) + 1:
                    raise RuntimeError(f"a sample left a latency probe early at {exits}")
                # one decision per early exit, then the final exit's output
                decisions.extend(decided[:-1])
                parts = 0.0
                for part, ms in spans:
                    if part == "stem":
                        stem.append(ms)
                    elif part == "final head":
                        # after an exit when the probe has one after the last block
                        cold = bool(exits) and exits[-1].location == bb.depth
                        (final_after_exit if cold else final).append(ms)
                    elif part.startswith(_HEAD):
                        own.setdefault(part[len(_HEAD) :], []).append(ms)
                        continue
                    elif (m := _BLOCK.match(part)) and m[1] == m[2]:
                        blocks[int(m[1]) - 1].append(ms)
                    else:
                        continue
                    parts += ms
                if exits:
                    resumes.append((parts - in_a_row) / len(exits))
                attributed = sum(ms for part, ms in spans if part != BOOKKEEPING)
                fixed.append(whole - attributed - sum(decided[:-1]))
            heads.update({k: statistics.median(v) for k, v in own.items() if k in wanted})
    finally:
        if tmp is not None:
            tmp.cleanup()
    # every probe has an exit after blocks 1..depth-1: blocks 2..depth start cold
    resume = statistics.median(resumes) if resumes else 0.0
    block_ms = [statistics.median(b) - (resume if i else 0.0) for i, b in enumerate(blocks)]
    final_ms = final + [ms - resume for ms in final_after_exit]
    table = LatencyTable(
        model=bb.spec.model,
        device=device,
        device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        batch_size=batch_size,
        stem_ms=statistics.median(stem),
        block_ms=[max(0.0, ms) for ms in block_ms],
        head_ms=max(0.0, statistics.median(final_ms)),
        full_ms=statistics.median(plain),
        threads=threads,
        repeats=repeats,
    ).with_exit_overhead(
        statistics.median(decisions) if decisions else 0.0,
        max(0.0, statistics.median(fixed)),
        resume,
    )
    return RuntimeLatency(table, heads, statistics.median(calls))
