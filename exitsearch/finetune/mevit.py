"""``mevit``: MEViT's sandwich rule with in-place distillation (§2.2).

Each iteration, following the sandwich rule of universally slimmable networks [16]:

1. the *upper bound*, the full model with the final classifier, on its cross-entropy;
2. the *lower bound*, "the earliest exit branch classifier and other randomly sampled early
   exit branch classifiers": exit 1 always, plus ``num_sampled`` other early exits drawn
   without replacement each iteration. Each sampled exit i contributes eq. 1,
   ``L_CE_i + L_MSE_i`` (cross-entropy plus its uncertainty predictor's loss, eqs. 2-4, for
   heads that have one), and the in-place distillation of eq. 5, ``KL(f_n || f_i)`` from the
   final classifier's softmax (detached: the teacher is not pulled toward its students).

"Both the full and sparse models are optimized simultaneously": the losses of one iteration
are summed and take one optimiser step, which gives the same gradients as accumulating one
backward pass per bound. Backbone, final classifier and heads all train. Exits not drawn in an
iteration get no loss in it. The draws come from the epoch's seeded generator, so a resumed run
draws the same exits.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from exitsearch.finetune.base import (
    Batch,
    FinetuneStrategy,
    Hyperparameters,
    Phase,
    integer,
    number,
)
from exitsearch.finetune.losses import inplace_distillation
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.registry import register_sampler

__all__ = ["MEViT", "MEViTHyperparameters", "sandwich_exits"]


@dataclass(frozen=True)
class MEViTHyperparameters(Hyperparameters):
    """Attributes:
    num_sampled: early exits drawn at random each iteration besides the earliest one.
    distill_weight: weight of eq. 5's in-place distillation.
    uncertainty_weight: weight of eq. 2's uncertainty loss within eq. 1.
    """

    num_sampled: int = 1
    distill_weight: float = 1.0
    uncertainty_weight: float = 1.0

    def __post_init__(self) -> None:
        integer("num_sampled", self.num_sampled, lo=0)
        for name in ("distill_weight", "uncertainty_weight"):
            object.__setattr__(self, name, number(name, getattr(self, name), lo=0))


def sandwich_exits(num_exits: int, num_sampled: int, generator: torch.Generator) -> list[int]:
    """The lower bound's exits: exit 0 and ``num_sampled`` of the others, drawn without
    replacement from ``generator`` (all of them when fewer remain), in exit order."""
    if num_exits == 0:
        return []
    others = torch.randperm(num_exits - 1, generator=generator)[:num_sampled] + 1
    return [0, *sorted(int(k) for k in others)]


@register_sampler("mevit")
class MEViT(FinetuneStrategy):
    """Sandwich rule with in-place distillation from the final classifier (MEViT)."""

    Hyperparameters = MEViTHyperparameters
    hparams: MEViTHyperparameters

    def phases(self, net: MultiExitNet, epochs: int) -> list[Phase]:
        params = tuple(net.backbone.parameters()) + tuple(net.head_parameters())
        return [Phase("sandwich", epochs, params, (net.backbone, *net.heads))]

    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.hparams
        states = net.hidden_states(batch.x)
        final_logits = net.final_logits(states)
        upper = torch.nn.functional.cross_entropy(final_logits.float(), batch.y)
        total = upper
        terms = {"ce_final": upper.detach()}
        for k in sandwich_exits(net.num_exits, h.num_sampled, batch.generator):
            logits = net.exit_logits(states, k)
            ce, unc = self.exit_loss(net, k, logits, batch.y, h.uncertainty_weight)
            kl = inplace_distillation(logits, final_logits)
            total = total + ce + h.distill_weight * kl
            terms[f"ce{k}"] = ce.detach()
            terms[f"kl{k}"] = kl.detach()
            if unc is not None:
                total = total + unc
                terms[f"unc{k}"] = unc.detach()
        return {"loss": total, **terms}
