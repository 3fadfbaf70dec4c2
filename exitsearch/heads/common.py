"""Building blocks that several head families share: classifiers, pooling, parameter checks."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from exitsearch.errors import ConfigError
from exitsearch.heads.base import HeadContext, mlp_hidden, split_tokens

__all__ = [
    "DEFAULT_DROP",
    "MLPClassifier",
    "NormLinearClassifier",
    "check",
    "check_int",
    "class_token_or_mean",
]

DEFAULT_DROP = 0.1
"""Dropout of the three-layer MLP: Multi-Exit ViT has two dropout layers but gives no rate; 0.1 is
ViT's own dropout rate (Dosovitskiy et al.), under which its backbones were pre-trained."""


def check(condition: bool, what: str, **values: Any) -> None:
    """Raise :class:`ConfigError` saying that ``what`` must hold, with the offending values.

    Example:
        >>> check(3 >= 5, "k_first >= k_last", k_first=3, k_last=5)
        Traceback (most recent call last):
        ...
        exitsearch.errors.ConfigError: `k_first >= k_last` must hold, but got (k_first=3, k_last=5)
    """
    if not condition:
        got = ", ".join(f"{k}={v!r}" for k, v in values.items())
        raise ConfigError(f"`{what}` must hold, but got ({got})")


def check_int(name: str, value: Any) -> None:
    """Integer parameters must be real ints: ``3.0`` or ``True`` from a config file is an error."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, but got {name}={value!r}")


def class_token_or_mean(hidden: torch.Tensor, ctx: HeadContext) -> torch.Tensor:
    """Token 0 when the backbone has a class token, else the mean patch token: (B, D)."""
    cls_tok, patches = split_tokens(hidden, ctx)
    return cls_tok if cls_tok is not None else patches.mean(1)


class MLPClassifier(nn.Sequential):
    """The three-layer MLP of Multi-Exit ViT (§3, Figs. 3 and 4).

    "An MLP consisting of three dense layers with two dropout layers in between"; every head of
    Multi-Exit ViT ends in this same MLP. GELU follows the first two layers, as in ViT's MLP.

    Args:
        in_features: width of the input vector.
        num_classes: number of logits.
        hidden: width of the two hidden layers; :func:`~exitsearch.heads.base.mlp_hidden` of the
            head's context is the project-wide default.
        drop: dropout probability of the two dropout layers.
    """

    def __init__(self, in_features: int, num_classes: int, hidden: int, drop: float = 0.0) -> None:
        check(0.0 <= drop < 1.0, "0 <= drop < 1", drop=drop)
        super().__init__(
            nn.Linear(in_features, hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Linear(hidden, hidden),
            nn.GELU(),
            nn.Dropout(drop),
            nn.Linear(hidden, num_classes),
        )

    @classmethod
    def for_context(cls, in_features: int, ctx: HeadContext, drop: float = 0.0) -> MLPClassifier:
        return cls(in_features, ctx.num_classes, mlp_hidden(ctx), drop)


class NormLinearClassifier(nn.Sequential):
    """LayerNorm, then one linear layer: LGViT's internal classifier (LGViT, §3.3)."""

    def __init__(self, in_features: int, num_classes: int) -> None:
        super().__init__(nn.LayerNorm(in_features), nn.Linear(in_features, num_classes))
