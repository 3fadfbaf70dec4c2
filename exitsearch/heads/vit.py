"""``vit``: ViT-EE of Multi-Exit ViT (§3, Fig. 3b)."""

from __future__ import annotations

import torch
from timm.models.vision_transformer import Block
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext
from exitsearch.heads.common import (
    DEFAULT_DROP,
    MLPClassifier,
    check,
    check_int,
    class_token_or_mean,
)
from exitsearch.heads.registry import register_head

__all__ = ["ViTHead", "ViTHeadR2"]


@register_head("vit")
class ViTHead(ExitHead):
    """ViT-EE: one Transformer encoder layer on the whole hidden state ``P`` (prefix tokens
    included, as in the backbone), LayerNorm, then the three-layer MLP on the class token
    (Multi-Exit ViT, §3); the mean patch token when the backbone has no class token.

    The encoder layer is timm's pre-norm ``Block``, with the backbone layer's MLP ratio 4 by
    default, as the paper adds "a transformer encoder layer" like the backbone's. Its cost on T
    tokens of width D is ``4TD² + 2T²D`` for attention plus ``2·r·TD²`` for its MLP of ratio r:
    ``12TD²`` at r = 4. The paper names this overhead ViT-EE's main drawback;
    :class:`ViTHeadR2` (``vit_r2``) is the same head with r = 2, ``8TD²`` (about 2/3 of a
    backbone block).

    Args:
        ctx: the backbone the head is attached to.
        mlp_ratio: hidden width of the encoder layer's MLP over D.
        num_heads: attention heads (default: the backbone's, ``ctx.num_heads``).
        drop: dropout probability of the classifier MLP.
    """

    def __init__(
        self,
        ctx: HeadContext,
        mlp_ratio: float = 4.0,
        num_heads: int | None = None,
        drop: float = DEFAULT_DROP,
    ) -> None:
        super().__init__(ctx)
        num_heads = ctx.num_heads if num_heads is None else num_heads
        check_int("num_heads", num_heads)
        check(
            num_heads >= 1 and ctx.embed_dim % num_heads == 0,
            "num_heads >= 1 and embed_dim % num_heads == 0",
            num_heads=num_heads,
            embed_dim=ctx.embed_dim,
        )
        check(mlp_ratio > 0, "mlp_ratio > 0", mlp_ratio=mlp_ratio)
        self.block = Block(ctx.embed_dim, num_heads, mlp_ratio=mlp_ratio, qkv_bias=True)
        self.norm = nn.LayerNorm(ctx.embed_dim)
        self.mlp = MLPClassifier.for_context(ctx.embed_dim, ctx, drop)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(class_token_or_mean(self.block(hidden), self.ctx))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


@register_head("vit_r2")
class ViTHeadR2(ViTHead):
    """ViT-EE with an encoder layer of MLP ratio 2 instead of the backbone's 4: the same
    structure and global receptive field at about 2/3 of the cost (``8TD²`` instead of
    ``12TD²``). An exitsearch variant, not one of Multi-Exit ViT's heads."""

    def __init__(
        self,
        ctx: HeadContext,
        mlp_ratio: float = 2.0,
        num_heads: int | None = None,
        drop: float = DEFAULT_DROP,
    ) -> None:
        super().__init__(ctx, mlp_ratio, num_heads, drop)
