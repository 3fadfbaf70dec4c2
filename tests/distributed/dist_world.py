"""What the distributed tests share: the tiny model geometry, the data, the cluster's handles."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from exitsearch.data import DataSpec

# 28 px images in 4 px patches (49 patch tokens), width 32, 6 blocks: pausing has room.
PAUSE_TINY: dict[str, Any] = {
    "img_size": 28,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 6,
    "num_heads": 2,
}
PAUSE_DATA = DataSpec(limit=96)
WORKER_RESOURCE = "second_node"  # a custom resource only the worker node has


@dataclass
class RayWorld:
    """The module's cluster: its launcher, the worker node, the connection, both node ids."""

    cluster: Any  # exitsearch.distributed.testing.LocalCluster
    worker: Any  # its LocalNode
    info: Any  # ClusterInfo of this process's connection
    head_id: str
    worker_id: str
