"""What runs on a Ray worker: plain top-level functions of picklable arguments.

Nothing here imports Ray at module level; the executors wrap these functions with
``ray.remote`` when a cluster is in use, and the same functions run in-process otherwise. Every
result records the node it was computed on (``node_id``; ``"local"`` outside Ray), which is
how benchmarks and tests see where work went.
"""

from __future__ import annotations

import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from exitsearch.distributed.shipping import ShippedFolder, materialise

__all__ = [
    "LOCAL_NODE",
    "ShardJob",
    "bench_task",
    "latency_task",
    "node_id",
    "pause_trial_task",
    "train_shard_task",
]

LOCAL_NODE = "local"


def node_id() -> str:
    """The Ray node id of this process, or ``"local"`` outside a Ray worker."""
    ray = sys.modules.get("ray")
    if ray is None or not ray.is_initialized():
        return LOCAL_NODE
    return ray.get_runtime_context().get_node_id()


def _threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        torch.set_num_threads(threads)


# ------------------------------------------------------------------- pause trials
def pause_trial_task(
    job: Any,
    shipped: ShippedFolder | None,
    runner: Callable[[Any], Mapping[str, Any]],
    threads: int | None = 1,
) -> dict[str, Any]:
    """Evaluate one :class:`~exitsearch.pausing.PauseJob` with ``runner`` (by default
    :func:`~exitsearch.pausing.run_pause_job`), the model read from ``shipped`` when given."""
    _threads(threads)
    if shipped is not None:
        job = replace(job, model_dir=str(materialise(shipped)))
    t0 = time.perf_counter()
    out = dict(runner(job))
    out["seconds"] = time.perf_counter() - t0
    out["node_id"] = node_id()
    return out


# ------------------------------------------------------------------- head shards
@dataclass(frozen=True)
class ShardJob:
    """One shard of classifier-wise head training, as picklable values.

    Attributes:
        index: shard number (its heads are ``specs``, in the order of the full list).
        backbone: ``BackboneSpec.to_dict()`` of the architecture (no checkpoint: the weights
            travel in ``weights``).
        weights: safetensors bytes of the backbone's ``model.state_dict()``, or an object
            reference to them.
        weights_sha256: the backbone's ``weights_checksum()``, checked on the worker.
        data: ``DataSpec.to_dict()``; the data must be readable at that path on every node.
        data_fingerprint: ``DataSplits.fingerprint()`` on the driver, checked on the worker.
        specs: ``HeadSpec.to_dict()`` of the shard's heads.
        config: ``asdict(HeadTrainConfig)``.
    """

    index: int
    backbone: Mapping[str, Any]
    weights: Any
    weights_sha256: str
    data: Mapping[str, Any]
    data_fingerprint: str
    specs: Sequence[Mapping[str, Any]]
    config: Mapping[str, Any]
    threads: int | None = 1
    out_dir: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)
    device: str = "cpu"  # "cuda" when the task was given a GPU


def _load_backbone(spec: Mapping[str, Any], weights: Any, sha: str) -> Any:
    from safetensors.torch import load as load_bytes

    from exitsearch.backbone import BackboneSpec, create_backbone
    from exitsearch.errors import CheckpointError

    if not isinstance(weights, bytes | bytearray):
        import ray

        weights = ray.get(weights)
    bspec = BackboneSpec.from_dict({**dict(spec), "checkpoint": None, "pretrained": False})
    backbone = create_backbone(bspec)
    backbone.model.load_state_dict(load_bytes(bytes(weights)), strict=True)
    if backbone.weights_checksum() != sha:
        raise CheckpointError(f"node {node_id()}: the shipped backbone weights arrived altered")
    return backbone.eval()


def train_shard_task(job: ShardJob) -> dict[str, Any]:
    """Train one shard's heads with :func:`~exitsearch.training.head_training.train_heads`.

    Returns the shard's best weights (safetensors bytes, keys of a bank of the shard's heads),
    each head's :class:`HeadStatus` as a dict, seconds, backbone passes and the node.

    Raises:
        DataError: this node reads different data than the driver did.
    """
    from safetensors.torch import save as save_bytes

    from exitsearch.data import DataSpec, load_splits
    from exitsearch.errors import DataError
    from exitsearch.heads import HeadSpec
    from exitsearch.training.head_training import HeadTrainConfig, train_heads

    _threads(job.threads)
    backbone = _load_backbone(job.backbone, job.weights, job.weights_sha256)
    splits = load_splits(DataSpec.from_dict(dict(job.data)), preprocess=backbone.preprocess())
    if splits.fingerprint() != job.data_fingerprint:
        raise DataError(
            f"node {node_id()} reads different data than the driver for {dict(job.data)}; "
            "every node needs the same files at the same path"
        )
    specs = [HeadSpec.from_dict(dict(s)) for s in job.specs]
    config = HeadTrainConfig(**dict(job.config))
    if job.out_dir is not None:
        result = train_heads(backbone, splits, specs, config, job.out_dir, device=job.device)
    else:
        with tempfile.TemporaryDirectory(prefix=f"exitsearch-shard{job.index}-") as tmp:
            result = train_heads(backbone, splits, specs, config, tmp, device=job.device)
    state = {k: v.contiguous() for k, v in result.bank.state_dict().items()}
    return {
        "index": job.index,
        "weights": save_bytes(state),
        "statuses": [asdict(s) for s in result.statuses],
        "seconds": result.seconds,
        "backbone_passes": result.backbone_passes,
        "node_id": node_id(),
    }


# ------------------------------------------------------------- latency and bench
def latency_task(
    backbone: Mapping[str, Any],
    weights: Any,
    weights_sha256: str,
    device: str,
    batch_size: int,
    warmup: int = 3,
    repeats: int = 10,
    threads: int | None = None,
) -> dict[str, Any]:
    """The shipped backbone's latency table on this node's ``device``, timed inside the
    exported runtime (:func:`~exitsearch.export.timing.measure_in_runtime`); returns
    ``LatencyTable.to_json()`` plus ``node_id``."""
    from exitsearch.export.timing import measure_in_runtime

    _threads(threads)
    bb = _load_backbone(backbone, weights, weights_sha256)
    table = measure_in_runtime(bb, [], device, batch_size, warmup=warmup, repeats=repeats).table
    return {**table.to_json(), "node_id": node_id()}


def bench_task(
    bundle: ShippedFolder | str,
    device: str,
    batch_sizes: Sequence[int],
    repeats: int = 20,
    warmup: int = 3,
    threads: int | None = None,
    budget: str | None = None,
    stream: bool = True,
) -> dict[str, Any]:
    """:func:`~exitsearch.export.bench.benchmark` of an exported bundle on this node (batch
    mode, and with ``stream`` stream mode too); returns ``BenchReport.to_json()`` plus
    ``node_id``."""
    from exitsearch.export import benchmark, load_bundle

    _threads(threads)
    path = materialise(bundle) if isinstance(bundle, ShippedFolder) else Path(bundle)
    model = load_bundle(path)
    if budget is not None:
        model.set_operating_point(budget)
    report = benchmark(
        model, tuple(batch_sizes), device=device, repeats=repeats, warmup=warmup, stream=stream
    )
    return {**report.to_json(), "node_id": node_id()}
