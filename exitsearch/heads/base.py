"""What every exit head is: a module from the hidden state after block m to class logits."""

from __future__ import annotations

import abc
import math
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from exitsearch.core.spec import HeadSpec

__all__ = [
    "ExitHead",
    "HeadContext",
    "HeadSpec",
    "StateShape",
    "UncertaintyPredictor",
    "split_tokens",
    "tokens_to_grid",
]


@dataclass(frozen=True)
class StateShape:
    """The hidden state's shape after one block: width, patch grid, and the block's heads."""

    embed_dim: int
    grid_size: tuple[int, int]
    num_heads: int


@dataclass(frozen=True)
class HeadContext:
    """What a head needs to know about the backbone it is attached to.

    Attributes:
        embed_dim: width D of the hidden states.
        num_prefix_tokens: class/distillation/register tokens in front of the patch tokens.
        grid_size: (rows, cols) of the patch grid; rows * cols patch tokens follow the prefix.
        num_classes: number of logits a head returns.
        num_heads: attention heads of the backbone's blocks (a default for attention heads).
        has_class_token: whether token 0 is a class token; without one, heads pool instead.
        depth: number of blocks L of the backbone (for mappings over locations).
        locations: the state's shape after each block 1..L where it changes from stage to stage
            (Swin); empty when every block keeps the embedding's shape (plain ViT). A head is
            built for ``ctx.at(location)``, whose grid, width and heads are its location's.
    """

    embed_dim: int
    num_prefix_tokens: int
    grid_size: tuple[int, int]
    num_classes: int
    num_heads: int = 1
    has_class_token: bool = True
    depth: int = 12
    locations: tuple[StateShape, ...] = ()

    def at(self, location: int) -> HeadContext:
        """The context of a head after block ``location``: its stage's grid, width and heads."""
        if not self.locations:
            return self
        if not 1 <= location <= len(self.locations):
            raise ValueError(f"`1 <= location <= {len(self.locations)}` must hold, got {location}")
        s = self.locations[location - 1]
        return replace(self, embed_dim=s.embed_dim, grid_size=s.grid_size, num_heads=s.num_heads)

    @property
    def shape(self) -> tuple[int, tuple[int, int], int]:
        """What a head's size depends on besides its type: (width, grid, attention heads)."""
        return self.embed_dim, self.grid_size, self.num_heads

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @classmethod
    def from_backbone(cls, backbone: Any) -> HeadContext:
        locations = (
            ()
            if getattr(backbone, "uniform_states", True)
            else tuple(
                StateShape(backbone.state_dim(m), backbone.state_grid(m), backbone.state_heads(m))
                for m in range(1, backbone.depth + 1)
            )
        )
        return cls(
            embed_dim=backbone.embed_dim,
            num_prefix_tokens=backbone.num_prefix_tokens,
            grid_size=backbone.grid_size,
            num_classes=backbone.num_classes,
            num_heads=backbone.num_heads,
            has_class_token=backbone.has_class_token,
            depth=backbone.depth,
            locations=locations,
        )


def split_tokens(
    hidden: torch.Tensor, ctx: HeadContext
) -> tuple[torch.Tensor | None, torch.Tensor]:
    """``(class_token, patches)``: class token (B, D) or None, patch tokens (B, N, D).

    With more than one prefix token (DeiT's distillation token, registers) only token 0 is the
    class token; the others are dropped here.
    """
    cls_tok = hidden[:, 0] if ctx.has_class_token else None
    return cls_tok, hidden[:, ctx.num_prefix_tokens :]


def tokens_to_grid(patches: torch.Tensor, ctx: HeadContext) -> torch.Tensor:
    """Patch tokens (B, N, D) back on their 2-D grid as (B, D, rows, cols)."""
    b, n, d = patches.shape
    rows, cols = ctx.grid_size
    if n != rows * cols:
        raise ValueError(f"expected {rows}x{cols}={rows * cols} patch tokens, got {n}")
    return patches.transpose(1, 2).reshape(b, d, rows, cols)


class UncertaintyPredictor(nn.Module):
    """MEViT's uncertainty score (eq. 3): ``u = sigmoid(w^T f(h) + b)``.

    It reads the head's logits and is trained with eq. 2 (MSE) against eq. 4's target
    ``tanh(|softmax(f(h)) - onehot(y)|_1)``; a low ``u`` means the head is likely right.
    """

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.proj = nn.Linear(num_classes, 1)

    def forward(self, logits: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.proj(logits)).squeeze(-1)

    @staticmethod
    def target(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        """Eq. 4: the head's own error, ``tanh`` of the L1 distance of its softmax to the label."""
        p = logits.detach().float().softmax(-1)
        onehot = torch.nn.functional.one_hot(labels, p.shape[-1]).to(p.dtype)
        return torch.tanh((p - onehot).abs().sum(-1))


class ExitHead(nn.Module, abc.ABC):
    """Base class of exit heads.

    Subclasses implement :meth:`features` (the head's representation, used by distillation
    losses) and :meth:`classify` (features to logits). ``forward(hidden)`` takes the full hidden
    state after block m, shape (B, prefix + patches, D), and returns logits (B, num_classes).
    The factory attaches ``self.uncertainty`` when the spec asks for it.
    """

    def __init__(self, ctx: HeadContext) -> None:
        super().__init__()
        self.ctx = ctx
        self.uncertainty: UncertaintyPredictor | None = None

    @abc.abstractmethod
    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        """The head's representation of ``hidden`` before its classifier."""

    @abc.abstractmethod
    def classify(self, features: torch.Tensor) -> torch.Tensor:
        """Logits (B, num_classes) from :meth:`features`."""

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.classify(self.features(hidden))


def mlp_hidden(ctx: HeadContext) -> int:
    """Width of the hidden layers of the three-layer MLP classifier (Multi-Exit ViT)."""
    return max(ctx.num_classes, math.ceil(ctx.embed_dim / 2))
