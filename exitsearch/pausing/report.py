"""PAUMER's experiment: the task metric against measured images per second for Table 1.

For each trained model (entropy pausing, the random-pausing baseline) every configuration of
:func:`exitsearch.core.pause.paper_table1` plus no pausing is scored; the no-pausing model
(Segmenter trained without pausing) is the baseline point. Metrics come from the process pool,
throughput from one process with every configuration interleaved (same inputs, same load).
``metric drop at +X % images/s`` is a skyline query as in the paper: the baseline metric minus
the best metric of any configuration of the series at least ``1 + X`` times as fast as the
baseline (None when no configuration is that fast).

Files written to the output folder: ``paumer_report.json``, ``paumer_report.csv``,
``paumer_report.png``. Points from elsewhere (a search-chosen front) join as ``extra`` points,
or, to be timed in the same interleaved rounds as everything else, as ``more_rows`` of
:func:`run_paumer_report` (``exitsearch pause search --report``); :func:`matched_speed` then
compares a searched series with Table 1 at matched images/s.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from exitsearch._io import atomic_path, atomic_write_json, atomic_write_text
from exitsearch.core.pause import PauseConfig, paper_table1
from exitsearch.data.splits import DataSpec
from exitsearch.errors import ConfigError
from exitsearch.pausing.costs import pause_cost
from exitsearch.pausing.evaluate import CLOCKS, time_entries, timing_batch
from exitsearch.pausing.model import load_paumer
from exitsearch.pausing.pool import PauseJob, cached_splits, evaluate_pause_jobs
from exitsearch.profile.flops import UNIT
from exitsearch.progress import NullProgress, Progress

__all__ = [
    "REPORT_CSV",
    "REPORT_JSON",
    "REPORT_PNG",
    "ReportPoint",
    "ReportSeries",
    "matched_speed",
    "run_paumer_report",
    "score_configurations",
    "skyline",
    "speedup_drops",
    "write_paumer_report",
]

REPORT_JSON = "paumer_report.json"
REPORT_CSV = "paumer_report.csv"
REPORT_PNG = "paumer_report.png"
BASELINE = "no pausing"
SPEEDUPS = (1.5, 2.0)


@dataclass(frozen=True)
class ReportSeries:
    """A trained model evaluated under many configurations: a named line on the plot."""

    name: str
    model_dir: str
    mode: str


@dataclass(frozen=True)
class ReportPoint:
    """One (series, configuration) point. ``extra`` points come from outside the report."""

    series: str
    pause: str
    mode: str
    metric: float
    images_per_s: float
    flops: int
    extra: bool = False
    info: Mapping[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ReportPoint:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


def skyline(points: Sequence[ReportPoint]) -> list[ReportPoint]:
    """Points no other point beats on both images/s and metric, fastest last."""
    front = [
        p
        for p in points
        if not any(
            q.images_per_s >= p.images_per_s
            and q.metric >= p.metric
            and (q.images_per_s, q.metric) != (p.images_per_s, p.metric)
            for q in points
        )
    ]
    return sorted(front, key=lambda p: p.images_per_s)


def speedup_drops(
    points: Sequence[ReportPoint], baseline: ReportPoint, speedups: Sequence[float] = SPEEDUPS
) -> dict[str, dict[str, Any]]:
    """For each speed-up ``s``: the best point at least ``s`` times as fast as ``baseline`` and
    its metric drop (absolute, in metric units, and relative to the baseline metric)."""
    out = {}
    for s in speedups:
        fast = [p for p in points if p.images_per_s >= s * baseline.images_per_s]
        best = max(fast, key=lambda p: p.metric, default=None)
        out[f"+{round((s - 1) * 100)}%"] = (
            {"reached": False}
            if best is None
            else {
                "reached": True,
                "pause": best.pause,
                "metric": best.metric,
                "speedup": best.images_per_s / baseline.images_per_s,
                "drop": baseline.metric - best.metric,
                "relative_drop": (baseline.metric - best.metric) / baseline.metric,
            }
        )
    return out


def matched_speed(
    points: Sequence[ReportPoint], reference: Sequence[ReportPoint]
) -> list[dict[str, Any]]:
    """For each point (slowest first): the best ``reference`` point at least as fast, and the
    metric difference (positive: the point beats the reference at matched images/s). ``None``
    fields when no reference point is that fast."""
    out = []
    for p in sorted(points, key=lambda q: q.images_per_s):
        fast = [r for r in reference if r.images_per_s >= p.images_per_s]
        best = max(fast, key=lambda r: (r.metric, r.images_per_s), default=None)
        out.append(
            {
                "pause": p.pause,
                "metric": p.metric,
                "images_per_s": p.images_per_s,
                "reference": None if best is None else best.pause,
                "reference_metric": None if best is None else best.metric,
                "reference_images_per_s": None if best is None else best.images_per_s,
                "difference": None if best is None else p.metric - best.metric,
            }
        )
    return out


def score_configurations(
    rows: Sequence[tuple[str, str, PauseConfig, str]],
    data: DataSpec,
    *,
    split: str = "val",
    workers: int = 1,
    batch_size: int = 64,
    warmup: int = 3,
    repeats: int = 15,
    clock: str = "wall",
    progress: Progress | None = None,
) -> list[ReportPoint]:
    """Score ``(series, model_dir, config, mode)`` rows: metric on the process pool, FLOPs, and
    images/s measured in this process with every row interleaved on the same inputs.

    ``images_per_s`` is on ``clock``; ``info`` holds the figures of every clock.
    """
    progress = progress or NullProgress()
    if clock not in CLOCKS:
        raise ConfigError(f"unknown clock {clock!r}; known: {', '.join(CLOCKS)}")
    if not rows:
        return []
    jobs = [
        PauseJob(
            model_dir=d, data=data.to_dict(), split=split, pause=c.to_dict(), mode=m, label=name
        )
        for name, d, c, m in rows
    ]
    metrics = evaluate_pause_jobs(jobs, workers, progress=progress)
    models = {d: load_paumer(d) for d in dict.fromkeys(d for _, d, _, _ in rows)}
    first = next(iter(models.values()))
    bb = first.backbone
    x = timing_batch(first, cached_splits(data.to_dict(), bb.preprocess()).get(split), batch_size)
    task = f"time {len(rows)} configurations ({repeats} interleaved rounds)"
    progress.start(task, None)
    try:
        ms = time_entries([(models[d], c, m) for _, d, c, m in rows], x, warmup, repeats)
    finally:
        progress.finish(task)
    ips = {k: [x.shape[0] / (t / 1e3) for t in v] for k, v in ms.items()}
    return [
        ReportPoint(
            series=name,
            pause=c.key,
            mode=m,
            metric=ev.metric,
            images_per_s=ips[clock][i],
            flops=pause_cost(models[d], c, m).total,
            info={
                "tokens": models[d].vit.token_counts(c),
                "metric": ev.metric_name,
                "clock": clock,
                **{f"images_per_s_{k}": v[i] for k, v in ips.items()},
            },
        )
        for i, ((name, d, c, m), ev) in enumerate(zip(rows, metrics, strict=True))
    ]


def run_paumer_report(
    series: Sequence[ReportSeries],
    baseline_dir: str | None,
    data: DataSpec,
    out_dir: str | Path,
    *,
    split: str = "val",
    configs: Sequence[PauseConfig] | None = None,
    workers: int = 1,
    batch_size: int = 64,
    warmup: int = 3,
    repeats: int = 15,
    clock: str = "wall",
    extra: Sequence[ReportPoint] = (),
    progress: Progress | None = None,
    command: str | None = None,
    more_rows: Sequence[tuple[str, str, PauseConfig, str]] = (),
    more_settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Score every series under ``configs`` (default: paper Table 1) and no pausing, measure
    throughput, and write the report files. Returns the JSON document written.

    ``more_rows`` (``(series, model_dir, config, mode)``, e.g. a searched front) are scored and
    timed with the others, in the same rounds; ``more_settings`` is recorded in the settings.

    Raises:
        ConfigError: no series and no baseline, or a configuration that does not fit a model.
    """
    if not series and not baseline_dir:
        raise ConfigError("the report needs at least one trained model")
    configs = list(paper_table1() if configs is None else configs)
    rows: list[tuple[str, str, PauseConfig, str]] = []
    if baseline_dir:
        rows.append((BASELINE, baseline_dir, PauseConfig(), "entropy"))
    for s in series:
        rows += [(s.name, s.model_dir, c, s.mode) for c in [PauseConfig(), *configs]]
    rows += list(more_rows)
    points = score_configurations(
        rows,
        data,
        split=split,
        workers=workers,
        batch_size=batch_size,
        warmup=warmup,
        repeats=repeats,
        clock=clock,
        progress=progress,
    )
    table1 = {c.key for c in paper_table1()}
    points = [replace(p, info={**p.info, "table1": p.pause in table1}) for p in points]
    first = load_paumer(rows[0][1])
    bb = first.backbone
    settings = {
        "data": data.to_dict(),
        "split": split,
        "batch_size": batch_size,
        "warmup": warmup,
        "repeats": repeats,
        "clock": clock,
        "threads": torch.get_num_threads(),
        "workers": workers,
        "metric": first.task.new_metric().name,
        "task": first.spec.task,
        "configs": [c.key for c in configs],
        "beyond_table1": [c.key for c in configs if c.key not in table1],
        "models": {s.name: {"dir": s.model_dir, "mode": s.mode} for s in series}
        | ({BASELINE: {"dir": baseline_dir, "mode": "none"}} if baseline_dir else {}),
        "num_samples": len(cached_splits(data.to_dict(), bb.preprocess()).get(split)),
        "command": command,
        **dict(more_settings or {}),
    }
    return write_paumer_report(points, out_dir, extra=extra, settings=settings)


def write_paumer_report(
    points: Sequence[ReportPoint],
    out_dir: str | Path,
    *,
    extra: Sequence[ReportPoint] = (),
    settings: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Write ``paumer_report.{json,csv,png}`` for ``points`` plus labelled ``extra`` points.

    The baseline is the series ``"no pausing"`` if present, else the unpaused point of the
    first series. Returns the JSON document.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    all_points = [*points, *(ReportPoint(**{**p.to_dict(), "extra": True}) for p in extra)]
    if not all_points:
        raise ConfigError("nothing to report: no points")
    baseline = next((p for p in all_points if p.series == BASELINE), None) or next(
        (p for p in all_points if not p.pause), all_points[0]
    )
    names = list(dict.fromkeys(p.series for p in all_points))
    summary = {
        n: speedup_drops([p for p in all_points if p.series == n], baseline)
        for n in names
        if n != BASELINE
    }
    metric = dict(settings or {}).get("metric", "metric")
    doc = {
        "unit": UNIT,
        "metric": metric,
        "baseline": baseline.to_dict(),
        "summary": summary,
        "points": [
            {
                **p.to_dict(),
                "speedup": p.images_per_s / baseline.images_per_s,
                "drop": baseline.metric - p.metric,
            }
            for p in all_points
        ],
        "settings": dict(settings or {}),
    }
    atomic_write_json(out / REPORT_JSON, doc)
    atomic_write_text(out / REPORT_CSV, _csv(doc["points"]))
    _plot(all_points, baseline, metric, dict(settings or {}).get("clock", "wall"), out / REPORT_PNG)
    return doc


def _csv(points: list[dict[str, Any]]) -> str:
    buf = io.StringIO()
    cols = [
        "series",
        "mode",
        "pause",
        "metric",
        "drop",
        "images_per_s",
        "speedup",
        "flops",
        "images_per_s_wall",
        "images_per_s_cpu",
        "tokens",
        "table1",
        "extra",
    ]
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(cols)

    def opt(p: dict[str, Any], key: str) -> str:
        v = p["info"].get(key)
        return "" if v is None else f"{v:.2f}"

    for p in points:
        w.writerow(
            [
                p["series"],
                p["mode"],
                p["pause"] or "none",
                f"{p['metric']:.6f}",
                f"{p['drop']:.6f}",
                f"{p['images_per_s']:.2f}",
                f"{p['speedup']:.4f}",
                p["flops"],
                opt(p, "images_per_s_wall"),
                opt(p, "images_per_s_cpu"),
                " ".join(map(str, p["info"].get("tokens", []))),
                "" if "table1" not in p["info"] else int(p["info"]["table1"]),
                int(p["extra"]),
            ]
        )
    return buf.getvalue()


def _plot(
    points: Sequence[ReportPoint], baseline: ReportPoint, metric: str, clock: str, path: Path
) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 5))
    styles = ["-o", "--s", "-.^", ":D", "-v", "--P"]
    scale = 100.0 if metric in ("mIoU", "accuracy") else 1.0
    unit = " (%)" if scale == 100.0 else ""
    k = 0
    for name in dict.fromkeys(p.series for p in points):
        if name == BASELINE:
            continue
        pts = [p for p in points if p.series == name]
        xs = [p.images_per_s for p in pts]
        ys = [p.metric * scale for p in pts]
        style = styles[k % len(styles)]
        k += 1
        line = ax.plot(xs, ys, style[-1], alpha=0.35, label=None)[0]
        front = skyline(pts)
        ax.plot(
            [p.images_per_s for p in front],
            [p.metric * scale for p in front],
            style,
            color=line.get_color(),
            label=f"{name} (skyline)",
        )
    ax.plot(
        [baseline.images_per_s],
        [baseline.metric * scale],
        "*",
        markersize=16,
        color="black",
        label=f"{baseline.series} (baseline)",
    )
    for s in SPEEDUPS:
        ax.axvline(s * baseline.images_per_s, color="grey", linestyle=":", linewidth=1)
        ax.text(
            s * baseline.images_per_s,
            ax.get_ylim()[0],
            f" x{s:g}",
            color="grey",
            va="bottom",
            fontsize=8,
        )
    what = {"wall": "wall clock", "cpu": "CPU time of one thread"}.get(clock, clock)
    ax.set_xlabel(f"images per second (measured, {what})")
    ax.set_ylabel(f"{metric}{unit}")
    ax.set_title(f"{metric} against measured throughput per pause configuration (PAUMER)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=120)
    plt.close(fig)
