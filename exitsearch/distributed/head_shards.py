"""Classifier-wise head training sharded over Ray workers by location group, merged into one bank.

Heads trained classifier-wise (Multi-Exit ViT) are independent: each has its own loss, optimiser,
learning-rate schedule and early stopping, and the backbone is frozen. A shard is a group of
exit locations; its task runs :func:`~exitsearch.training.head_training.train_heads` on the shard's
heads, with one backbone forward (up to the shard's deepest location) per batch, and returns
the best weights. The driver merges the shards into one :class:`HeadBank` over the full list
of heads, in its order, and writes ``heads.safetensors`` / ``heads.json`` as ``train_heads``
does, so the pipeline's cache treats the result like any trained bank.

What is equal to what: a shard's heads are bit-for-bit the heads that ``train_heads`` trains
for that shard alone (same seed, same batches, same threads), on whichever node it runs and
however often it is retried. They are not the heads of one joint ``train_heads`` call over all
heads, because ``train_heads`` draws every head's initial weights and every dropout mask from
one global generator in list order: a head's draws depend on which heads come before it. The
batches themselves are shard-independent (a per-epoch generator), and so are losses, Adam and
the schedules (the summed loss gives each head exactly its own gradient). Making shards equal
the joint run needs per-head seeding in ``train_heads``: create head ``i`` right after
``torch.manual_seed(derive(seed, key_i))``, and seed ``derive(seed, key_i, epoch, batch)``
before its forward pass for its dropout. With that change (tried on a copy of ``train_heads``)
three shards of five heads, MLP heads with dropout among them, equalled the joint run bit for
bit over three epochs. Until then the shard plan is part of what the result depends on, and
the pipeline keys a sharded bank apart from a joint one.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

from exitsearch._io import atomic_write_json, sha256_of
from exitsearch.backbone.adapter import Backbone
from exitsearch.data.splits import DataSpec, DataSplits
from exitsearch.distributed.tasks import ShardJob, train_shard_task
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.progress import NullProgress, Progress
from exitsearch.training.head_training import (
    SUMMARY,
    WEIGHTS,
    HeadStatus,
    HeadTrainConfig,
    HeadTrainResult,
)

__all__ = [
    "backbone_bytes",
    "merge_shards",
    "shard_by_location",
    "shard_jobs",
    "train_heads_sharded",
]


def shard_by_location(specs: Sequence[HeadSpec], shards: int) -> list[list[HeadSpec]]:
    """Split heads into at most ``shards`` groups of whole, contiguous exit locations.

    Contiguous groups keep each shard's backbone pass short (the shallow shard stops early);
    the cut points balance the number of heads. Heads keep their order within a shard.

    Example:
        >>> specs = [HeadSpec("linear", m) for m in (1, 2, 3, 4)]
        >>> [[s.location for s in g] for g in shard_by_location(specs, 2)]
        [[1, 2], [3, 4]]

    Raises:
        ConfigError: ``shards < 1`` or no heads.
    """
    if shards < 1:
        raise ConfigError(f"`shards >= 1` must hold, but got shards={shards}")
    if not specs:
        raise ConfigError("no heads to train")
    locations = sorted({s.location for s in specs})
    counts = [sum(s.location == m for s in specs) for m in locations]
    n = min(shards, len(locations))
    groups: list[list[int]] = []
    left, start = sum(counts), 0
    for g in range(n):
        target = left / (n - g)
        stop, taken = start, 0
        # take at least one location, keep one for every later group
        while stop < len(locations) - (n - g - 1) and (
            stop == start or taken + counts[stop] / 2 <= target
        ):
            taken += counts[stop]
            stop += 1
        groups.append(locations[start:stop])
        left -= taken
        start = stop
    return [[s for s in specs if s.location in set(group)] for group in groups]


def backbone_bytes(backbone: Backbone) -> bytes:
    """The backbone's weights as safetensors bytes (what workers rebuild it from)."""
    from safetensors.torch import save as save_bytes

    return save_bytes({k: v.contiguous() for k, v in backbone.model.state_dict().items()})


def shard_jobs(
    backbone: Backbone,
    data: DataSpec,
    splits: DataSplits,
    shards: Sequence[Sequence[HeadSpec]],
    config: HeadTrainConfig,
    *,
    weights: Any = None,
    threads: int | None = 1,
) -> list[ShardJob]:
    """The picklable jobs of ``shards`` (``weights``: bytes or an object reference to them)."""
    if weights is None:
        weights = backbone_bytes(backbone)
    bspec = {**backbone.spec.to_dict(), "checkpoint": None, "pretrained": False}
    return [
        ShardJob(
            index=i,
            backbone=bspec,
            weights=weights,
            weights_sha256=backbone.weights_checksum(),
            data=data.to_dict(),
            data_fingerprint=splits.fingerprint(),
            specs=[s.to_dict() for s in shard],
            config=asdict(config),
            threads=threads,
        )
        for i, shard in enumerate(shards)
    ]


def merge_shards(
    backbone: Backbone, specs: Sequence[HeadSpec], results: Sequence[dict[str, Any]]
) -> tuple[HeadBank, list[HeadStatus]]:
    """One bank over ``specs`` (in that order) from the shards' results.

    Raises:
        ConfigError: a head of ``specs`` is in no shard or in two.
    """
    from safetensors.torch import load as load_bytes

    bank = HeadBank(specs, HeadContext.from_backbone(backbone))
    index = {s.key: i for i, s in enumerate(specs)}
    state: dict[str, Any] = {}
    statuses: dict[str, HeadStatus] = {}
    for res in results:
        shard_state = load_bytes(res["weights"])
        for j, st in enumerate(res["statuses"]):
            key = st["key"]
            if key not in index or key in statuses:
                raise ConfigError(f"head {key} is in no requested shard, or in two shards")
            statuses[key] = HeadStatus(**st)
            prefix, target = f"heads.{j}.", f"heads.{index[key]}."
            state.update(
                {
                    target + k[len(prefix) :]: v
                    for k, v in shard_state.items()
                    if k.startswith(prefix)
                }
            )
    missing = [s.key for s in specs if s.key not in statuses]
    if missing:
        raise ConfigError(f"no shard trained head(s) {', '.join(missing)}")
    bank.load_state_dict(state, strict=True)
    return bank.eval(), [statuses[s.key] for s in specs]


def train_heads_sharded(
    backbone: Backbone,
    data: DataSpec,
    splits: DataSplits,
    specs: Sequence[HeadSpec],
    config: HeadTrainConfig,
    out_dir: str | Path,
    *,
    shards: int | None = None,
    num_cpus: float = 1,
    threads: int | None = 1,
    max_retries: int = 3,
    progress: Progress | None = None,
    device: str = "cpu",
) -> HeadTrainResult:
    """Train ``specs`` as Ray tasks, one per shard, and merge them (needs a Ray connection).

    Args:
        data, splits: the data spec every node loads, and the splits the driver loaded from
            it (their fingerprint is checked on each node).
        shards: number of shards (default: the cluster's CPUs / ``num_cpus``, at most one per
            location).
        num_cpus, threads: logical CPUs each shard task reserves; torch threads inside it.
        max_retries: resubmissions of a shard whose node died (it restarts from scratch and
            gives the same weights).
        device: ``cpu``, ``cuda`` (each shard task requests one GPU), or ``auto`` (``cuda``
            when the cluster has GPUs).

    Writes ``heads.safetensors`` and ``heads.json`` into ``out_dir`` like ``train_heads``.
    """
    import ray

    from exitsearch.distributed.cluster import task_device

    progress = progress or NullProgress()
    if shards is None:
        shards = max(1, int(ray.cluster_resources().get("CPU", 1) // max(num_cpus, 1e-9)))
    groups = shard_by_location(specs, shards)
    t0 = time.perf_counter()
    weights_ref = ray.put(backbone_bytes(backbone))
    jobs = shard_jobs(backbone, data, splits, groups, config, weights=weights_ref, threads=threads)
    gpu = task_device(device) == "cuda"
    if gpu:
        jobs = [replace(job, device="cuda") for job in jobs]
    remote = ray.remote(train_shard_task).options(
        num_cpus=num_cpus,
        num_gpus=1 if gpu else 0,
        max_retries=max_retries,
        retry_exceptions=False,
    )
    task = f"heads: {len(specs)} heads in {len(groups)} shard(s) on the cluster"
    progress.start(task, len(groups))
    refs = [remote.remote(job) for job in jobs]
    results: list[dict[str, Any]] = []
    try:
        pending = list(refs)
        while pending:
            ready, pending = ray.wait(pending, num_returns=1)
            results.append(ray.get(ready[0]))
            progress.advance(task, 1)
    except ray.exceptions.RayTaskError as exc:
        cause = getattr(exc, "cause", None)
        raise (cause if isinstance(cause, Exception) else exc) from None
    finally:
        progress.finish(task)
    results.sort(key=lambda r: r["index"])
    bank, statuses = merge_shards(backbone, specs, results)
    seconds = time.perf_counter() - t0
    passes = sum(int(r["backbone_passes"]) for r in results)
    result = HeadTrainResult(bank, statuses, seconds, passes)
    identity = sha256_of(
        "heads-sharded-v1",
        backbone.weights_checksum(),
        splits.fingerprint(),
        [[s.to_dict() for s in g] for g in groups],
        asdict(config),
    )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bank.save(out / WEIGHTS, {"identity": identity})
    atomic_write_json(
        out / SUMMARY,
        {
            "identity": identity,
            "config": asdict(config),
            "shards": [
                {"heads": [s.key for s in g], "node": r["node_id"], "seconds": r["seconds"]}
                for g, r in zip(groups, results, strict=True)
            ],
            **result.summary(),
        },
    )
    return result
