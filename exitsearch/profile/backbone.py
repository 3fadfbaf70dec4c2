"""Per-block cost of a backbone: FLOPs (fvcore), parameters, cumulative share."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from exitsearch.backbone.adapter import Backbone
from exitsearch.errors import ConfigError
from exitsearch.profile.flops import UNIT, count_flops

__all__ = ["BackboneProfile", "BlockCost", "block_flops", "profile_backbone"]


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


def profile_backbone(backbone: Backbone) -> BackboneProfile:
    """Count FLOPs and parameters of every block, the stem and the final norm + head.

    One fvcore trace of the whole backbone on a single sample; per-block figures come from its
    per-module breakdown.
    """
    x = torch.zeros(1, backbone.in_chans, *backbone.img_size)
    fc = count_flops(backbone, x)
    blocks_flops = [
        sum(fc.module(n) for n in backbone.block_module_names(i + 1)) for i in range(backbone.depth)
    ]
    stem = sum(fc.module(n) for n in backbone.stem_module_names())
    head = fc.total - stem - sum(blocks_flops)
    cum = stem
    blocks = []
    for i, flops in enumerate(blocks_flops):
        cum += flops
        blocks.append(
            BlockCost(
                index=i + 1,
                flops=flops,
                params=sum(
                    p.numel() for m in backbone.block_modules(i, i + 1) for p in m.parameters()
                ),
                cumulative_flops=cum,
                share=cum / fc.total if fc.total else 0.0,
            )
        )
    return BackboneProfile(
        model=backbone.spec.model,
        input_shape=tuple(x.shape[1:]),
        num_tokens=backbone.num_tokens,
        total_flops=fc.total,
        stem_flops=stem,
        head_flops=head,
        blocks=blocks,
        params=sum(p.numel() for p in backbone.model.parameters()),
        uncounted_ops=fc.uncounted_ops,
    )


def block_flops(backbone: Backbone, index: int, num_tokens: int) -> int:
    """FLOPs of block ``index`` (1-based) run on ``num_tokens`` tokens (e.g. after pausing)."""
    if not 1 <= index <= backbone.depth:
        raise IndexError(f"`1 <= index <= {backbone.depth}` must hold, but got index={index}")
    if not backbone.supports_pausing:
        raise ConfigError(
            f"{backbone.spec.model} ({backbone.family}) blocks run on their whole grid; "
            "token counts other than the grid's do not apply"
        )
    tokens = torch.zeros(1, num_tokens, backbone.state_dim(index - 1))
    return count_flops(backbone.model.blocks[index - 1], tokens).total
