"""Per-block cost of a backbone: FLOPs (fvcore), parameters, cumulative share."""

from __future__ import annotations

import torch

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.costs import BackboneProfile, BlockCost
from exitsearch.errors import ConfigError
from exitsearch.profile.flops import count_flops

__all__ = ["BackboneProfile", "BlockCost", "block_flops", "profile_backbone"]


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
