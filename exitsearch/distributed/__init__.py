"""Running the expensive parts of exitsearch on an existing Ray cluster.

Connect with :func:`connect` (``--ray-address HOST:PORT`` or ``RAY_ADDRESS``); without an
address nothing here imports Ray. What runs where:

* pause-configuration trials (:func:`run_pause_search`): Optuna asks and tells on the driver,
  each evaluation is a Ray task (:class:`RayExecutor`) retried when its node is lost;
* head training (:func:`train_heads_sharded`): one task per group of exit locations, merged
  into one :class:`~exitsearch.heads.bank.HeadBank`;
* latency tables and bench runs (:func:`profile_latency_on_cluster`, :func:`bench_on_cluster`):
  one task per device and batch size;
* cache-scored exit-configuration trials stay in the driver's process (microseconds each, far
  below a Ray task's round trip).

Optuna storage shared by machines is a database URL (``--storage postgresql://...``, see
:func:`~exitsearch.search.storage.open_storage`).
"""

from exitsearch.distributed.cluster import (
    RAY_ADDRESS_ENV,
    ClusterError,
    ClusterInfo,
    connect,
    disconnect,
    probe,
    ray_cluster,
    resolve_address,
)
from exitsearch.distributed.devices import DeviceJob, bench_on_cluster, profile_latency_on_cluster
from exitsearch.distributed.executors import (
    LocalExecutor,
    RayExecutor,
    TrialExecutor,
    TrialFailure,
)
from exitsearch.distributed.head_shards import (
    backbone_bytes,
    merge_shards,
    shard_by_location,
    shard_jobs,
    train_heads_sharded,
)
from exitsearch.distributed.pause_search import (
    PausePoint,
    PauseSearchResult,
    PauseSearchSettings,
    PauseSpace,
    front_table,
    run_pause_search,
)
from exitsearch.distributed.shipping import ShippedFolder, materialise, pack_folder, ship_folder
from exitsearch.distributed.tasks import LOCAL_NODE, ShardJob, node_id, train_shard_task

__all__ = [
    "LOCAL_NODE",
    "RAY_ADDRESS_ENV",
    "ClusterError",
    "ClusterInfo",
    "DeviceJob",
    "LocalExecutor",
    "PausePoint",
    "PauseSearchResult",
    "PauseSearchSettings",
    "PauseSpace",
    "RayExecutor",
    "ShardJob",
    "ShippedFolder",
    "TrialExecutor",
    "TrialFailure",
    "backbone_bytes",
    "bench_on_cluster",
    "connect",
    "disconnect",
    "front_table",
    "materialise",
    "merge_shards",
    "node_id",
    "pack_folder",
    "probe",
    "profile_latency_on_cluster",
    "ray_cluster",
    "resolve_address",
    "run_pause_search",
    "shard_by_location",
    "shard_jobs",
    "ship_folder",
    "train_heads_sharded",
    "train_shard_task",
]
