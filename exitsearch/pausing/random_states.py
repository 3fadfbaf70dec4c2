"""PAUMER's randomised pausing as training states for exit heads (PAUMER, §2.2).

PAUMER trains one model for many pause configurations: every batch pauses a proportion
``tau ~ U[tau_low, tau_high]`` of the patch tokens at one layer drawn uniformly from the pause
layers. Exit heads that are scored on paused token states (an exit after a pause layer reads
the assembled state: the paused tokens as they were when they paused) are trained the same
way here: :class:`RandomPausing` is the state sampler that
:func:`exitsearch.training.head_training.train_heads` draws each batch's hidden states from.

Example:
    >>> import torch
    >>> from exitsearch.pausing.pause import AuxDecoder, PausingViT
    >>> from exitsearch.backbone import create_backbone
    >>> bb = create_backbone("fmnist-vit12", pretrained=False)
    >>> vit = PausingViT(bb, AuxDecoder(bb.embed_dim, bb.num_classes))
    >>> sampler = RandomPausing(vit, layers=(4, 6), tau_low=0.2, tau_high=0.6)
    >>> cfg = sampler.draw(torch.Generator().manual_seed(0))
    >>> len(cfg.fractions), list(cfg.fractions)[0] in (4, 6)
    (1, True)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch

from exitsearch._io import sha256_of
from exitsearch.core.pause import PauseConfig
from exitsearch.errors import ConfigError
from exitsearch.pausing.pause import PauseMode, PausingViT

__all__ = ["RandomPausing"]


@dataclass
class RandomPausing:
    """Per batch: one layer uniformly from ``layers``, ``tau ~ U[tau_low, tau_high]`` of its
    patch tokens paused, chosen by ``mode`` (``entropy``: the lowest-entropy tokens of the
    model's auxiliary decoder, as at inference; ``random``: the random-pausing baseline).

    Args:
        vit: the pausing model whose backbone the heads read (frozen here).
        layers: blocks after which tokens may pause (1-based).
        tau_low, tau_high: range of the paused proportion, ``0 <= tau_low <= tau_high < 1``.
        mode: ``entropy`` or ``random``.

    Raises:
        ConfigError: no layer, a layer outside ``1..L-1``, or a proportion range outside
            ``[0, 1)``.
    """

    vit: PausingViT
    layers: tuple[int, ...]
    tau_low: float
    tau_high: float
    mode: str = "entropy"
    _weights: str = field(init=False, repr=False, default="")

    def __post_init__(self) -> None:
        self.layers = tuple(sorted({int(m) for m in self.layers}))
        depth = self.vit.depth
        if not self.layers or not 1 <= self.layers[0] <= self.layers[-1] < depth:
            raise ConfigError(
                f"pause layers must be a non-empty subset of 1..{depth - 1}, got {list(self.layers)}"
            )
        if not 0.0 <= self.tau_low <= self.tau_high < 1.0:
            raise ConfigError(
                "`0 <= tau_low <= tau_high < 1` must hold, but got "
                f"(tau_low={self.tau_low}, tau_high={self.tau_high})"
            )
        self.mode = PauseMode.parse(self.mode).value
        self.vit.eval().requires_grad_(False)
        self._weights = sha256_of(
            *(p for item in sorted(self.vit.state_dict().items()) for p in item)
        )

    def identity(self) -> dict[str, Any]:
        """The sampler as plain values, the model's weights (auxiliary decoder included) by
        checksum: part of the heads' cache key."""
        return {
            "states": "paumer-random-pausing-v1",
            "layers": list(self.layers),
            "tau": [self.tau_low, self.tau_high],
            "mode": self.mode,
            "weights": self._weights,
        }

    def draw(self, generator: torch.Generator) -> PauseConfig:
        """One batch's pause configuration: one layer, one proportion."""
        i = int(torch.randint(len(self.layers), (1,), generator=generator))
        u = float(torch.rand((), generator=generator))
        tau = self.tau_low + (self.tau_high - self.tau_low) * u
        return PauseConfig({self.layers[i]: tau}) if tau > 0 else PauseConfig()

    def states(
        self, x: torch.Tensor, locations: Sequence[int], generator: torch.Generator
    ) -> dict[int, torch.Tensor]:
        """Assembled hidden states after each of ``locations`` under one drawn configuration
        (``x``: model input, already normalised)."""
        self.vit.to(x.device)
        cfg = self.draw(generator)
        return self.vit.forward_states(x, cfg, locations, self.mode, generator).states
