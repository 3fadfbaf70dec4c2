"""The cost of leaving at each exit of a configuration (DESIGN.md, cost accounting).

Leaving at early exit k costs the backbone up to and including its block plus every exit head
evaluated on the way (those that did not fire, and this one). The final exit costs the whole
backbone plus all early heads. A cut configuration ends at its last early exit.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from exitsearch.errors import ConfigError
from exitsearch.profile.backbone import BackboneProfile
from exitsearch.profile.latency import LatencyTable
from exitsearch.search.config import ExitConfig

__all__ = ["CostModel"]


@dataclass(frozen=True)
class CostModel:
    """FLOPs (and optionally milliseconds) of backbone parts and of every candidate head.

    Attributes:
        profile: the backbone's per-block FLOPs.
        head_flops: FLOPs of each head by :attr:`HeadSpec.key`.
        latency: per-sample milliseconds of the backbone parts, if measured.
        head_ms: per-sample milliseconds of each head by key, if measured.
    """

    profile: BackboneProfile
    head_flops: Mapping[str, int]
    latency: LatencyTable | None = None
    head_ms: Mapping[str, float] = field(default_factory=dict)

    @property
    def backbone_flops(self) -> int:
        return self.profile.total_flops

    @property
    def has_latency(self) -> bool:
        return self.latency is not None

    def _heads(self, config: ExitConfig, table: Mapping[str, float], what: str) -> np.ndarray:
        try:
            return np.asarray([table[s.key] for s in config.exits], dtype=np.float64)
        except KeyError as exc:
            raise ConfigError(f"no {what} known for head {exc.args[0]}") from None

    def _block_flops(self, config: ExitConfig) -> np.ndarray:
        if config.pause:
            raise ConfigError("pause configurations are scored by inference, not from the cache")
        return np.asarray([b.flops for b in self.profile.blocks], dtype=np.float64)

    def exit_flops(self, config: ExitConfig) -> np.ndarray:
        """FLOPs of leaving at each early exit, then at the final exit (absent when cut)."""
        blocks = self._block_flops(config)
        cum_blocks = self.profile.stem_flops + np.cumsum(blocks)
        heads = np.cumsum(self._heads(config, self.head_flops, "FLOP count"))
        early = cum_blocks[np.asarray(config.locations, dtype=np.int64) - 1] + heads
        if config.cut:
            return early
        final = cum_blocks[-1] + self.profile.head_flops + (heads[-1] if len(heads) else 0.0)
        return np.append(early, final)

    def exit_ms(self, config: ExitConfig) -> np.ndarray | None:
        """Per-sample milliseconds of leaving at each exit, if a latency table is known."""
        if self.latency is None or config.pause:
            return None
        lat = self.latency.per_sample()
        cum = lat.stem_ms + np.cumsum(lat.block_ms)
        heads = np.cumsum(self._heads(config, self.head_ms, "latency"))
        early = cum[np.asarray(config.locations, dtype=np.int64) - 1] + heads
        if config.cut:
            return early
        return np.append(early, cum[-1] + lat.head_ms + (heads[-1] if len(heads) else 0.0))

    def cheapest_exit_flops(self, keys: list[str], locations: list[int]) -> float:
        """The least any configuration can cost: one early exit, every sample leaving there."""
        if not keys:
            return float(self.backbone_flops)
        return float(
            min(
                self.profile.cumulative(m) + self.head_flops[k]
                for k, m in zip(keys, locations, strict=True)
            )
        )
