"""``cnn_ignore``, ``cnn_add``, ``cnn_project``: CNN-EE of Multi-Exit ViT (§3, Fig. 4)."""

from __future__ import annotations

import abc
import math
from typing import ClassVar

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens, tokens_to_grid
from exitsearch.heads.common import DEFAULT_DROP, MLPClassifier, check, check_int
from exitsearch.heads.registry import register_head

__all__ = ["CNNAddHead", "CNNHead", "CNNIgnoreHead", "CNNProjectHead"]


class CNNHead(ExitHead):
    """CNN-EE: patch tokens on their 2-D grid ``C̄`` (Multi-Exit ViT, §3), a 3x3 convolution
    (padding 1), GELU, 2x2 max pooling, flatten, then the three-layer MLP.

    Subclasses decide what becomes of the class token ``p_0`` (:meth:`combine`). The paper gives
    neither the convolution's width nor its activation; the width defaults to ``D // 4`` (for
    ViT-B/16 at 224 px: 196 * 9 * 768 * 192 = 0.26 GFLOPs, under 2% of the backbone, and a
    third of a block on the small default backbone, where every exit's cost counts) and GELU
    is the backbone's own activation. Max pooling uses ``ceil_mode`` so odd grids (7x7) keep
    their last row and column. Like the paper's equations, the tokens enter the convolution
    without normalisation.

    Args:
        ctx: the backbone the head is attached to.
        channels: output channels of the convolution (default ``D // 4``).
        drop: dropout probability of the MLP.
    """

    in_factor: ClassVar[int] = 1  # the convolution sees in_factor * D input channels

    def __init__(
        self, ctx: HeadContext, channels: int | None = None, drop: float = DEFAULT_DROP
    ) -> None:
        super().__init__(ctx)
        channels = max(1, ctx.embed_dim // 4) if channels is None else channels
        check_int("channels", channels)
        check(channels >= 1, "channels >= 1", channels=channels)
        self.conv = nn.Conv2d(self.in_factor * ctx.embed_dim, channels, 3, padding=1)
        self.act = nn.GELU()
        self.pool = nn.MaxPool2d(2, ceil_mode=True)
        rows, cols = ctx.grid_size
        pooled = math.ceil(rows / 2) * math.ceil(cols / 2)
        self.mlp = MLPClassifier.for_context(channels * pooled, ctx, drop)

    @abc.abstractmethod
    def combine(self, cls_tok: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        """The tokens ``C̄`` that go on the grid, (B, N, in_factor * D)."""

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        cls_tok, patches = split_tokens(hidden, self.ctx)
        grid = tokens_to_grid(self.combine(cls_tok, patches), self.ctx)
        return self.pool(self.act(self.conv(grid))).flatten(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


@register_head("cnn_ignore")
class CNNIgnoreHead(CNNHead):
    """CNN-Ignore-EE: the class token is discarded, ``C̄ = C`` (Multi-Exit ViT, §3, Fig. 4c)."""

    def combine(self, cls_tok: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        return patches


@register_head("cnn_add")
class CNNAddHead(CNNHead):
    """CNN-Add-EE: ``C̄ = (p_1 + p_0, ..., p_N + p_0)`` (Multi-Exit ViT, §3, Fig. 4a).

    Without a class token the mean patch token stands in for ``p_0``.
    """

    def combine(self, cls_tok: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        ref = cls_tok if cls_tok is not None else patches.mean(1)
        return patches + ref.unsqueeze(1)


@register_head("cnn_project")
class CNNProjectHead(CNNHead):
    """CNN-Project-EE: ``C̄ = (concat(p_1, p_0), ..., concat(p_N, p_0))`` (Multi-Exit ViT, §3,
    Fig. 4b); the convolution sees 2D channels and does the projection.

    Without a class token the mean patch token stands in for ``p_0``.
    """

    in_factor = 2

    def combine(self, cls_tok: torch.Tensor | None, patches: torch.Tensor) -> torch.Tensor:
        ref = cls_tok if cls_tok is not None else patches.mean(1)
        return torch.cat([patches, ref.unsqueeze(1).expand_as(patches)], dim=-1)
