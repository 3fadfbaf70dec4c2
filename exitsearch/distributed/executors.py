"""Where expensive trials run: in this process, a local process pool, or Ray tasks.

An executor maps a batch of :class:`~exitsearch.pausing.PauseJob` to results in the order of
the jobs; a job that raised is a :class:`TrialFailure` in its slot, never an exception that
ends the batch (a failed trial is a recorded state). The search driver does not know which
executor it has, so the same seed gives the same trials on every one of them.
"""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from exitsearch.distributed.shipping import ShippedFolder, ship_folder
from exitsearch.distributed.tasks import pause_trial_task
from exitsearch.pausing.pool import PauseJob, run_pause_job

__all__ = ["LocalExecutor", "RayExecutor", "TrialExecutor", "TrialFailure", "TrialResult"]

Runner = Callable[[PauseJob], Mapping[str, Any]]


@dataclass(frozen=True)
class TrialFailure:
    """A job that raised (after Ray's retries, for a lost node): the error in one line."""

    error: str


TrialResult = dict[str, Any] | TrialFailure


@runtime_checkable
class TrialExecutor(Protocol):
    """Runs a batch of jobs; called once per batch of trials by the search driver."""

    def map(self, jobs: Sequence[PauseJob]) -> list[TrialResult]:
        """Results of ``jobs`` in their order (``TrialFailure`` for a job that raised)."""

    def close(self) -> None:
        """Release workers; called by the owner when the search ends."""


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__


class LocalExecutor:
    """Jobs in this process (``workers <= 1``) or in a pool of spawned processes.

    The pool lives until :meth:`close`, so its processes keep their loaded models between
    batches (as Ray's reused workers do).
    """

    def __init__(
        self, workers: int = 1, *, threads: int | None = 1, runner: Runner = run_pause_job
    ) -> None:
        self.workers = workers
        self.threads = threads
        self.runner = runner
        self._pool: ProcessPoolExecutor | None = None

    def map(self, jobs: Sequence[PauseJob]) -> list[TrialResult]:
        if self.workers <= 1:
            out: list[TrialResult] = []
            for job in jobs:
                try:
                    out.append(pause_trial_task(job, None, self.runner, None))
                except Exception as exc:  # a failed trial is recorded, the search goes on
                    out.append(TrialFailure(_one_line(exc)))
            return out
        if self._pool is None:
            self._pool = ProcessPoolExecutor(
                max_workers=self.workers, mp_context=multiprocessing.get_context("spawn")
            )
        futures: list[Future[dict[str, Any]]] = [
            self._pool.submit(pause_trial_task, job, None, self.runner, self.threads)
            for job in jobs
        ]
        results: list[TrialResult] = []
        for fut in futures:
            try:
                results.append(fut.result())
            except Exception as exc:
                results.append(TrialFailure(_one_line(exc)))
        return results

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
            self._pool = None

    def __enter__(self) -> LocalExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class RayExecutor:
    """Each job a Ray task on the connected cluster (see :func:`~exitsearch.distributed.connect`).

    A task lost with its worker or node is resubmitted up to ``max_retries`` times (Ray's task
    retries; an exception raised by the job itself is not retried, it is a failed trial). The
    model folder of the jobs is shipped once through the object store, so nodes need no shared
    file system; the data must be readable at the job's path on every node.

    Args:
        max_retries: resubmissions of a task whose worker or node died.
        num_cpus: logical CPUs each task reserves (how many run at once per node).
        num_gpus: GPUs each task requests (1 for trials on ``cuda``; 0 runs them on CPUs).
        threads: torch threads inside each task.
        runner: the evaluation (top-level function of a ``PauseJob``).
        ship: ship model folders through the object store (False: nodes share the path).
        scheduling_strategy: Ray's placement; ``SPREAD`` (default) puts the tasks of a batch
            on different nodes. With Ray's default, a driver reuses its leased worker for the
            next queued task, and short trials all ran on the head node (measured: 14 of 14).
    """

    def __init__(
        self,
        *,
        max_retries: int = 3,
        num_cpus: float = 1,
        num_gpus: float = 0,
        threads: int | None = 1,
        runner: Runner = run_pause_job,
        ship: bool = True,
        scheduling_strategy: str = "SPREAD",
    ) -> None:
        import ray

        from exitsearch.distributed.cluster import ClusterError

        if not ray.is_initialized():
            raise ClusterError("RayExecutor needs a Ray connection; call connect(address) first")
        self.max_retries = max_retries
        self.threads = threads
        self.runner = runner
        self.ship = ship
        self._remote = ray.remote(pause_trial_task).options(
            num_cpus=num_cpus,
            num_gpus=num_gpus,
            max_retries=max_retries,
            retry_exceptions=False,
            scheduling_strategy=scheduling_strategy,
        )
        self._shipped: dict[tuple[str, int], ShippedFolder] = {}

    def _folder(self, model_dir: str) -> ShippedFolder | None:
        if not self.ship:
            return None
        path = Path(model_dir).resolve()
        key = (str(path), max((p.stat().st_mtime_ns for p in path.rglob("*")), default=0))
        if key not in self._shipped:
            self._shipped[key] = ship_folder(path)
        return self._shipped[key]

    def map(self, jobs: Sequence[PauseJob]) -> list[TrialResult]:
        import ray
        from ray.exceptions import RayError, RayTaskError

        refs = [
            self._remote.remote(job, self._folder(job.model_dir), self.runner, self.threads)
            for job in jobs
        ]
        out: list[TrialResult] = []
        for ref in refs:
            try:
                out.append(ray.get(ref))
            except RayTaskError as exc:  # the job raised: its own error, without Ray's wrapping
                cause = getattr(exc, "cause", None)
                out.append(TrialFailure(_one_line(cause if cause is not None else exc)))
            except RayError as exc:  # lost more often than max_retries allows
                out.append(TrialFailure(_one_line(exc)))
        return out

    def close(self) -> None:
        self._shipped.clear()

    def __enter__(self) -> RayExecutor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
