"""Analytic FLOP counts of a timm ViT, derived from the model object itself.

Convention (fvcore's, DESIGN.md): one multiply-accumulate is one FLOP, LayerNorm costs 5 per
element, additions, activations, softmax and pooling are not counted.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from torch import nn

from exitsearch.backbone import Backbone


def _is_layernorm(module: nn.Module | None) -> bool:
    return isinstance(module, nn.LayerNorm)


@dataclass(frozen=True)
class AnalyticViT:
    """Expected per-sample FLOPs of a plain (or distilled) timm ViT, read off its modules."""

    backbone: Backbone

    @property
    def model(self) -> nn.Module:
        return self.backbone.model

    @property
    def dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def tokens(self) -> int:
        """Tokens per block: the patch grid plus every prefix token (class, distillation...)."""
        gh, gw = self.model.patch_embed.grid_size
        return int(gh) * int(gw) + int(self.model.num_prefix_tokens)

    def block(self, index: int, tokens: int | None = None) -> int:
        """Block ``index`` (1-based) on ``tokens`` tokens (default: the full sequence)."""
        blk = self.model.blocks[index - 1]
        n = self.tokens if tokens is None else tokens
        d = self.dim
        hidden = int(blk.mlp.fc1.out_features)  # mlp_ratio * D
        assert int(blk.attn.qkv.out_features) == 3 * d
        norms = 2 * 5 * n * d
        qkv = n * d * 3 * d
        attention = n * n * d + n * n * d  # Q K^T and A V
        proj = n * d * d
        mlp = 2 * n * d * hidden
        return norms + qkv + attention + proj + mlp

    def stem(self) -> int:
        conv = self.model.patch_embed.proj
        kh, kw = conv.kernel_size
        gh, gw = self.model.patch_embed.grid_size
        return int(gh) * int(gw) * self.dim * conv.in_channels * kh * kw

    def head(self) -> int:
        m = self.model
        d = self.dim
        flops = 0
        if _is_layernorm(m.norm):  # timm normalises every token before pooling...
            flops += 5 * self.tokens * d
        if _is_layernorm(getattr(m, "fc_norm", None)):  # ...or only the pooled one
            flops += 5 * d
        for name in ("head", "head_dist"):
            layer = getattr(m, name, None)
            if isinstance(layer, nn.Linear):
                flops += layer.in_features * layer.out_features
        return flops

    def total(self) -> int:
        depth = len(self.model.blocks)
        return self.stem() + sum(self.block(i) for i in range(1, depth + 1)) + self.head()


@pytest.fixture(scope="session")
def analytic() -> type[AnalyticViT]:
    return AnalyticViT
