"""``mlp``: MLP-EE of Multi-Exit ViT (§3, Fig. 3a)."""

from __future__ import annotations

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext
from exitsearch.heads.common import DEFAULT_DROP, MLPClassifier, class_token_or_mean
from exitsearch.heads.registry import register_head

__all__ = ["MLPHead"]


@register_head("mlp")
class MLPHead(ExitHead):
    """MLP-EE: ``P̄ = Norm(P)``, then the three-layer MLP on the class token ``p̄_0`` (Multi-Exit ViT, §3).

    LayerNorm acts on each token alone, so only the token the MLP reads is normalised; the result
    equals normalising the whole hidden state and picking ``p̄_0``. Without a class token the mean
    patch token is normalised instead (mean first, as timm's ``fc_norm`` does for ``avg`` pooling).

    Args:
        ctx: the backbone the head is attached to.
        drop: probability of the MLP's two dropout layers (see
            :data:`~exitsearch.heads.common.DEFAULT_DROP`).
    """

    def __init__(self, ctx: HeadContext, drop: float = DEFAULT_DROP) -> None:
        super().__init__(ctx)
        self.norm = nn.LayerNorm(ctx.embed_dim)
        self.mlp = MLPClassifier.for_context(ctx.embed_dim, ctx, drop)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.norm(class_token_or_mean(hidden, self.ctx))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)
