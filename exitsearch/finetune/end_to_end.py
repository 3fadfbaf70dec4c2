"""``end-to-end``: backbone and every exit together on one weighted loss (Multi-Exit ViT, §2.1, §4.2).

``l_t = l + Σ_{b∈B} λ_b l_b``: the final exit's cross-entropy ``l`` plus each early exit's
loss ``l_b`` weighted by ``λ_b``. Multi-Exit ViT weights "the contribution of the final exit to the
loss [...] double the contribution of the early exits", so ``λ_b = 0.5`` by default (the final
exit keeps weight 1, its loss keeps its natural scale). ``l_b`` includes the uncertainty
predictor's loss for heads that have one (MEViT, eq. 1). A cut configuration has no final
exit, so ``l`` is left out for it.

Every parameter trains: stem, blocks, final classifier and heads.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from exitsearch.errors import ConfigError
from exitsearch.finetune.base import Batch, FinetuneStrategy, Hyperparameters, Phase, number
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.registry import register_sampler

__all__ = ["EndToEnd", "EndToEndHyperparameters"]


@dataclass(frozen=True)
class EndToEndHyperparameters(Hyperparameters):
    """Attributes:
    exit_weight: ``λ_b`` of every early exit (0.5: the final exit counts double).
    exit_weights: one ``λ_b`` per early exit in exit order, replacing ``exit_weight``.
    uncertainty_weight: weight of an uncertainty predictor's MSE loss (MEViT, eq. 1).
    """

    exit_weight: float = 0.5
    exit_weights: tuple[float, ...] | None = None
    uncertainty_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(self, "exit_weight", number("exit_weight", self.exit_weight, lo=0))
        if self.exit_weights is not None:
            ws: Any = self.exit_weights
            if isinstance(ws, str | bytes) or not hasattr(ws, "__iter__"):
                raise ConfigError(f"`exit_weights` must be a list of numbers, got {ws!r}")
            object.__setattr__(
                self,
                "exit_weights",
                tuple(number(f"exit_weights[{i}]", w, lo=0) for i, w in enumerate(ws)),
            )
        object.__setattr__(
            self, "uncertainty_weight", number("uncertainty_weight", self.uncertainty_weight, lo=0)
        )

    def weights(self, num_exits: int) -> tuple[float, ...]:
        if self.exit_weights is None:
            return (self.exit_weight,) * num_exits
        if len(self.exit_weights) != num_exits:
            raise ConfigError(
                f"`exit_weights` has {len(self.exit_weights)} values for {num_exits} early exits"
            )
        return self.exit_weights


def weighted_exit_loss(
    net: MultiExitNet,
    batch: Batch,
    weights: tuple[float, ...],
    final_weight: float,
    uncertainty_weight: float,
) -> dict[str, torch.Tensor]:
    """``final_weight · l + Σ_b weights[b] · l_b`` from one forward pass (cut: no ``l``)."""
    cut = net.config.cut
    states = net.hidden_states(batch.x, upto=max(net.locations) if cut else None)
    terms: dict[str, torch.Tensor] = {}
    total = torch.zeros((), dtype=torch.float32)
    for k, w in enumerate(weights):
        ce, unc = FinetuneStrategy.exit_loss(
            net, k, net.exit_logits(states, k), batch.y, uncertainty_weight
        )
        terms[f"ce{k}"] = ce.detach()
        lb = ce if unc is None else ce + unc
        if unc is not None:
            terms[f"unc{k}"] = unc.detach()
        total = total + w * lb
    if not cut:
        final = torch.nn.functional.cross_entropy(net.final_logits(states).float(), batch.y)
        terms["ce_final"] = final.detach()
        total = total + final_weight * final
    return {"loss": total, **terms}


@register_sampler("end-to-end")
class EndToEnd(FinetuneStrategy):
    """Backbone and heads on ``l + Σ λ_b l_b`` (Multi-Exit ViT)."""

    Hyperparameters = EndToEndHyperparameters
    hparams: EndToEndHyperparameters

    def bind(self, net: MultiExitNet) -> None:
        self.hparams.weights(net.num_exits)  # the number of weights must fit

    def phases(self, net: MultiExitNet, epochs: int) -> list[Phase]:
        params = tuple(net.backbone.parameters()) + tuple(net.head_parameters())
        return [Phase("end-to-end", epochs, params, (net.backbone, *net.heads))]

    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.hparams
        return weighted_exit_loss(net, batch, h.weights(net.num_exits), 1.0, h.uncertainty_weight)
