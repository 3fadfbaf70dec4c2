"""``resmlp``: ResMLP-EE of Multi-Exit ViT (§2 eqs. 4a-4c, §3, Fig. 3d)."""

from __future__ import annotations

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens
from exitsearch.heads.common import DEFAULT_DROP, MLPClassifier, check
from exitsearch.heads.registry import register_head

__all__ = ["Affine", "ResMLPHead", "ResMLPHeadR2", "ResMLPLayer"]


class Affine(nn.Module):
    """``Aff_{α,β}(x) = Diag(α) x + β`` over the last dimension (Multi-Exit ViT, eq. 4c).

    Starts as the identity (``α = 1``, ``β = 0``).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.alpha = nn.Parameter(torch.ones(dim))
        self.beta = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.addcmul(self.beta, self.alpha, x)


class ResMLPLayer(nn.Module):
    """One ResMLP layer (Multi-Exit ViT, eqs. 4a and 4b; Touvron et al. 2021).

    ``U = X + Norm(f1(Norm(X)^T)^T)`` is the cross-patch sublayer (one linear layer over the N
    tokens), ``Y = U + Norm(f3(σ(f2(Norm(U)))))`` the cross-channel sublayer; every ``Norm`` is
    its own :class:`Affine`. The outer ones play the role of ResMLP's LayerScale; they start at
    1 here rather than ResMLP's small values, which only matter in a deep stack, not in one layer.

    Args:
        num_tokens: tokens N that ``f1`` mixes.
        dim: channels D.
        hidden: hidden width of the cross-channel MLP.
    """

    def __init__(self, num_tokens: int, dim: int, hidden: int) -> None:
        super().__init__()
        self.norm1 = Affine(dim)
        self.f1 = nn.Linear(num_tokens, num_tokens)
        self.scale1 = Affine(dim)
        self.norm2 = Affine(dim)
        self.f2 = nn.Linear(dim, hidden)
        self.f3 = nn.Linear(hidden, dim)
        self.scale2 = Affine(dim)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = x + self.scale1(self.f1(self.norm1(x).transpose(1, 2)).transpose(1, 2))  # 4a
        return u + self.scale2(self.f3(self.act(self.f2(self.norm2(u)))))  # 4b


@register_head("resmlp")
class ResMLPHead(ExitHead):
    """ResMLP-EE: one ResMLP layer on the patch tokens, an affine normalisation, global average
    pooling, then the three-layer MLP (Multi-Exit ViT, §3, Fig. 3d).

    As for :class:`~exitsearch.heads.mixer.MixerHead`: prefix tokens are left out (``f1``'s
    width is the number of patches), the classifier is the shared three-layer MLP rather than
    §2's single fully connected layer, and ResMLP's final ``Aff`` before pooling is kept. The
    cross-channel MLP's ratio is ResMLP's 4 by default (``8ND²``); the cross-patch layer costs
    ``N²D``. :class:`ResMLPHeadR2` (``resmlp_r2``) uses ratio 2 (``4ND²``).

    Args:
        ctx: the backbone the head is attached to.
        mlp_ratio: hidden width of the cross-channel MLP over D.
        drop: dropout probability of the classifier MLP.
    """

    def __init__(
        self, ctx: HeadContext, mlp_ratio: float = 4.0, drop: float = DEFAULT_DROP
    ) -> None:
        super().__init__(ctx)
        check(mlp_ratio > 0, "mlp_ratio > 0", mlp_ratio=mlp_ratio)
        d = ctx.embed_dim
        self.layer = ResMLPLayer(ctx.num_patches, d, max(1, round(mlp_ratio * d)))
        self.norm = Affine(d)
        self.mlp = MLPClassifier.for_context(d, ctx, drop)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        _, patches = split_tokens(hidden, self.ctx)
        # Aff is affine per channel, so it commutes with the mean: pool first, it is cheaper
        return self.norm(self.layer(patches).mean(1))

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.mlp(features)


@register_head("resmlp_r2")
class ResMLPHeadR2(ResMLPHead):
    """ResMLP-EE with a cross-channel MLP of ratio 2 instead of ResMLP's 4: half its cost. An
    exitsearch variant, not one of Multi-Exit ViT's heads."""

    def __init__(
        self, ctx: HeadContext, mlp_ratio: float = 2.0, drop: float = DEFAULT_DROP
    ) -> None:
        super().__init__(ctx, mlp_ratio, drop)
