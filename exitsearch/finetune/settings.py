"""Settings every strategy shares: epochs, batch size, learning rates, seed."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from exitsearch.errors import ConfigError
from exitsearch.finetune.base import integer, number

__all__ = ["TrainSettings"]


@dataclass(frozen=True)
class TrainSettings:
    """How long and how fast to train (AdamW, cosine decay of the learning rate within each
    phase, gradient norm clipped).

    Attributes:
        epochs: epochs per phase (strategies with several phases, layer-wise and LGViT, run
            this many in each unless their hyperparameters say otherwise).
        batch_size: training batch size.
        lr: learning rate of backbone parameters (stem, blocks, final classifier).
        head_lr: learning rate of exit heads and of training-only modules.
        weight_decay: AdamW weight decay of matrices and convolution kernels (never of biases,
            norms, tokens or position embeddings).
        augment: random crops and flips of training images (as backbone training does).
        grad_clip: clip the gradient norm of each step to this (None: no clipping).
        seed: seeds shuffling, augmentation, random exit draws, new modules.
        eval_batch_size: batch size of validation and prediction.
    """

    epochs: int = 3
    batch_size: int = 128
    lr: float = 1e-4
    head_lr: float = 1e-3
    weight_decay: float = 0.0
    augment: bool = False
    grad_clip: float | None = 1.0
    seed: int = 0
    eval_batch_size: int = 500

    def __post_init__(self) -> None:
        integer("epochs", self.epochs, lo=1)
        integer("batch_size", self.batch_size, lo=1)
        integer("eval_batch_size", self.eval_batch_size, lo=1)
        integer("seed", self.seed, lo=0)
        object.__setattr__(self, "lr", number("lr", self.lr, positive=True))
        object.__setattr__(self, "head_lr", number("head_lr", self.head_lr, positive=True))
        object.__setattr__(self, "weight_decay", number("weight_decay", self.weight_decay, lo=0))
        if self.grad_clip is not None:
            object.__setattr__(
                self, "grad_clip", number("grad_clip", self.grad_clip, positive=True)
            )
        if not isinstance(self.augment, bool):
            raise ConfigError(f"`augment` must be true or false, but got {self.augment!r}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> TrainSettings:
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise ConfigError(
                f"unknown training setting(s) {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known)}"
            )
        return cls(**dict(values))
