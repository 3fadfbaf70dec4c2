"""Optimiser set-up shared by the trainers: AdamW groups and a warm-up + cosine schedule."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

__all__ = ["NO_DECAY_SUFFIXES", "adamw", "warmup_cosine"]

# Embeddings and tokens are not decayed, as in timm's and DeiT's recipes.
NO_DECAY_SUFFIXES = ("pos_embed", "cls_token", "dist_token", "reg_token")


def adamw(
    model: nn.Module, lr: float, weight_decay: float, extra_no_decay: Iterable[str] = ()
) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (not on biases, norms, embeddings, tokens)."""
    suffixes = (*NO_DECAY_SUFFIXES, *extra_no_decay)
    decay, flat = [], []
    for name, p in model.named_parameters():
        (flat if p.ndim <= 1 or name.endswith(suffixes) else decay).append(p)
    return torch.optim.AdamW(
        [{"params": decay, "weight_decay": weight_decay}, {"params": flat, "weight_decay": 0.0}],
        lr=lr,
    )


def warmup_cosine(lr: float, warmup_steps: int, total_steps: int) -> Callable[[int], float]:
    """Learning rate at a step: linear warm-up over ``warmup_steps``, then cosine decay to 0."""
    warmup = max(1, warmup_steps)

    def at(step: int) -> float:
        if step < warmup:
            return lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return lr * 0.5 * (1 + math.cos(math.pi * t))

    return at
