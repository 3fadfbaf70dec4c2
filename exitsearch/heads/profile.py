"""What an exit head costs: FLOPs (fvcore, 1 multiply-accumulate = 1 FLOP), parameters, and
measured milliseconds."""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, HeadSpec, UncertaintyPredictor
from exitsearch.heads.registry import create_head
from exitsearch.profile.flops import count_flops
from exitsearch.profile.latency import resolve_device, time_call

__all__ = ["HeadCost", "head_cost", "measure_heads_latency", "profile_heads"]


@dataclass(frozen=True)
class HeadCost:
    """Cost of one head on one sample.

    Attributes:
        flops: FLOPs of the head's forward on one hidden state, uncertainty predictor included
            when the spec has one (unit: :data:`exitsearch.profile.flops.UNIT`).
        params: learnable parameters (BatchNorm's running statistics are buffers, not counted).
        uncounted_ops: ops fvcore does not count (op name -> occurrences): elementwise
            additions, activations, softmax, means, max pooling.
    """

    flops: int
    params: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)


class _WithUncertainty(nn.Module):
    """The head and its uncertainty predictor in one forward, as inference runs them."""

    def __init__(self, head: ExitHead, predictor: UncertaintyPredictor) -> None:
        super().__init__()
        self.head = head
        self.predictor = predictor  # the same module as head.uncertainty: counted once

    def forward(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        logits = self.head(hidden)
        return logits, self.predictor(logits)


def variant_key(spec: HeadSpec, ctx: HeadContext) -> tuple[str, bool, Any]:
    """What a head's size depends on: its type and parameters, its uncertainty predictor, and
    the state's shape at its location (one shape everywhere on a plain ViT, one per stage on
    Swin). Heads of one key cost the same."""
    return spec.variant, spec.uncertainty, ctx.at(spec.location).shape


def head_cost(spec: HeadSpec, ctx: HeadContext) -> HeadCost:
    """FLOPs and parameters of the head ``spec`` describes, on one (1, tokens, D) hidden state
    of its location's shape (every location's on a plain ViT; its stage's on Swin).

    Raises:
        ConfigError: unknown head type or parameters it does not take.

    Example:
        >>> ctx = HeadContext(embed_dim=8, num_prefix_tokens=1, grid_size=(2, 2), num_classes=3)
        >>> cost = head_cost(HeadSpec("linear", 1), ctx)
        >>> cost.flops, cost.params  # LayerNorm 5 * 8, linear 8 * 3; 2 * 8 + 8 * 3 + 3
        (64, 43)
    """
    head = create_head(spec, ctx)
    module: nn.Module = (
        head if head.uncertainty is None else _WithUncertainty(head, head.uncertainty)
    )
    here = ctx.at(spec.location)
    hidden = torch.zeros(1, here.num_tokens, here.embed_dim)
    count = count_flops(module, hidden)
    params = sum(p.numel() for p in module.parameters())
    return HeadCost(count.total, params, dict(count.uncounted_ops))


def profile_heads(specs: Iterable[HeadSpec], ctx: HeadContext) -> dict[str, HeadCost]:
    """:func:`head_cost` of every spec, keyed by ``spec.key``.

    A head's cost depends on its location only through the state's shape there, so each
    distinct (type, params, uncertainty, shape) is built and counted once and shared by all its
    locations (all locations on a plain ViT, a stage's on Swin).
    """
    by_variant: dict[tuple[str, bool, Any], HeadCost] = {}
    out: dict[str, HeadCost] = {}
    for spec in specs:
        variant = variant_key(spec, ctx)
        if variant not in by_variant:
            by_variant[variant] = head_cost(spec, ctx)
        out[spec.key] = by_variant[variant]
    return out


def measure_heads_latency(
    specs: list[HeadSpec],
    ctx: HeadContext,
    device: str = "cpu",
    batch_size: int = 1,
    warmup: int = 3,
    repeats: int = 10,
) -> dict[str, float]:
    """Median milliseconds per batch of every head in ``specs``, by :attr:`HeadSpec.key`.

    A head's time depends on its location only through the state's shape there, so each
    distinct variant and shape is timed once.
    """
    dev = resolve_device(device)
    by_variant: dict[tuple[str, bool, Any], float] = {}
    out: dict[str, float] = {}
    for spec in specs:
        here = ctx.at(spec.location)
        ident = variant_key(spec, ctx)
        if ident not in by_variant:
            x = torch.randn(batch_size, here.num_tokens, here.embed_dim, device=dev)
            head = create_head(spec, ctx).to(dev).eval()
            fn = (
                (lambda h=head, x=x: h.uncertainty(h(x)))
                if head.uncertainty is not None
                else (lambda h=head, x=x: h(x))
            )
            by_variant[ident] = statistics.median(time_call(fn, dev, warmup, repeats))
        out[spec.key] = by_variant[ident]
    return out
