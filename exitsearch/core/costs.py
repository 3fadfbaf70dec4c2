"""What a backbone's parts cost (FLOPs per block, a latency table), and the cost of leaving at
each exit of a configuration (DESIGN.md, cost accounting). Plain values: the profiler
(:mod:`exitsearch.profile`) measures them.

Leaving at early exit k costs the backbone up to and including its block plus every exit head
evaluated on the way (those that did not fire, and this one). The final exit costs the whole
backbone plus all early heads. A cut configuration ends at its last early exit.

Pause configurations (PAUMER) lower the cost of the blocks after a pause layer: each
block is counted on the tokens it really processes (fvcore on the block fed that many tokens,
:func:`exitsearch.pausing.costs.pause_block_flops`), and the auxiliary decoder that chooses the
paused tokens after block ``l`` is counted on the tokens still processed there. It runs after
the exit at ``l`` has decided (a sample leaving at ``l`` never needs it), so its cost is charged
to the exits after ``l``: it is added to block ``l + 1``. Exit heads read assembled states (all
tokens), so their cost does not change. The tables of the pause configurations a search uses
are computed once by the pausing package (:func:`exitsearch.pausing.costs.with_pauses`) and
handed over as tables (:meth:`CostModel.with_pause_blocks`), so this module knows no pausing
model; configurations without pausing take the plain path, unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from exitsearch.core.config import ExitConfig
from exitsearch.errors import ConfigError

__all__ = [
    "EXIT_DECISION",
    "EXIT_FIXED",
    "EXIT_RESUME",
    "UNIT",
    "BackboneProfile",
    "BlockCost",
    "CostModel",
    "LatencyTable",
    "latency_exit_ms",
    "pause_key",
]

UNIT = "FLOPs (MACs)"

# Keys of LatencyTable.extra: what the exported runtime spends beyond the parts, per batch
# (exitsearch.export.timing measures them; 0 when a table was written without them).
EXIT_DECISION = "exit_decision_ms"
"""Deciding at one early exit: scores from the logits, the criterion, who leaves."""
EXIT_FIXED = "exit_fixed_ms"
"""Once per batch whatever the exits: input checks, the final exit's output, assembling rows."""
EXIT_RESUME = "exit_resume_ms"
"""Going on after an early exit: what the next part takes beyond its time in a plain forward,
where it follows the previous block directly (its weights and, on several threads, the thread
pool have gone cold while the head and the decision ran)."""


@dataclass(frozen=True)
class LatencyTable:
    """Median milliseconds per batch of ``batch_size`` for each part of the backbone, and
    (in ``extra``) the runtime's work between the parts: :data:`EXIT_DECISION` per early exit
    a sample reaches, :data:`EXIT_RESUME` per early exit it goes on from, :data:`EXIT_FIXED`
    per batch."""

    model: str
    device: str
    device_name: str
    batch_size: int
    stem_ms: float
    block_ms: list[float]
    head_ms: float
    full_ms: float
    threads: int
    repeats: int
    extra: dict[str, float] = field(default_factory=dict)

    @property
    def parts_ms(self) -> float:
        return self.stem_ms + sum(self.block_ms) + self.head_ms

    @property
    def exit_decision_ms(self) -> float:
        return float(self.extra.get(EXIT_DECISION, 0.0))

    @property
    def exit_fixed_ms(self) -> float:
        return float(self.extra.get(EXIT_FIXED, 0.0))

    @property
    def exit_resume_ms(self) -> float:
        return float(self.extra.get(EXIT_RESUME, 0.0))

    def with_exit_overhead(
        self, decision_ms: float, fixed_ms: float, resume_ms: float | None = None
    ) -> LatencyTable:
        """This table with the runtime's per-exit and per-batch work (milliseconds per batch);
        ``resume_ms`` (:data:`EXIT_RESUME`) is kept as it is when not given."""
        extra = {**self.extra, EXIT_DECISION: decision_ms, EXIT_FIXED: fixed_ms}
        if resume_ms is not None:
            extra[EXIT_RESUME] = resume_ms
        return replace(self, extra=extra)

    def cumulative_ms(self, location: int) -> float:
        """Milliseconds of the stem and blocks ``1..location`` per batch."""
        return self.stem_ms + sum(self.block_ms[:location])

    def per_sample(self) -> LatencyTable:
        b = self.batch_size
        return LatencyTable(
            self.model,
            self.device,
            self.device_name,
            1,
            self.stem_ms / b,
            [x / b for x in self.block_ms],
            self.head_ms / b,
            self.full_ms / b,
            self.threads,
            self.repeats,
            {k: v / b for k, v in self.extra.items()},
        )

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "parts_ms": self.parts_ms}

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> LatencyTable:
        d = {k: v for k, v in d.items() if k != "parts_ms"}
        return cls(**d)


@dataclass(frozen=True)
class BlockCost:
    """Cost of one block; ``index`` is 1-based (exit after block ``index``)."""

    index: int
    flops: int
    params: int
    cumulative_flops: int
    share: float


@dataclass(frozen=True)
class BackboneProfile:
    """What a backbone costs per sample at its input size.

    ``total_flops == stem_flops + sum(block.flops) + head_flops`` holds exactly.
    ``cumulative_flops`` of block m counts the stem and blocks 1..m: the backbone part of the
    cost of an exit after block m.
    """

    model: str
    input_shape: tuple[int, ...]
    num_tokens: int
    total_flops: int
    stem_flops: int
    head_flops: int
    blocks: list[BlockCost]
    params: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    unit: str = UNIT

    @property
    def depth(self) -> int:
        return len(self.blocks)

    def cumulative(self, location: int) -> int:
        """FLOPs of the stem and blocks ``1..location`` (``0`` gives the stem alone)."""
        if not 0 <= location <= self.depth:
            raise IndexError(
                f"`0 <= location <= {self.depth}` must hold, but got location={location}"
            )
        if location == 0:
            return self.stem_flops
        return self.blocks[location - 1].cumulative_flops

    def to_json(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "unit": self.unit,
            "total_flops": self.total_flops,
            "blocks": [asdict(b) for b in self.blocks],
            "stem_flops": self.stem_flops,
            "head_flops": self.head_flops,
            "params": self.params,
            "input_shape": list(self.input_shape),
            "num_tokens": self.num_tokens,
            "uncounted_ops": self.uncounted_ops,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> BackboneProfile:
        return cls(
            model=d["model"],
            input_shape=tuple(d["input_shape"]),
            num_tokens=int(d["num_tokens"]),
            total_flops=int(d["total_flops"]),
            stem_flops=int(d["stem_flops"]),
            head_flops=int(d["head_flops"]),
            blocks=[BlockCost(**b) for b in d["blocks"]],
            params=int(d["params"]),
            uncounted_ops=dict(d.get("uncounted_ops", {})),
            unit=d.get("unit", UNIT),
        )


def pause_key(pause: Mapping[int, float]) -> str:
    """The canonical text of a pause configuration (``PauseConfig.key``; ``""`` when empty)."""
    return ",".join(f"{int(k)}:{float(v):g}" for k, v in sorted(dict(pause).items()))


def latency_exit_ms(
    table: LatencyTable, head_ms: Sequence[float], locations: Sequence[int], cut: bool = False
) -> np.ndarray:
    """Per-sample milliseconds of leaving at each early exit, then at the final exit (absent
    when ``cut``), from a latency table and the per-sample milliseconds of each exit's head.

    Besides the parts (stem, blocks, heads, final head), a sample pays the runtime's decision at
    every early exit it reaches, the cold start of the part after every early exit it goes on
    from, and a fixed share of its batch, when the table measured them (:data:`EXIT_DECISION`,
    :data:`EXIT_RESUME`, :data:`EXIT_FIXED`)."""
    lat = table.per_sample()
    cum = lat.stem_ms + np.cumsum(lat.block_ms)
    heads = np.cumsum(np.asarray(head_ms, dtype=np.float64))
    reached = np.arange(1, len(heads) + 1, dtype=np.float64)
    between = lat.exit_decision_ms * reached + lat.exit_resume_ms * (reached - 1)
    early = cum[np.asarray(locations, dtype=np.int64) - 1] + heads + between
    if not cut:
        passed = (heads[-1] + between[-1] + lat.exit_resume_ms) if len(heads) else 0.0
        early = np.append(early, cum[-1] + lat.head_ms + passed)
    return early + lat.exit_fixed_ms


@dataclass(frozen=True)
class CostModel:
    """FLOPs (and optionally milliseconds) of backbone parts and of every candidate head.

    Attributes:
        profile: the backbone's per-block FLOPs.
        head_flops: FLOPs of each head by :attr:`HeadSpec.key`.
        latency: per-sample milliseconds of the backbone parts, if measured.
        head_ms: per-sample milliseconds of each head by key, if measured.
        pause_blocks: per-block FLOPs under each known pause configuration, by its key (see
            :func:`exitsearch.pausing.costs.paused_block_flops`); filled by
            :meth:`with_pause_blocks`.
    """

    profile: BackboneProfile
    head_flops: Mapping[str, int]
    latency: LatencyTable | None = None
    head_ms: Mapping[str, float] = field(default_factory=dict)
    pause_blocks: Mapping[str, tuple[float, ...]] = field(default_factory=dict)

    @property
    def backbone_flops(self) -> int:
        return self.profile.total_flops

    @property
    def has_latency(self) -> bool:
        return self.latency is not None

    # ------------------------------------------------------------------ pausing
    def with_pause_blocks(self, tables: Mapping[str, tuple[float, ...]]) -> CostModel:
        """This model plus per-block FLOPs under more pause configurations, by their key
        (:func:`exitsearch.pausing.costs.with_pauses` computes them from a pausing model).

        Raises:
            ConfigError: a table has another number of blocks than the profile.
        """
        table = dict(self.pause_blocks)
        for key, blocks in tables.items():
            if len(blocks) != self.profile.depth:
                raise ConfigError(
                    f"pause configuration {key} gives {len(blocks)} block costs, the cost "
                    f"profile has {self.profile.depth} blocks"
                )
            table.setdefault(key, tuple(float(b) for b in blocks))
        return replace(self, pause_blocks=table)

    def under_pause(self, pause: Mapping[int, float]) -> CostModel:
        """A cost model whose *unpaused* path costs the blocks as under ``pause``: what a search
        inside one pause configuration runs on (its sampled configurations carry no pause).
        ``backbone_flops`` stays the unpaused backbone's, so speed-ups keep their reference.

        Raises:
            ConfigError: ``pause`` is not among the known configurations.
        """
        if not pause:
            return self
        blocks = self._paused(pause_key(pause))
        cum = float(self.profile.stem_flops)
        costs = []
        for b, f in zip(self.profile.blocks, blocks, strict=True):
            cum += f
            costs.append(replace(b, flops=f, cumulative_flops=cum))  # type: ignore[arg-type]
        return replace(self, profile=replace(self.profile, blocks=costs), latency=None)

    def _paused(self, key: str) -> tuple[float, ...]:
        try:
            return self.pause_blocks[key]
        except KeyError:
            known = ", ".join(self.pause_blocks) or "none"
            raise ConfigError(
                f"no block costs known for pause configuration {key} (known: {known}); "
                "add them with exitsearch.pausing.costs.with_pauses"
            ) from None

    # -------------------------------------------------------------------- exits
    def _heads(self, config: ExitConfig, table: Mapping[str, float], what: str) -> np.ndarray:
        try:
            return np.asarray([table[s.key] for s in config.exits], dtype=np.float64)
        except KeyError as exc:
            raise ConfigError(f"no {what} known for head {exc.args[0]}") from None

    def _block_flops(self, config: ExitConfig) -> np.ndarray:
        if config.pause:
            return np.asarray(self._paused(pause_key(config.pause)), dtype=np.float64)
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
        """Per-sample milliseconds of leaving at each exit (:func:`latency_exit_ms`), if a
        latency table is known (None for pause configurations: the table was measured without
        pausing)."""
        if self.latency is None or config.pause:
            return None
        return latency_exit_ms(
            self.latency, self._heads(config, self.head_ms, "latency"), config.locations, config.cut
        )

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
