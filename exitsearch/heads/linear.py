"""``linear``: one fully connected layer on the class token (Ryu; MEViT)."""

from __future__ import annotations

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens
from exitsearch.heads.registry import register_head


@register_head("linear")
class LinearHead(ExitHead):
    """LayerNorm, then a linear classifier on the class token, or on the mean of the patch
    tokens when the backbone has no class token (MEViT's single-layer branch, MEViT §2.1)."""

    def __init__(self, ctx: HeadContext) -> None:
        super().__init__(ctx)
        self.norm = nn.LayerNorm(ctx.embed_dim)
        self.fc = nn.Linear(ctx.embed_dim, ctx.num_classes)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        cls_tok, patches = split_tokens(hidden, self.ctx)
        return self.norm(cls_tok if cls_tok is not None else patches.mean(1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)
