"""Evaluating many pause configurations in parallel, one process per worker.

The unit of work, :func:`run_pause_job`, is a plain top-level function of a picklable
:class:`PauseJob` (paths and spec dicts, no tensors or modules), so a Ray task can call it
unchanged. Each process loads a model folder and a data split once and keeps them for the jobs
that follow. Workers start with the ``spawn`` method and one torch thread each.

Throughput measured by parallel workers is contended; jobs run here default to
``measure=False`` and the caller measures images/s afterwards on one process
(:func:`exitsearch.pausing.evaluate.measure_throughputs`).
"""

from __future__ import annotations

import json
import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

from exitsearch.core.pause import PauseConfig
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.splits import DataSpec, DataSplits, load_splits
from exitsearch.device import resolve_device
from exitsearch.pausing.evaluate import PauseEvaluation, evaluate_pause_config
from exitsearch.pausing.model import MODEL_FILE, PaumerModel, load_paumer
from exitsearch.progress import NullProgress, Progress

__all__ = ["PauseJob", "cached_splits", "evaluate_pause_jobs", "run_pause_job"]


@dataclass(frozen=True)
class PauseJob:
    """Everything one evaluation needs, as picklable values.

    Attributes:
        model_dir: folder written by ``PaumerModel.save`` / ``train_paumer``.
        data: ``DataSpec.to_dict()`` of the data.
        split: ``train``, ``val`` or ``test``.
        pause: ``PauseConfig.to_dict()`` (``{}``: no pausing).
        mode: ``entropy`` or ``random``.
        label: free text carried into the result.
        device: where the model runs (``cpu``, ``cuda``, ``cuda:N``, ``auto``); on CUDA under
            the device's mixed precision (:mod:`exitsearch.device`).
    """

    model_dir: str
    data: Mapping[str, Any]
    split: str = "val"
    pause: Mapping[str, float] = field(default_factory=dict)
    mode: str = "entropy"
    measure: bool = False
    batch_size: int = 64
    eval_batch_size: int = 256
    warmup: int = 3
    repeats: int = 10
    seed: int = 0
    label: str = ""
    clock: str = "wall"
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


_MODELS: dict[tuple[str, int], PaumerModel] = {}
_SPLITS: dict[str, DataSplits] = {}


def _model(folder: str) -> PaumerModel:
    path = Path(folder) / MODEL_FILE
    key = (str(Path(folder).resolve()), path.stat().st_mtime_ns if path.exists() else 0)
    if key not in _MODELS:
        _MODELS[key] = load_paumer(folder)
    return _MODELS[key]


def cached_splits(data: Mapping[str, Any], preprocess: Preprocess) -> DataSplits:
    key = json.dumps([dict(data), preprocess.to_dict()], sort_keys=True)
    if key not in _SPLITS:
        _SPLITS[key] = load_splits(DataSpec.from_dict(dict(data)), preprocess=preprocess)
    return _SPLITS[key]


def run_pause_job(job: PauseJob) -> dict[str, Any]:
    """Evaluate one job in this process; returns ``PauseEvaluation.to_dict()``."""
    rt = resolve_device(job.device)
    model = _model(job.model_dir).to(rt.device)
    bb = model.backbone
    data = cached_splits(job.data, bb.preprocess()).get(job.split)
    with rt.autocast():
        ev = evaluate_pause_config(
            model,
            data,
            PauseConfig.from_dict(job.pause),
            job.mode,
            batch_size=job.batch_size,
            eval_batch_size=job.eval_batch_size,
            warmup=job.warmup,
            repeats=job.repeats,
            seed=job.seed,
            measure=job.measure,
            clock=job.clock,
        )
    return {**ev.to_dict(), "label": job.label}


def _init_worker(threads: int) -> None:
    torch.set_num_threads(threads)


def evaluate_pause_jobs(
    jobs: Sequence[PauseJob],
    workers: int = 1,
    *,
    threads: int = 1,
    progress: Progress | None = None,
    runner: Callable[[PauseJob], dict[str, Any]] = run_pause_job,
) -> list[PauseEvaluation]:
    """Run ``jobs`` on ``workers`` processes (``<= 1``: in this process, in order).

    Results come back in the order of ``jobs`` whatever order they finish in.
    """
    progress = progress or NullProgress()
    task = f"evaluate {len(jobs)} pause configurations"
    progress.start(task, len(jobs))
    results: list[dict[str, Any] | None] = [None] * len(jobs)
    try:
        if workers <= 1:
            for i, job in enumerate(jobs):
                results[i] = runner(job)
                progress.advance(task)
        else:
            ctx = multiprocessing.get_context("spawn")
            with ProcessPoolExecutor(
                max_workers=workers, mp_context=ctx, initializer=_init_worker, initargs=(threads,)
            ) as pool:
                futures = {pool.submit(runner, job): i for i, job in enumerate(jobs)}
                for fut in as_completed(futures):
                    results[futures[fut]] = fut.result()
                    progress.advance(task)
    finally:
        progress.finish(task)
    return [PauseEvaluation.from_dict(r) for r in results if r is not None]
