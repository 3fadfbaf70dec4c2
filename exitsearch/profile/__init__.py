"""Cost of a backbone and of exit heads: FLOPs, parameters, measured latency."""

from exitsearch.profile.backbone import BackboneProfile, BlockCost, block_flops, profile_backbone
from exitsearch.profile.flops import EXTRA_HANDLES, UNIT, FlopCount, count_flops
from exitsearch.profile.latency import (
    LatencyTable,
    measure_latency,
    resolve_device,
    time_call,
)

__all__ = [
    "EXTRA_HANDLES",
    "UNIT",
    "BackboneProfile",
    "BlockCost",
    "FlopCount",
    "LatencyTable",
    "block_flops",
    "count_flops",
    "measure_latency",
    "profile_backbone",
    "resolve_device",
    "time_call",
]
