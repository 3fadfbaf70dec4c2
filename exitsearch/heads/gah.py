"""``gah``: LGViT's global aggregation head (LGViT, §3.3, eqs. 3-4)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from timm.layers import Attention
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens, tokens_to_grid
from exitsearch.heads.common import NormLinearClassifier, check, check_int
from exitsearch.heads.registry import register_head

__all__ = ["GlobalAggregationHead", "PositionwiseFeatureConvergence"]


class PositionwiseFeatureConvergence(nn.Module):
    """PFC (LGViT, eq. 3): average pooling of the patch grid with an ``s x s`` window and
    stride ``s``, back to tokens; no learnable parameters.

    Windows that run past the grid's edge (``ceil_mode``) average only the patches they cover,
    so a 7x7 grid gives 4x4 tokens with ``s = 2`` and 3x3 with ``s = 3``. ``s = 1`` is the
    identity.
    """

    def __init__(self, ctx: HeadContext, s: int) -> None:
        super().__init__()
        self.ctx = ctx
        self.s = s

    def output_grid(self) -> tuple[int, int]:
        """(rows, cols) after pooling: ``(ceil(rows / s), ceil(cols / s))``."""
        rows, cols = self.ctx.grid_size
        return math.ceil(rows / self.s), math.ceil(cols / self.s)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        if self.s == 1:
            return patches
        grid = tokens_to_grid(patches, self.ctx)
        pooled = F.avg_pool2d(grid, self.s, self.s, ceil_mode=True, count_include_pad=False)
        return pooled.flatten(2).transpose(1, 2)


@register_head("gah")
class GlobalAggregationHead(ExitHead):
    """GAH (LGViT, eq. 4): ``Pool(MHSA(PFC(X_en, m))) + X_CLS``.

    The patch tokens are pooled by :class:`PositionwiseFeatureConvergence` to
    ``N' = ceil(rows/s) * ceil(cols/s)`` tokens, pass through multi-head self-attention (timm's
    ``Attention``: fused QKV projection, scaled dot-product attention, output projection; no
    residual and no norm, as in eq. 4), are averaged, and the class token is added (skipped when
    the backbone has none). The classifier is LayerNorm and one linear layer.

    ``s`` is fixed per head; :class:`~exitsearch.heads.mappings.WindowMapping` gives the ``s``
    of LGViT's ``g(m)`` for a location. Cost: ``4N'D²`` for the projections plus ``2N'²D`` for
    ``QK^T`` and ``AV`` (eq. 7 with ``N' = N/s²``), plus ``ND`` for the pooling when ``s > 1``.

    Args:
        ctx: the backbone the head is attached to.
        s: PFC window and stride, ``s >= 1``.
        num_heads: attention heads (default: the backbone's, ``ctx.num_heads``).

    Raises:
        ConfigError: ``s < 1``, or ``num_heads`` does not divide D.
    """

    def __init__(self, ctx: HeadContext, s: int = 2, num_heads: int | None = None) -> None:
        super().__init__(ctx)
        check_int("s", s)
        check(s >= 1, "s >= 1", s=s)
        num_heads = ctx.num_heads if num_heads is None else num_heads
        check_int("num_heads", num_heads)
        check(
            num_heads >= 1 and ctx.embed_dim % num_heads == 0,
            "num_heads >= 1 and embed_dim % num_heads == 0",
            num_heads=num_heads,
            embed_dim=ctx.embed_dim,
        )
        self.pfc = PositionwiseFeatureConvergence(ctx, s)
        self.attn = Attention(ctx.embed_dim, num_heads=num_heads, qkv_bias=True)
        self.classifier = NormLinearClassifier(ctx.embed_dim, ctx.num_classes)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        cls_tok, patches = split_tokens(hidden, self.ctx)
        pooled = self.attn(self.pfc(patches)).mean(1)
        return pooled if cls_tok is None else pooled + cls_tok

    def feature_map(self, hidden: torch.Tensor) -> torch.Tensor:
        """LGViT's feature map ``F_m`` of this head (LGViT, eqs. 9 and 11): the MHSA output
        on the ``N'`` pooled tokens before pooling, (B, N', D)."""
        return self.attn(self.pfc(split_tokens(hidden, self.ctx)[1]))

    def forward_with_feature_map(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, feature map)`` from one pass; the logits equal ``forward(hidden)``."""
        cls_tok, patches = split_tokens(hidden, self.ctx)
        fmap = self.attn(self.pfc(patches))
        pooled = fmap.mean(1)
        return self.classify(pooled if cls_tok is None else pooled + cls_tok), fmap

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)
