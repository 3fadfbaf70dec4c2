"""Measurements that belong to a device: latency tables and bench runs, one Ray task each.

A latency table or a bench run describes the machine it ran on, so each ``(device, batch
size)`` is its own task, placed by its resources: ``cuda`` tasks reserve a GPU, CPU tasks
``num_cpus`` logical CPUs, and ``resources`` (e.g. ``{"jetson": 1}`` for nodes started with
``ray start --resources '{"jetson": 1}'``) pins a task to a kind of node. Every result carries
the ``node_id`` it was measured on.

Timings taken while other tasks share the node are contended. Reserve the node's whole CPU
count (``num_cpus``) when a latency table must describe an idle machine.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch.backbone.adapter import Backbone
from exitsearch.distributed.head_shards import backbone_bytes
from exitsearch.distributed.shipping import ship_folder
from exitsearch.distributed.tasks import bench_task, latency_task
from exitsearch.errors import ConfigError
from exitsearch.profile.latency import LatencyTable

__all__ = ["DeviceJob", "bench_on_cluster", "profile_latency_on_cluster"]


@dataclass(frozen=True)
class DeviceJob:
    """Where one measurement runs.

    Attributes:
        device: ``cpu`` or ``cuda`` (``cuda:N``) on the node that takes the task.
        batch_size: images per batch (latency tables; bench runs take ``batch_sizes``).
        resources: extra Ray resources the task needs (a kind of node).
    """

    device: str = "cpu"
    batch_size: int = 1
    resources: Mapping[str, float] | None = None

    def __post_init__(self) -> None:
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if self.device != "cpu" and not self.device.startswith("cuda"):
            raise ConfigError(f"unknown device {self.device!r}; expected cpu or cuda")


def _options(job: DeviceJob, num_cpus: float, max_retries: int) -> dict[str, Any]:
    opts: dict[str, Any] = {"num_cpus": num_cpus, "max_retries": max_retries}
    if job.device.startswith("cuda"):
        opts["num_gpus"] = 1
    if job.resources:
        opts["resources"] = dict(job.resources)
    return opts


def _gather(refs: list[Any]) -> list[dict[str, Any]]:
    import ray

    out = []
    for ref in refs:
        try:
            out.append(ray.get(ref))
        except ray.exceptions.RayTaskError as exc:
            cause = getattr(exc, "cause", None)
            raise (cause if isinstance(cause, Exception) else exc) from None
    return out


def profile_latency_on_cluster(
    backbone: Backbone,
    jobs: Sequence[DeviceJob],
    *,
    warmup: int = 3,
    repeats: int = 10,
    num_cpus: float = 1,
    threads: int | None = None,
    max_retries: int = 2,
) -> list[tuple[LatencyTable, str]]:
    """A latency table per job, measured on the node that ran it: ``[(table, node_id)]``.

    The backbone travels through the object store; nodes need only exitsearch installed.
    """
    import ray

    weights = ray.put(backbone_bytes(backbone))
    spec = {**backbone.spec.to_dict(), "checkpoint": None, "pretrained": False}
    sha = backbone.weights_checksum()
    refs = [
        ray.remote(latency_task)
        .options(**_options(job, num_cpus, max_retries))
        .remote(spec, weights, sha, job.device, job.batch_size, warmup, repeats, threads)
        for job in jobs
    ]
    out = []
    for doc in _gather(refs):
        node = doc.pop("node_id")
        out.append((LatencyTable.from_json(doc), node))
    return out


def bench_on_cluster(
    bundle: str | Path,
    jobs: Sequence[DeviceJob],
    batch_sizes: Sequence[int] = (1, 64),
    *,
    repeats: int = 20,
    warmup: int = 3,
    budget: str | None = None,
    num_cpus: float = 1,
    threads: int | None = None,
    max_retries: int = 2,
    stream: bool = True,
) -> list[dict[str, Any]]:
    """``BenchReport.to_json()`` of an exported bundle per job, plus the ``node_id`` it ran on
    (batch mode, and with ``stream`` stream mode too).

    The bundle folder is shipped through the object store (nodes need no shared files).
    """
    import ray

    shipped = ship_folder(bundle)
    refs = [
        ray.remote(bench_task)
        .options(**_options(job, num_cpus, max_retries))
        .remote(shipped, job.device, tuple(batch_sizes), repeats, warmup, threads, budget, stream)
        for job in jobs
    ]
    return _gather(refs)
