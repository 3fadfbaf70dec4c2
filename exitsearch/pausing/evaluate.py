"""Scoring a pause configuration by inference: metric, FLOPs and measured images per second.

Pause configurations change which tokens later blocks see, so unlike exit configurations they
cannot be scored from cached predictions: each needs a pass over the split. Throughput is
measured on the same inputs for every configuration (the first ``batch_size`` images of the
split), after a warm-up, as the median of repeated calls, on the wall clock (what a user
waits for) or on the process's CPU clock (the work of the call alone, robust to other jobs on a
shared CPU). Compare configurations measured together with :func:`measure_throughputs`, which
interleaves them so that load changes hit all of them alike.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch

from exitsearch.core.pause import PauseConfig
from exitsearch.data.samples import ArrayDataset
from exitsearch.data.splits import DataSplits
from exitsearch.device import Runtime, resolve_device
from exitsearch.errors import ConfigError
from exitsearch.heads.bank import HeadBank
from exitsearch.pausing.pause import PauseMode, PausingViT
from exitsearch.progress import Progress
from exitsearch.training.predict import Predictions, predict_states

__all__ = [
    "CLOCKS",
    "PauseEvaluation",
    "evaluate_metric",
    "evaluate_pause_config",
    "measure_throughput",
    "measure_throughputs",
    "predict_under_pause",
    "time_entries",
    "timing_batch",
]

PauseLike = PauseConfig | Mapping[int, float] | str | None


@dataclass(frozen=True)
class PauseEvaluation:
    """One pause configuration of one model on one split.

    Attributes:
        pause: the configuration's key (``""``: no pausing).
        metric: accuracy or mIoU (``metric_name``) of the main head.
        flops: FLOPs per image (multiply-accumulates; see :mod:`exitsearch.pausing.costs`).
        images_per_s: measured throughput at ``batch_size``, or None when not measured.
        clock: the clock ``images_per_s`` was measured with (``wall`` or ``cpu``).
    """

    pause: str
    mode: str
    metric_name: str
    metric: float
    flops: int
    images_per_s: float | None = None
    batch_size: int = 64
    label: str = ""
    clock: str = "wall"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PauseEvaluation:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@torch.no_grad()
def evaluate_metric(
    model: Any,
    data: ArrayDataset,
    pause: PauseLike,
    mode: PauseMode | str = PauseMode.ENTROPY,
    batch_size: int = 256,
    seed: int = 0,
) -> float:
    """The task metric of ``model`` (a ``PaumerModel``) on ``data`` under ``pause``.

    Random mode draws from one generator seeded with ``seed``, consumed batch after batch.
    """
    model.eval()
    transform = model.backbone.input_transform()
    metric = model.task.new_metric()
    gen = torch.Generator().manual_seed(seed)
    device = next(model.parameters()).device
    for batch in model.task.batches(data, batch_size):
        out = model.predict(transform(batch.images.to(device)), pause, mode, gen)
        metric.update(out.cpu(), batch.target)
    return metric.value()


def timing_batch(model: Any, data: ArrayDataset, batch_size: int = 64) -> torch.Tensor:
    """The model input of the first ``batch_size`` images of ``data`` (the timing inputs), on
    the model's device."""
    if len(data) < 1:
        raise ConfigError("cannot time a configuration on an empty split")
    n = min(batch_size, len(data))
    x = data.batch(np.arange(n))
    if n < batch_size:  # repeat images so that every configuration is timed at batch_size
        x = x.repeat(math.ceil(batch_size / n), 1, 1, 1)[:batch_size]
    return model.backbone.input_transform()(x.to(next(model.parameters()).device))


CLOCKS: dict[str, Callable[[], float]] = {
    # elapsed time: what a user waits for; on a machine shared with other jobs it also counts
    # the time slices the scheduler gives to them
    "wall": time.perf_counter,
    # CPU time of this process: the work of the call alone, robust to other jobs on a busy
    # CPU (with one torch thread, what the call costs a dedicated core); meaningless on a GPU
    "cpu": time.process_time,
}


def time_entries(
    entries: Sequence[tuple[Any, PauseLike, PauseMode | str]],
    x: torch.Tensor,
    warmup: int = 3,
    repeats: int = 10,
) -> dict[str, list[float]]:
    """Median milliseconds per call of each ``(model, pause, mode)`` on ``x``, on every clock
    of :data:`CLOCKS` (``{"wall": [...], "cpu": [...]}``).

    Each entry is warmed up, then the entries are timed in ``repeats`` interleaved rounds (one
    call each per round), so that a change of load hits all of them alike.
    """
    if repeats < 1:
        raise ConfigError(f"`repeats >= 1` must hold, but got repeats={repeats}")
    calls = []
    for model, pause, mode in entries:
        model.eval()
        cfg = model.vit.resolve(pause)
        gen = torch.Generator(device=x.device).manual_seed(0)
        calls.append(lambda m=model, c=cfg, md=mode, g=gen: m.predict(x, c, md, g))
    sync = torch.cuda.synchronize if x.device.type == "cuda" else (lambda: None)
    times: dict[str, list[list[float]]] = {k: [[] for _ in calls] for k in CLOCKS}
    with torch.inference_mode():
        for call in calls:
            for _ in range(warmup):
                call()
        sync()
        for _ in range(repeats):
            for i, call in enumerate(calls):
                start = {k: clock() for k, clock in CLOCKS.items()}
                call()
                sync()
                for k, clock in CLOCKS.items():
                    times[k][i].append((clock() - start[k]) * 1e3)
    return {k: [statistics.median(t) for t in v] for k, v in times.items()}


def measure_throughputs(
    entries: Sequence[tuple[Any, PauseLike, PauseMode | str]],
    x: torch.Tensor,
    warmup: int = 3,
    repeats: int = 10,
    clock: str = "wall",
) -> list[float]:
    """Images per second of each ``(model, pause, mode)`` on input ``x`` (see
    :func:`time_entries`; ``clock``: ``wall`` or ``cpu``, see :data:`CLOCKS`)."""
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}; known: {', '.join(CLOCKS)}")
    if clock == "cpu" and x.device.type != "cpu":
        raise ConfigError("the cpu clock measures CPU work; time GPU runs with the wall clock")
    ms = time_entries(entries, x, warmup, repeats)[clock]
    return [x.shape[0] / (m / 1e3) for m in ms]


def measure_throughput(
    model: Any,
    x: torch.Tensor,
    pause: PauseLike,
    mode: PauseMode | str = PauseMode.ENTROPY,
    warmup: int = 3,
    repeats: int = 10,
    clock: str = "wall",
) -> float:
    """Images per second of ``model`` under ``pause`` on input ``x`` (median of ``repeats``)."""
    return measure_throughputs([(model, pause, mode)], x, warmup, repeats, clock)[0]


def evaluate_pause_config(
    model: Any,
    data: ArrayDataset,
    pause: PauseLike,
    mode: PauseMode | str = PauseMode.ENTROPY,
    *,
    batch_size: int = 64,
    eval_batch_size: int = 256,
    warmup: int = 3,
    repeats: int = 10,
    seed: int = 0,
    measure: bool = True,
    clock: str = "wall",
) -> PauseEvaluation:
    """Metric, FLOPs per image and measured images/s of ``model`` under ``pause`` on ``data``.

    Args:
        batch_size: batch of the throughput measurement.
        eval_batch_size: batch of the metric pass (does not change the metric).
        measure: time the configuration (False: ``images_per_s`` is None).
        clock: ``wall`` or ``cpu`` (see :data:`CLOCKS`).
    """
    from exitsearch.pausing.costs import pause_cost

    cfg = model.vit.resolve(pause)
    mode = PauseMode.parse(mode)
    metric = evaluate_metric(model, data, cfg, mode, eval_batch_size, seed)
    ips = None
    if measure:
        ips = measure_throughput(
            model, timing_batch(model, data, batch_size), cfg, mode, warmup, repeats, clock
        )
    return PauseEvaluation(
        pause=cfg.key,
        mode=mode.value,
        metric_name=model.task.new_metric().name,
        metric=metric,
        flops=pause_cost(model, cfg, mode).total,
        images_per_s=ips,
        batch_size=batch_size,
        clock=clock,
    )


@torch.no_grad()
def predict_under_pause(
    model: Any,
    bank: HeadBank,
    splits: DataSplits,
    pause: PauseLike,
    mode: PauseMode | str = PauseMode.ENTROPY,
    names: tuple[str, ...] = ("val", "test"),
    batch_size: int = 1000,
    seed: int = 0,
    progress: Progress | None = None,
    device: str | Runtime | None = None,
) -> Predictions:
    """Exit-head predictions under one pause configuration, in the cache format of
    :func:`exitsearch.training.predict.predict` (rows: the bank's heads, then the final exit).

    Every head reads the assembled hidden state at its location (all tokens, paused ones as
    they were when paused), so the search scores exit configurations inside this pause
    configuration from the result. With an empty pause it equals ``predict`` exactly.

    Args:
        model: a :class:`PausingViT` (final exit: the backbone's own head) or a classification
            ``PaumerModel``.

        device: where the model and heads run (default: the CPU), under its precision; the
            pausing decisions' random draws come from the CPU generator either way.

    Raises:
        ConfigError: the model's main head is not a classifier.
    """
    rt = resolve_device(device or "cpu")
    vit: PausingViT = model.vit if hasattr(model, "vit") else model
    if getattr(model, "decoder", None) is not None:
        raise ConfigError("exit heads classify images; this model's task is not classification")
    head = model.head if hasattr(model, "head") else vit.backbone.final_head
    cfg = vit.resolve(pause)
    model.eval().to(rt.device)
    bank.eval().to(rt.device)
    locations = sorted({s.location for s in bank.specs})
    gen = torch.Generator().manual_seed(seed)

    def states_of(x: torch.Tensor) -> tuple[Mapping[int, torch.Tensor], torch.Tensor]:
        res = vit.forward_states(x, cfg, locations, mode, gen)
        return res.states, head(res.final)

    return predict_states(
        states_of,
        bank,
        splits,
        vit.backbone.input_transform(),
        rt,
        names=names,
        batch_size=batch_size,
        progress=progress,
        label=f" under pause {cfg.label}",
        num_classes=vit.backbone.num_classes,
    )
