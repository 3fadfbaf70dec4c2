"""Measured speed-up of an exported model against its backbone, next to the predicted one.

Ryu's exits predicted up to 3.83x and measured 1.00x; a prediction is only worth what a
measurement confirms. For each batch size the exported model and the backbone alone run on the
same inputs (real validation images when the bundle's data is available), interleaved within
one loop after a warm-up so that drifting clocks and background load hit both alike: every
round runs both on the same batch, in alternating order. Reported: the median time per batch of
each, the measured speed-up as the median of the per-round ratios (backbone time over exported
time, paired within a round) with a distribution-free 95 % interval, the speed-up the FLOPs
predict for exactly the samples that ran (``backbone FLOPs / mean FLOPs of their exits``), and
where the time goes (stem, each segment of blocks, each head, the exit bookkeeping), and the
milliseconds a latency table timed inside the same runtime just after predicts for those exits
(:mod:`exitsearch.export.timing`), set against the totals the rounds measured. The load
average before the run is recorded; a busy machine gets a note, since its ratios move from run
to run.

Two modes of the exported model are timed at every batch size above 1. *Batch* mode
(:meth:`MultiExitModel.run <exitsearch.export.runtime.MultiExitModel.run>`) runs each batch on
its own: the batch thins out exit by exit, and the later blocks run on a few samples, where
fixed per-operation costs dominate. *Stream* mode (:meth:`MultiExitModel.predict
<exitsearch.export.runtime.MultiExitModel.predict>`) runs the same inputs, in the same batches,
as one stream: the samples that go on wait for others and every stage runs on full batches. It
has no per-batch latency; its per-batch figure is the time of the whole stream over the number
of batches. The backbone has no exits, so both modes are the same for it.
"""

from __future__ import annotations

import os
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
import torch

from exitsearch._io import portable_path
from exitsearch._memory import check_fits_in_memory
from exitsearch.core.costs import latency_exit_ms
from exitsearch.core.task import Task
from exitsearch.errors import ConfigError, DataError
from exitsearch.export.runtime import ExitOutput, MultiExitModel
from exitsearch.export.timing import measure_in_runtime
from exitsearch.intervals import median_interval
from exitsearch.profile.latency import resolve_device

__all__ = [
    "BenchReport",
    "BenchRow",
    "PartTime",
    "against_prediction",
    "bench_inputs",
    "benchmark",
]


@dataclass(frozen=True)
class PartTime:
    """Mean milliseconds per batch spent in one part of the multi-exit forward pass."""

    part: str
    ms: float
    share: float


@dataclass(frozen=True)
class BenchRow:
    """One engine at one batch size.

    Attributes:
        engine: ``torch`` or ``onnx``.
        mode: ``batch`` (every batch on its own) or ``stream`` (the batches as one stream).
        batch_size: images per batch.
        batches: timed batches per model.
        backbone_ms, model_ms: median milliseconds per batch (stream mode: the median pass
            over the number of batches in it).
        backbone_images_per_s, model_images_per_s: ``batch_size`` over those medians.
        measured_speedup: the median over rounds of backbone time / exported time, both timed
            on the same inputs in the same round (:attr:`round_speedups`).
        speedup_low, speedup_high: a 95 % interval of that median (distribution-free; the
            range of the rounds when there are fewer than 6).
        round_speedups: the per-round ratios.
        round_ms: the exported model's milliseconds in each round (a pass in stream mode).
        round_exit_counts: samples per exit in each round (a pass in stream mode), to set
            each round's time against a prediction for the exits its samples took.
        predicted_sample_ms: milliseconds per sample that a latency table timed inside this
            runtime on this machine just after predicts for the exits the samples took
            (:mod:`exitsearch.export.timing`), at batch 1 and in stream mode, where every stage
            runs on full batches as the table's parts do; None otherwise and for pause
            configurations.
        measured_sample_ms: the exported model's total time over the rounds per sample.
        total_speedup: the backbone's total time over the exported model's, in the same rounds.
        predicted_speedup_ms: the table's plain backbone forward over ``predicted_sample_ms``:
            the speed-up predicted in milliseconds, to set ``total_speedup`` against (both are
            paired, so a machine that speeds up or slows down moves neither).
        predicted_speedup: backbone FLOPs over the mean FLOPs of the exits the samples took.
        mean_flops: that mean, per sample.
        exit_counts: samples per exit over the timed batches, each counted once (rounds cycle
            over them).
        accuracy, backbone_accuracy: on the timed samples (each once), when labels are known.
        parts: the per-part profile (an instrumented pass; its sum exceeds ``model_ms`` a
            little because every part is synchronised).
    """

    engine: str
    batch_size: int
    batches: int
    backbone_ms: float
    model_ms: float
    backbone_images_per_s: float
    model_images_per_s: float
    measured_speedup: float
    speedup_low: float
    speedup_high: float
    predicted_speedup: float
    mean_flops: float
    exit_counts: list[int]
    accuracy: float | None
    backbone_accuracy: float | None
    parts: list[PartTime] = field(default_factory=list)
    mode: str = "batch"
    round_speedups: list[float] = field(default_factory=list)
    round_ms: list[float] = field(default_factory=list)
    round_exit_counts: list[list[int]] = field(default_factory=list)
    predicted_sample_ms: float | None = None
    measured_sample_ms: float | None = None
    total_speedup: float | None = None
    predicted_speedup_ms: float | None = None

    @property
    def label(self) -> str:
        """``torch b=64``, ``torch stream b=64``: how tables name the row."""
        mode = "" if self.mode == "batch" else f" {self.mode}"
        return f"{self.engine}{mode} b={self.batch_size}"


@dataclass
class BenchReport:
    """What ran, where, and the rows; ``load_average``: the machine's 1, 5 and 15 minute load
    averages before the run (None where the system has none) over ``cpus`` processors;
    ``notes``: what may make the figures move between runs."""

    bundle: str
    device: str
    device_name: str
    threads: int
    inputs: str
    warmup: int
    repeats: int
    backbone_flops: float
    configuration: str
    operating_point: int | None
    rows: list[BenchRow] = field(default_factory=list)
    load_average: list[float] | None = None
    cpus: int = 1
    notes: list[str] = field(default_factory=list)
    quality: str = "accuracy"
    """What the rows' ``accuracy`` fields hold: the accuracy, or a counting task's MAE."""

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def bench_inputs(
    model: MultiExitModel, n: int, seed: int = 0
) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """``n`` model inputs: validation images of the bundle's data when it can be loaded, else
    standard-normal noise. Returns ``(x, labels or None, description)``."""
    from exitsearch.data import DataSpec, load_splits

    data = ((model.manifest or {}).get("meta") or {}).get("data")
    why = "the bundle records no data"
    if data:
        try:
            spec = DataSpec.from_dict(dict(data))
            bb = model.backbone
            splits = load_splits(spec, preprocess=bb.preprocess())
            val = splits.val
            take = np.arange(min(n, len(val)))
            x = bb.input_transform()(val.batch(take))
            y = torch.from_numpy(np.asarray(val.y[take], dtype=np.int64))
            return x, y, f"{spec.source} validation ({len(take)} images)"
        except (DataError, ConfigError, TypeError, ValueError) as exc:
            # not on this machine, or not where it was: noise, and the reason
            why = f"the bundle's data cannot be read here: {str(exc).split(';')[0]}"
    gen = torch.Generator().manual_seed(seed)
    bb = model.backbone
    x = torch.randn((n, bb.in_chans, *bb.img_size), generator=gen)
    return x, None, f"random normal ({n} inputs; {why})"


def _check_batch_memory(model: MultiExitModel, batch_size: int) -> None:
    """Refuse a batch whose inputs and one block's activations cannot fit in memory."""
    bb = model.backbone
    per_sample = 4 * bb.in_chans * bb.img_size[0] * bb.img_size[1]  # float32 input
    # tokens of a block: input, attention output, and the MLP's 4x-wide hidden layer
    per_sample += 4 * max(bb.state_tokens(m) * bb.state_dim(m) for m in range(bb.depth + 1)) * 6
    check_fits_in_memory(
        batch_size * per_sample,
        f"batch size {batch_size}",
        "choose a smaller --batch-size",
    )


def benchmark(
    model: MultiExitModel,
    batch_sizes: Sequence[int] = (1, 64),
    *,
    device: str = "cpu",
    repeats: int = 20,
    warmup: int = 3,
    inputs: tuple[torch.Tensor, torch.Tensor | None, str] | None = None,
    onnx_model: Any | None = None,
    stream: bool = True,
    stream_repeats: int = 5,
    predict_ms: bool = True,
) -> BenchReport:
    """Time ``model`` against its backbone at each batch size (and its ONNX twin, if given).

    Each repeat runs the next batch of the input pool (``batch_size * repeats`` inputs, reused
    cyclically when fewer exist) through both models, alternating which goes first. With
    ``stream``, at each batch size above 1 the whole pool also runs as one stream
    (:meth:`MultiExitModel.predict`) against the backbone on the same batches,
    ``stream_repeats`` times, alternating which goes first. With ``predict_ms``, the batch-1
    and stream rows are set against a latency table timed inside their runtime right after
    (:func:`against_prediction`).

    Raises:
        ConfigError: a batch size or repeat count below 1, or an unavailable device.
    """
    if not batch_sizes or any(b < 1 for b in batch_sizes):
        raise ConfigError(f"batch sizes must be positive integers, got {list(batch_sizes)}")
    if repeats < 1 or warmup < 0 or stream_repeats < 1:
        raise ConfigError(
            "`repeats >= 1`, `warmup >= 0` and `stream_repeats >= 1` must hold, got "
            f"({repeats=}, {warmup=}, {stream_repeats=})"
        )
    _check_batch_memory(model, max(batch_sizes))
    dev = resolve_device(device)
    model = model.to(dev).eval()
    pool, labels, described = inputs or bench_inputs(model, max(batch_sizes) * repeats)
    costs = model.costs
    if onnx_model is not None:
        onnx_model.set_thresholds(model.thresholds)  # both engines decide alike
    report = BenchReport(
        bundle=portable_path(model.source) or "",
        device=device,
        device_name=torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu",
        threads=torch.get_num_threads(),
        inputs=described,
        warmup=warmup,
        repeats=repeats,
        backbone_flops=costs.backbone_flops,
        configuration=model.describe(),
        operating_point=model.point_index,
        quality=model.task.quality,
    )
    scorer = _Scorer(model.task)
    report.load_average, report.cpus = _load()
    busy = _busy_note(report.load_average, report.cpus)
    if busy:
        report.notes.append(busy)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    for b in batch_sizes:
        batches = _batches(pool, labels, b, repeats)
        dev_batches = [(x.to(dev), y) for x, y in batches]

        def run_backbone(x: torch.Tensor) -> torch.Tensor:
            with torch.inference_mode():
                return model.backbone(x)

        report.rows.append(
            _measure(
                "torch",
                b,
                dev_batches,
                run_backbone,
                model.__call__,
                lambda x, tick: _inference(model.run, x, tick),
                sync,
                warmup,
                repeats,
                costs.exit_flops,
                costs.backbone_flops,
                scorer,
            )
        )
        if stream and b > 1:
            report.rows.append(
                _measure_stream(
                    "torch",
                    b,
                    dev_batches,
                    run_backbone,
                    model.predict,
                    sync,
                    stream_repeats,
                    costs.exit_flops,
                    costs.backbone_flops,
                    scorer,
                )
            )
        if onnx_model is not None:
            np_batches = [(x.numpy(), y) for x, y in batches]
            report.rows.append(
                _measure(
                    "onnx",
                    b,
                    np_batches,
                    onnx_model.backbone_forward,
                    onnx_model.run,
                    onnx_model.run,
                    lambda: None,
                    warmup,
                    repeats,
                    costs.exit_flops,
                    costs.backbone_flops,
                    scorer,
                )
            )
            if stream and b > 1:
                report.rows.append(
                    _measure_stream(
                        "onnx",
                        b,
                        np_batches,
                        onnx_model.backbone_forward,
                        onnx_model.predict,
                        lambda: None,
                        stream_repeats,
                        costs.exit_flops,
                        costs.backbone_flops,
                        scorer,
                    )
                )
    if predict_ms and not model.config.pause:
        _predict_ms(report, model, device, onnx_model)
    return report


def _predict_ms(
    report: BenchReport, model: MultiExitModel, device: str, onnx_model: Any | None
) -> None:
    """Set every row against the milliseconds a latency table predicts for the exits its
    samples took, the table timed inside the row's runtime at its batch size just now."""
    exits = list(model.config.exits)
    engines = {"torch": device} if onnx_model is None else {"torch": device, "onnx": "cpu"}
    shared = onnx_model is not None and str(onnx_model.thread_pool).startswith("shared")
    for b in sorted({r.batch_size for r in report.rows}):
        for engine, dev in engines.items():
            # the table's parts run on full batches: what batch 1 and stream mode run, not a
            # batch that thins out exit by exit
            rows = [
                i
                for i, r in enumerate(report.rows)
                if (r.batch_size, r.engine) == (b, engine) and (b == 1 or r.mode == "stream")
            ]
            if not rows:
                continue
            rt = measure_in_runtime(
                model.backbone,
                exits,
                dev,
                b,
                task=model.task.name,
                engine=engine,
                shared_threads=shared,
            )
            exit_ms = latency_exit_ms(
                rt.table,
                [rt.heads_ms[s.key] / b for s in exits],
                model.config.locations,
                model.config.cut,
            )
            for i in rows:
                report.rows[i] = against_prediction(report.rows[i], exit_ms, rt.table.full_ms / b)


def against_prediction(row: BenchRow, exit_ms: np.ndarray, backbone_ms: float) -> BenchRow:
    """``row`` with its totals over the rounds per sample against the prediction ``exit_ms``
    (per sample, by exit) and the backbone's predicted ``backbone_ms`` per sample."""
    counts = np.asarray(row.round_exit_counts, dtype=np.float64)
    model_ms = np.asarray(row.round_ms, dtype=np.float64)
    predicted = float((counts @ exit_ms).sum() / counts.sum())
    # each round's backbone time is its speed-up times the model's time in that round
    backbone_total = float((np.asarray(row.round_speedups) * model_ms).sum())
    return replace(
        row,
        predicted_sample_ms=predicted,
        measured_sample_ms=float(model_ms.sum() / counts.sum()),
        total_speedup=backbone_total / float(model_ms.sum()),
        predicted_speedup_ms=backbone_ms / predicted,
    )


def _load() -> tuple[list[float] | None, int]:
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except (AttributeError, OSError):  # no load average on this system
        load = None
    return load, os.cpu_count() or 1


# A 1-minute load average above this share of the processors counts as a busy machine.
BUSY_SHARE = 0.5


def _busy_note(load: list[float] | None, cpus: int) -> str | None:
    if load is None or load[0] < BUSY_SHARE * cpus:
        return None
    return (
        f"the machine was busy (load average {load[0]:.2f} over the last minute on {cpus} "
        "processor(s)): other work shares the processors, so the measured ratios may move "
        "between runs; rerun on an idle machine for figures to compare"
    )


def _paired(t_bb: list[float], t_model: list[float]) -> tuple[list[float], float, float, float]:
    """Per-round speed-ups, their median and its 95 % interval."""
    ratios = [a / b for a, b in zip(t_bb, t_model, strict=True)]
    median, low, high = median_interval(ratios)
    return ratios, median, low, high


def _inference(fn: Callable[..., ExitOutput], x: torch.Tensor, tick: Any) -> ExitOutput:
    with torch.inference_mode():
        return fn(x, tick)


def _batches(
    pool: torch.Tensor, labels: torch.Tensor | None, b: int, repeats: int
) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
    n = pool.shape[0]
    if n < b:
        reps = -(-b // n)
        pool = pool.repeat(reps, *([1] * (pool.dim() - 1)))[:b]
        labels = None if labels is None else labels.repeat(reps)[:b]
        n = b
    count = max(1, min(repeats, n // b))
    return [
        (
            pool[i * b : (i + 1) * b].contiguous(),
            None if labels is None else labels[i * b : (i + 1) * b],
        )
        for i in range(count)
    ]


def _measure(
    engine: str,
    b: int,
    batches: list[tuple[Any, torch.Tensor | None]],
    backbone_fn: Callable[[Any], Any],
    model_fn: Callable[[Any], ExitOutput],
    profiled_fn: Callable[[Any, Any], ExitOutput],
    sync: Callable[[], None],
    warmup: int,
    repeats: int,
    exit_flops: Sequence[float],
    backbone_flops: float,
    scorer: _Scorer,
) -> BenchRow:
    for w in range(warmup):
        x = batches[w % len(batches)][0]
        backbone_fn(x)
        model_fn(x)
    sync()
    t_bb: list[float] = []
    t_model: list[float] = []
    exits: list[np.ndarray] = []
    right = right_bb = seen = 0
    for r in range(repeats):
        x, y = batches[r % len(batches)]
        for first in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            out = backbone_fn(x) if first == 0 else model_fn(x)
            sync()
            (t_bb if first == 0 else t_model).append((time.perf_counter() - t0) * 1e3)
            if first == 0:
                bb_logits = out
            else:
                model_out = out
        exits.append(model_out.exit_index.cpu().numpy())
        # rounds cycle over the batches: the exits and the score count each image once
        if y is not None and r < len(batches):
            right += scorer.total(model_out.prediction, y)
            right_bb += scorer.total(scorer.predict(bb_logits), y)
            seen += len(y)
    idx = np.concatenate(exits[: len(batches)])  # each image once
    mean_flops = float(np.asarray(exit_flops, dtype=np.float64)[idx].mean())
    med_bb, med_model = statistics.median(t_bb), statistics.median(t_model)
    ratios, speedup, low, high = _paired(t_bb, t_model)
    return BenchRow(
        engine=engine,
        batch_size=b,
        batches=repeats,
        backbone_ms=med_bb,
        model_ms=med_model,
        backbone_images_per_s=b / (med_bb / 1e3),
        model_images_per_s=b / (med_model / 1e3),
        measured_speedup=speedup,
        speedup_low=low,
        speedup_high=high,
        round_speedups=ratios,
        predicted_speedup=backbone_flops / mean_flops,
        mean_flops=mean_flops,
        exit_counts=np.bincount(idx, minlength=len(exit_flops)).tolist(),
        round_ms=t_model,
        round_exit_counts=[np.bincount(e, minlength=len(exit_flops)).tolist() for e in exits],
        accuracy=scorer.shown(right / seen) if seen else None,
        backbone_accuracy=scorer.shown(right_bb / seen) if seen else None,
        parts=_profile(batches, profiled_fn, sync, repeats),
    )


def _measure_stream(
    engine: str,
    b: int,
    batches: list[tuple[Any, torch.Tensor | None]],
    backbone_fn: Callable[[Any], Any],
    predict_fn: Callable[..., ExitOutput],
    sync: Callable[[], None],
    repeats: int,
    exit_flops: Sequence[float],
    backbone_flops: float,
    scorer: _Scorer,
) -> BenchRow:
    """Stream mode: the batches as one stream through the model (``predict_fn(pool, b,
    tick)``), against the backbone on the same batches; each pass timed whole, ``repeats``
    passes after one untimed pass each."""
    xs = [x for x, _ in batches]
    pool = torch.cat(xs) if isinstance(xs[0], torch.Tensor) else np.concatenate(xs)
    labels = [y for _, y in batches]

    def run_backbone() -> list[Any]:
        return [backbone_fn(x) for x in xs]

    def run_model() -> ExitOutput:
        return predict_fn(pool, b)

    run_backbone()
    run_model()
    sync()
    t_bb: list[float] = []
    t_model: list[float] = []
    for r in range(repeats):
        for first in (0, 1) if r % 2 == 0 else (1, 0):
            t0 = time.perf_counter()
            out = run_backbone() if first == 0 else run_model()
            sync()
            (t_bb if first == 0 else t_model).append((time.perf_counter() - t0) * 1e3)
            if first == 0:
                bb_logits = out
            else:
                model_out = out
    idx = model_out.exit_index.cpu().numpy()
    mean_flops = float(np.asarray(exit_flops, dtype=np.float64)[idx].mean())
    right = right_bb = None
    if all(y is not None for y in labels):
        y_all = torch.cat(labels)  # type: ignore[arg-type]
        right = scorer.shown(scorer.total(model_out.prediction, y_all) / len(y_all))
        bb_pred = torch.cat([scorer.predict(t) for t in bb_logits])
        right_bb = scorer.shown(scorer.total(bb_pred, y_all) / len(y_all))
    n_batches = len(batches)
    # every pass runs the same images, so a pass is a throughput measurement of its own and
    # the median pass is the throughput least disturbed by other load on the machine
    med_bb, med_model = statistics.median(t_bb), statistics.median(t_model)
    ratios, speedup, low, high = _paired(t_bb, t_model)
    return BenchRow(
        engine=engine,
        batch_size=b,
        batches=n_batches * repeats,
        backbone_ms=med_bb / n_batches,
        model_ms=med_model / n_batches,
        backbone_images_per_s=len(pool) / (med_bb / 1e3),
        model_images_per_s=len(pool) / (med_model / 1e3),
        measured_speedup=speedup,
        speedup_low=low,
        speedup_high=high,
        round_speedups=ratios,
        predicted_speedup=backbone_flops / mean_flops,
        mean_flops=mean_flops,
        exit_counts=np.bincount(idx, minlength=len(exit_flops)).tolist(),
        round_ms=t_model,
        # every pass runs the same images with the same thresholds: the same exits
        round_exit_counts=[np.bincount(idx, minlength=len(exit_flops)).tolist()] * len(t_model),
        accuracy=right,
        backbone_accuracy=right_bb,
        parts=_profile([(pool, None)], lambda x, tick: predict_fn(x, b, tick), sync, 1, n_batches),
        mode="stream",
    )


class _Scorer:
    """Predictions and scores of a task on timed batches: right predictions (accuracy), or
    minus the absolute error of a count (MAE)."""

    def __init__(self, task: Task) -> None:
        self.task = task

    def predict(self, outputs: Any) -> torch.Tensor:
        """The prediction from a backbone's raw outputs (a tensor or an array)."""
        return self.task.statistics(torch.as_tensor(np.asarray(_cpu(outputs))))[2]

    def total(self, pred: torch.Tensor, y: torch.Tensor) -> float:
        return float(self.task.scores(pred.cpu().numpy(), y.cpu().numpy()).sum())

    def shown(self, mean_score: float) -> float:
        return self.task.shown(mean_score)


def _cpu(t: Any) -> Any:
    return t.cpu() if isinstance(t, torch.Tensor) else t


def _profile(
    batches: list[tuple[Any, torch.Tensor | None]],
    fn: Callable[[Any, Any], ExitOutput],
    sync: Callable[[], None],
    repeats: int,
    per: int = 1,
) -> list[PartTime]:
    """Mean milliseconds per batch of each part, from one instrumented pass per repeat (a pass
    covering ``per`` batches counts as that many)."""
    totals: dict[str, float] = {}
    clock = [0.0]

    def tick(part: str) -> None:
        sync()
        now = time.perf_counter()
        totals[part] = totals.get(part, 0.0) + (now - clock[0]) * 1e3
        clock[0] = now

    for r in range(repeats):
        x = batches[r % len(batches)][0]
        sync()
        clock[0] = time.perf_counter()
        fn(x, tick)
    whole = sum(totals.values()) or 1.0
    return [PartTime(p, ms / (repeats * per), ms / whole) for p, ms in totals.items()]
