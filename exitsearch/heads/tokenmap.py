"""``tokenmap``: one linear layer over the whole map of patch tokens."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens, tokens_to_grid
from exitsearch.heads.common import check, check_int
from exitsearch.heads.registry import register_head

__all__ = ["TokenMapHead"]


@register_head("tokenmap")
class TokenMapHead(ExitHead):
    """LayerNorm on every patch token, the token map average-pooled to at most
    ``grid x grid`` tokens, flattened, then one linear classifier.

    The heads of the papers reduce the map before classifying it: the class token (Ryu, MEViT),
    global pooling (LGViT), a convolution and max pooling (Multi-Exit ViT's CNN heads). Early in
    the backbone, where the class token has gathered little and the tokens still describe their
    own patch, where a feature is matters more than what it is; this head keeps every
    position's features and costs only its one layer. On the 7x7 map of the embedded default it
    reads all 49 tokens for 5ND + NDC = 70,560 FLOPs, 7 % of a CNN head's.

    Its size grows with the map: ``g² · D · C`` weights for a ``g x g`` pooled map, D-wide
    tokens and C classes (ViT-B/16 at 224 px with ``grid=7`` and 1,000 classes: 37.6 M, more
    than the 7.1 M of one of its blocks); lower ``grid`` for wide backbones with many classes.

    Args:
        ctx: the backbone the head is attached to.
        grid: the pooled map's largest side; a map no larger is not pooled.

    Raises:
        ConfigError: ``grid`` is not a positive integer.
    """

    def __init__(self, ctx: HeadContext, grid: int = 7) -> None:
        super().__init__(ctx)
        check_int("grid", grid)
        check(grid >= 1, "grid >= 1", grid=grid)
        rows, cols = ctx.grid_size
        self.pooled = (min(grid, rows), min(grid, cols))
        self.norm = nn.LayerNorm(ctx.embed_dim)
        self.fc = nn.Linear(self.pooled[0] * self.pooled[1] * ctx.embed_dim, ctx.num_classes)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        _, patches = split_tokens(hidden, self.ctx)
        grid = tokens_to_grid(self.norm(patches), self.ctx)
        if self.pooled != tuple(self.ctx.grid_size):
            grid = F.adaptive_avg_pool2d(grid, self.pooled)
        return grid.flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.fc(features)
