"""The pipeline's heads stage on a Ray cluster (``exitsearch run --ray-address``), built from the
shards and tasks of :mod:`exitsearch.distributed`.

Called by :func:`exitsearch.pipeline.run.stage_heads` when ``RunSettings.ray_address`` is set;
everything else of the pipeline is unchanged: the exit search scores cached predictions in the
driver's process, far faster than a Ray task's round trip (see :mod:`exitsearch.distributed`). Heads
have seeds of their own, so the sharded bank equals the joint one and shares its cache entry.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from exitsearch.distributed.cluster import ray_cluster
from exitsearch.distributed.head_shards import shard_by_location, train_heads_sharded
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.training.head_training import HeadTrainResult

if TYPE_CHECKING:
    from exitsearch.pipeline.run import RunContext

__all__ = ["train_heads_on_cluster"]


def train_heads_on_cluster(
    ctx: RunContext, folder: Path, specs: list[HeadSpec] | None = None
) -> HeadTrainResult:
    """Train ``specs`` (default: the run's candidate heads) sharded over the cluster into
    ``folder``.

    Shards: ``RunSettings.head_shards``, by default one per logical CPU of the cluster (at most
    one per location).
    """
    settings = ctx.settings
    with ray_cluster(settings.ray_address) as info:
        if info is None:
            raise ConfigError("training heads on a cluster needs RunSettings.ray_address")
        ctx.progress.log(f"heads: {info.describe()}")
        specs = ctx.candidates if specs is None else specs
        shards = settings.head_shards or max(1, int(info.cpus))
        groups = shard_by_location(specs, shards)
        return train_heads_sharded(
            ctx.backbone,
            settings.data,
            ctx.splits,
            specs,
            settings.heads,
            folder,
            shards=len(groups),
            progress=ctx.progress,
            device=settings.device,
        )
