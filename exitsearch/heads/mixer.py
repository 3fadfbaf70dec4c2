"""``mixer``: MLP-Mixer-EE of Multi-Exit ViT (§2 eqs. 3a-3b, §3, Fig. 3c)."""

from __future__ import annotations

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens
from exitsearch.heads.common import DEFAULT_DROP, MLPClassifier, check
from exitsearch.heads.registry import register_head

__all__ = ["MixerHead", "MixerHeadR2", "MixerLayer"]


class MixerLayer(nn.Module):
    """One mixer layer (Multi-Exit ViT, eqs. 3a and 3b; Tolstikhin et al. 2021).

    ``U = X + f2(σ(f1(Norm(X)^T)))^T`` mixes tokens, ``Y = U + f4(σ(f3(Norm(U))))`` mixes
    channels; ``f1..f4`` are linear layers, ``σ`` is GELU, ``Norm`` is LayerNorm.

    Args:
        num_tokens: tokens N that the token-mixing MLP mixes (its input width).
        dim: channels D.
        token_hidden: hidden width of the token-mixing MLP (``D_S`` in MLP-Mixer).
        channel_hidden: hidden width of the channel-mixing MLP (``D_C`` in MLP-Mixer).
    """

    def __init__(self, num_tokens: int, dim: int, token_hidden: int, channel_hidden: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.f1 = nn.Linear(num_tokens, token_hidden)
        self.f2 = nn.Linear(token_hidden, num_tokens)
        self.norm2 = nn.LayerNorm(dim)
        self.f3 = nn.Linear(dim, channel_hidden)
        self.f4 = nn.Linear(channel_hidden, dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x + self.f2(self.act(self.f1(self.norm1(x).transpose(1, 2)))).transpose(1, 2)  # 3a
        return u + self.f4(self.act(self.f3(self.norm2(u))))  # 3b


@register_head("mixer")
class MixerHead(ExitHead):
    """MLP-Mixer-EE: one mixer layer on the patch tokens, LayerNorm, global average pooling,
    then the three-layer MLP (Multi-Exit ViT, §3, Fig. 3c).

    The token-mixing MLP's width is fixed by the number of patches, so prefix tokens (class,
    distillation, registers) are left out, as MLP-Mixer has none. Multi-Exit ViT's §2 describes the
    original MLP-Mixer as ending in "a fully connected layer" after pooling, but §3 says "the MLP
    layers in all our proposed architectures have the same three layers", so the head ends in
    the shared three-layer MLP. MLP-Mixer's pre-head LayerNorm is kept before pooling: every
    other head of the paper normalises before its MLP.

    Defaults: ``D_S = D/2`` and ``D_C = 4D``, as in every MLP-Mixer model, so the
    channel-mixing MLP costs ``8ND²``. :class:`MixerHeadR2` (``mixer_r2``) halves ``D_C`` to
    2D (``4ND²``).

    Args:
        ctx: the backbone the head is attached to.
        token_ratio: ``D_S / D``.
        mlp_ratio: ``D_C / D``.
        drop: dropout probability of the classifier MLP.
    """

    def __init__(
        self,
        ctx: HeadContext,
        token_ratio: float = 0.5,
        mlp_ratio: float = 4.0,
        drop: float = DEFAULT_DROP,
    ) -> None:
        super().__init__(ctx)
        check(token_ratio > 0, "token_ratio > 0", token_ratio=token_ratio)
        check(mlp_ratio > 0, "mlp_ratio > 0", mlp_ratio=mlp_ratio)
        d = ctx.embed_dim
        self.layer = MixerLayer(
            ctx.num_patches, d, max(1, round(token_ratio * d)), max(1, round(mlp_ratio * d))
        )
        self.norm = nn.LayerNorm(d)
        self.mlp = MLPClassifier.for_context(d, ctx, drop)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        _, patches = split_tokens(hidden, self.ctx)
        return self.norm(self.layer(patches)).mean(1)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


@register_head("mixer_r2")
class MixerHeadR2(MixerHead):
    """MLP-Mixer-EE with a channel-mixing MLP of width 2D instead of MLP-Mixer's 4D: half the
    channel-mixing cost. An exitsearch variant, not one of Multi-Exit ViT's heads."""

    def __init__(
        self,
        ctx: HeadContext,
        token_ratio: float = 0.5,
        mlp_ratio: float = 2.0,
        drop: float = DEFAULT_DROP,
    ) -> None:
        super().__init__(ctx, token_ratio, mlp_ratio, drop)
