"""``classifier-wise``: the exit heads alone, backbone frozen (Multi-Exit ViT, §2.1).

"The classifier-wise strategy freezes the backbone, meaning the parameters θ will not be
modified, and trains the branches separately and independent of each other or the backbone."
This is how the search's heads were trained (:mod:`exitsearch.training.head_training`); here it
continues from the bundle's heads with the same loss (each head's cross-entropy, plus its
uncertainty predictor's loss, MEViT eq. 1), and serves as the baseline the other strategies
are compared with. The backbone and its final classifier stay bit-identical.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from exitsearch.finetune.base import Batch, FinetuneStrategy, Hyperparameters, Phase, number
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.registry import register_sampler

__all__ = ["ClassifierWise", "ClassifierWiseHyperparameters"]


@dataclass(frozen=True)
class ClassifierWiseHyperparameters(Hyperparameters):
    """Attributes:
    uncertainty_weight: weight of an uncertainty predictor's MSE loss (MEViT, eq. 1).
    """

    uncertainty_weight: float = 1.0

    def __post_init__(self) -> None:
        object.__setattr__(
            self, "uncertainty_weight", number("uncertainty_weight", self.uncertainty_weight, lo=0)
        )


@register_sampler("classifier-wise")
class ClassifierWise(FinetuneStrategy):
    """Heads only, each on its own loss; the backbone is frozen (the baseline)."""

    Hyperparameters = ClassifierWiseHyperparameters
    hparams: ClassifierWiseHyperparameters

    def phases(self, net: MultiExitNet, epochs: int) -> list[Phase]:
        return [Phase("heads", epochs, tuple(net.head_parameters()), tuple(net.heads))]

    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        with torch.no_grad():  # frozen: no graph through the backbone
            states = net.hidden_states(batch.x, upto=max(net.locations))
        terms: dict[str, torch.Tensor] = {}
        total = torch.zeros((), dtype=torch.float32)
        for k in range(net.num_exits):
            ce, unc = self.exit_loss(
                net, k, net.exit_logits(states, k), batch.y, self.hparams.uncertainty_weight
            )
            terms[f"ce{k}"] = ce.detach()
            total = total + ce
            if unc is not None:
                terms[f"unc{k}"] = unc.detach()
                total = total + unc
        return {"loss": total, **terms}
