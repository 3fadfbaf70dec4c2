"""``lgvit``: LGViT's two-stage training (LGViT, §3.4).

**Stage 1** trains the backbone and the exits "in an end-to-end method" (the paper's
introduction); §3.4 adds "we train the backbone ViT and update the parameters of the backbone
and the final classifier in an alternating strategy. As a result, the interference of multiple
internal classifiers can be minimized". Two readings exist, and both are here (hyperparameter
``stage1``):

* ``objectives`` (default): end to end, the "alternating training scheme" the paper attributes
  to BERxiT [32] and that LGViT's released scripts run for stage 1 (``alternating_weighted``):
  even steps the final exit's loss alone, odd steps the location-weighted mean
  ``(Σ_b m_b l_b + L l) / (Σ_b m_b + L)`` of every exit's loss, with backbone, final classifier
  and exit heads all trainable.
* ``alternating`` (the §3.4 sentence read literally): on the final exit's cross-entropy, even
  steps update the backbone (stem and blocks) and odd steps the final classifier (final norm
  and classifier); the exit heads take no part in stage 1.

**Stage 2** freezes the backbone and the final classifier and trains the heads (and the
aligning modules) on eq. 15, ``α L_hete + β L_homo + L_pred``:

* heterogeneous distillation (eq. 9): for the first and last LPH and the first and last GAH
  (eq. 9's ``M``, each head counted once), the KL divergence between the head's feature map and
  the final block's patch tokens passed through an aligning module (depth-wise convolution,
  GELU, BatchNorm, in the order the text gives) that brings them to the head's grid: stride 1
  for an LPH, stride ``s`` (the GAH's PFC window) for a GAH. Averaged over ``M`` (eq. 9's 1/4
  when there are four). The aligning module starts as the identity (stride 1) or an ``s x s``
  average (stride ``s``), and is learned through this loss.
* homogeneous distillation (eqs. 10-12): MSE between each earlier LPH's feature map and the
  last LPH's; MSE between each earlier GAH's Gram matrix ``F^T F`` and the last GAH's;
  averaged over the earlier heads of each type and summed.
* prediction distillation (eqs. 13-14): ``L_KD`` against the final classifier with ``γ`` and
  temperature ``T``, its soft term normalised by batch and classes and the heterogeneous term
  summed over tokens, as LGViT's released code reduces them (:mod:`exitsearch.finetune.losses`). Eq. 13 names only the last LPH and the last GAH; the classifiers of the
  other heads then receive no loss at all, which cannot be what the experiments ran, and the
  released code distils every exit. ``prediction_exits="all"`` (default) does so;
  ``"paper"`` keeps eq. 13's two.

Feature maps are what the heads expose as ``feature_map``: an LPH's projected convolution
output before pooling (N x D), a GAH's attention output on its pooled tokens (N' x D).

Configurations whose exits are not LPH or GAH get the parts defined for them: with no LPH and
no GAH, stage 2 is prediction distillation alone; with one head of a type, that type's
homogeneous term is empty. :meth:`LGViT.notes` says which terms applied. Heads with an
uncertainty predictor also keep training it (MEViT's loss; not part of eq. 15).

Defaults ``γ = 0.3``, ``α = β = 0.01``, ``T = 2`` are those of LGViT's released training
scripts (the paper gives no values).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from exitsearch.errors import ConfigError
from exitsearch.finetune.base import (
    Batch,
    FinetuneStrategy,
    Hyperparameters,
    Phase,
    integer,
    number,
)
from exitsearch.finetune.losses import (
    feature_kl,
    feature_mse,
    gram_mse,
    kd_loss,
    uncertainty_loss,
)
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.registry import register_sampler
from exitsearch.heads import HeadContext
from exitsearch.heads.base import split_tokens, tokens_to_grid
from exitsearch.heads.gah import GlobalAggregationHead
from exitsearch.heads.lph import LocalPerceptionHead

__all__ = ["AligningModule", "LGViT", "LGViTHyperparameters"]

STAGE1_MODES = ("alternating", "objectives")
PREDICTION_EXITS = ("all", "paper")


@dataclass(frozen=True)
class LGViTHyperparameters(Hyperparameters):
    """Attributes:
    alpha: weight of heterogeneous distillation (eq. 15).
    beta: weight of homogeneous distillation (eq. 15).
    gamma: weight of the soft term in eq. 14 (``1 - gamma`` on the cross-entropy).
    temperature: ``T`` of eq. 14.
    stage1: ``alternating`` or ``objectives`` (see the module docstring).
    stage1_epochs, stage2_epochs: epochs of each stage (default: the requested epochs each;
        ``stage1_epochs = 0`` skips stage 1).
    prediction_exits: ``all`` or ``paper`` (eq. 13's last LPH and last GAH).
    uncertainty_weight: weight of an uncertainty predictor's MSE loss (MEViT, eq. 1).
    """

    alpha: float = 0.01
    beta: float = 0.01
    gamma: float = 0.3
    temperature: float = 2.0
    stage1: str = "objectives"
    stage1_epochs: int | None = None
    stage2_epochs: int | None = None
    prediction_exits: str = "all"
    uncertainty_weight: float = 1.0

    def __post_init__(self) -> None:
        for name in ("alpha", "beta", "uncertainty_weight"):
            object.__setattr__(self, name, number(name, getattr(self, name), lo=0))
        gamma = number("gamma", self.gamma)
        if not 0.0 <= gamma <= 1.0:
            raise ConfigError(f"`0 <= gamma <= 1` must hold, but got gamma={self.gamma!r}")
        object.__setattr__(self, "gamma", gamma)
        object.__setattr__(
            self, "temperature", number("temperature", self.temperature, positive=True)
        )
        if self.stage1 not in STAGE1_MODES:
            raise ConfigError(
                f"`stage1` must be one of {', '.join(STAGE1_MODES)}, got {self.stage1!r}"
            )
        if self.prediction_exits not in PREDICTION_EXITS:
            raise ConfigError(
                f"`prediction_exits` must be one of {', '.join(PREDICTION_EXITS)}, "
                f"got {self.prediction_exits!r}"
            )
        integer("stage1_epochs", self.stage1_epochs, lo=0, optional=True)
        integer("stage2_epochs", self.stage2_epochs, lo=1, optional=True)


class AligningModule(nn.Module):
    """LGViT's aligning module (LGViT, eq. 9): depth-wise convolution, GELU, BatchNorm.

    Takes patch tokens (B, N, D) on the backbone's grid and returns (B, N', D) on the grid of
    the head it is compared with: ``ceil(rows / stride) x ceil(cols / stride)``, the grid of a
    GAH's PFC with window ``stride`` (edges padded by replication, as PFC's partial windows
    average only real patches).

    Args:
        ctx: the backbone.
        stride: 1 (an LPH: 3x3 kernel, starts as the identity) or a GAH's window ``s``
            (``s x s`` kernel with stride ``s``, starts as the average).
    """

    def __init__(self, ctx: HeadContext, stride: int) -> None:
        super().__init__()
        d = ctx.embed_dim
        self.ctx = ctx
        self.stride = stride
        kernel = 3 if stride == 1 else stride
        self.conv = nn.Conv2d(
            d, d, kernel, stride=stride, padding=1 if stride == 1 else 0, groups=d, bias=False
        )
        with torch.no_grad():
            if stride == 1:
                self.conv.weight.zero_()
                self.conv.weight[:, :, 1, 1] = 1.0
            else:
                self.conv.weight.fill_(1.0 / (stride * stride))
        self.act = nn.GELU()
        self.bn = nn.BatchNorm2d(d)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        grid = tokens_to_grid(patches, self.ctx)
        if self.stride > 1:
            rows, cols = grid.shape[-2:]
            pad_r, pad_c = (-rows) % self.stride, (-cols) % self.stride
            if pad_r or pad_c:
                grid = F.pad(grid, (0, pad_c, 0, pad_r), mode="replicate")
        return self.bn(self.act(self.conv(grid))).flatten(2).transpose(1, 2)


def _first_last(indices: list[int]) -> list[int]:
    return sorted({indices[0], indices[-1]}) if indices else []


@register_sampler("lgvit")
class LGViT(FinetuneStrategy):
    """Stage 1 backbone, stage 2 heads by self-distillation (LGViT, §3.4)."""

    Hyperparameters = LGViTHyperparameters
    hparams: LGViTHyperparameters

    def check(self, net: MultiExitNet) -> None:
        if not net.backbone.uniform_states:
            raise ConfigError(
                f"LGViT fine-tuning distils each exit's feature map from the final block's, and "
                f"the {net.backbone.family} backbone {net.backbone.spec.model} changes grid and "
                "width between stages; fine-tune it with end-to-end, classifier-wise, layer-wise "
                "or mevit"
            )
        if self.hparams.prediction_exits == "paper" and not any(
            isinstance(h, (LocalPerceptionHead, GlobalAggregationHead)) for h in net.heads
        ):
            raise ConfigError(
                "prediction_exits='paper' distils the last LPH and the last GAH, and this "
                "configuration has neither; use prediction_exits='all'"
            )

    def bind(self, net: MultiExitNet) -> None:
        self.check(net)
        self.lph = [k for k, h in enumerate(net.heads) if isinstance(h, LocalPerceptionHead)]
        self.gah = [k for k, h in enumerate(net.heads) if isinstance(h, GlobalAggregationHead)]
        self.hete = _first_last(self.lph) + _first_last(self.gah)
        if self.hparams.prediction_exits == "paper":
            self.pred = sorted({ks[-1] for ks in (self.lph, self.gah) if ks})
        else:
            self.pred = list(range(net.num_exits))
        ctx = self.ctx = HeadContext.from_backbone(net.backbone)
        for k in self.hete:
            head = net.heads[k]
            stride = head.pfc.s if isinstance(head, GlobalAggregationHead) else 1
            net.aux[f"align{k}"] = AligningModule(ctx, stride)

    def _stage_epochs(self, epochs: int) -> tuple[int, int]:
        h = self.hparams
        s1 = epochs if h.stage1_epochs is None else h.stage1_epochs
        return s1, h.stage2_epochs or epochs

    def phases(self, net: MultiExitNet, epochs: int) -> list[Phase]:
        s1, s2 = self._stage_epochs(epochs)
        if self.hparams.stage1 == "alternating":
            stage1 = Phase(
                "stage 1 (backbone | final classifier, alternating)",
                s1,
                tuple(net.body_parameters() + net.final_parameters()),
                (net.backbone,),
            )
        else:
            stage1 = Phase(
                "stage 1 (alternating objectives)",
                s1,
                tuple(list(net.backbone.parameters()) + net.head_parameters()),
                (net.backbone, *net.heads),
            )
        stage2 = Phase(
            "stage 2 (heads, self-distillation)",
            s2,
            tuple(net.head_parameters() + list(net.aux.parameters())),
            (*net.heads, net.aux),
        )
        return [stage1, stage2]

    def skip_update(self, net: MultiExitNet, batch: Batch) -> list[nn.Parameter]:
        if batch.phase != 0 or self.hparams.stage1 != "alternating":
            return []
        return net.final_parameters() if batch.step % 2 == 0 else net.body_parameters()

    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        return self._stage1(net, batch) if batch.phase == 0 else self._stage2(net, batch)

    def _stage1(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        states = net.hidden_states(batch.x)
        final = F.cross_entropy(net.final_logits(states).float(), batch.y)
        if self.hparams.stage1 == "alternating" or batch.step % 2 == 0:
            return {"loss": final, "ce_final": final.detach()}
        # BERxiT-style odd step: every exit, weighted by its location m (the final exit by L).
        total = net.depth * final
        norm = float(net.depth)
        terms = {"ce_final": final.detach()}
        for k, spec in enumerate(net.config.exits):
            ce, unc = self.exit_loss(
                net, k, net.exit_logits(states, k), batch.y, self.hparams.uncertainty_weight
            )
            terms[f"ce{k}"] = ce.detach()
            total = total + spec.location * (ce if unc is None else ce + unc)
            norm += spec.location
        return {"loss": total / norm, **terms}

    def _stage2(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        h = self.hparams
        with torch.no_grad():  # backbone and final classifier are frozen
            states = net.hidden_states(batch.x)
            teacher = net.final_logits(states)
            f_last = split_tokens(states[-1], self.ctx)[1]
        logits, fmaps = {}, {}
        needs_map = set(self.lph) | set(self.gah)
        for k in range(net.num_exits):
            hidden = states[net.config.exits[k].location - 1]
            if k in needs_map:
                logits[k], fmaps[k] = net.heads[k].forward_with_feature_map(hidden)
            else:
                logits[k] = net.heads[k](hidden)
        zero = torch.zeros((), dtype=torch.float32)
        pred = sum(
            (kd_loss(logits[k], teacher, batch.y, h.gamma, h.temperature) for k in self.pred), zero
        )
        hete = zero
        if self.hete:
            hete = sum(
                (feature_kl(fmaps[k], net.aux[f"align{k}"](f_last)) for k in self.hete), zero
            ) / len(self.hete)
        homo_lph = zero
        if len(self.lph) > 1:
            *early, last = self.lph
            homo_lph = sum((feature_mse(fmaps[k], fmaps[last]) for k in early), zero) / len(early)
        homo_gah = zero
        if len(self.gah) > 1:
            *early, last = self.gah
            homo_gah = sum((gram_mse(fmaps[k], fmaps[last]) for k in early), zero) / len(early)
        total = h.alpha * hete + h.beta * (homo_lph + homo_gah) + pred
        terms = {
            "pred": pred.detach(),
            "hete": hete.detach(),
            "homo_lph": homo_lph.detach(),
            "homo_gah": homo_gah.detach(),
        }
        for k in range(net.num_exits):
            predictor = getattr(net.heads[k], "uncertainty", None)
            if predictor is not None:
                unc = h.uncertainty_weight * uncertainty_loss(predictor, logits[k], batch.y)
                total = total + unc
                terms[f"unc{k}"] = unc.detach()
        return {"loss": total, **terms}

    def notes(self, net: MultiExitNet) -> list[str]:
        keys = [s.key for s in net.config.exits]
        out = []
        if not self.lph and not self.gah:
            out.append(
                "no LPH or GAH exits: stage 2 applies prediction distillation only "
                "(heterogeneous and homogeneous distillation need LGViT's heads)"
            )
        else:
            out.append(
                "heterogeneous distillation (eq. 9) on " + ", ".join(keys[k] for k in self.hete)
            )
            for name, ks, eq in (("LPH", self.lph, "eq. 10"), ("GAH", self.gah, "eq. 11")):
                if len(ks) > 1:
                    out.append(
                        f"homogeneous {name} distillation ({eq}): "
                        + ", ".join(keys[k] for k in ks[:-1])
                        + f" toward {keys[ks[-1]]}"
                    )
                else:
                    out.append(
                        f"homogeneous {name} distillation ({eq}) does not apply: "
                        f"{len(ks)} {name} exit(s)"
                    )
            others = [keys[k] for k in range(net.num_exits) if k not in self.lph + self.gah]
            if others:
                out.append(
                    "exits that are neither LPH nor GAH get prediction distillation "
                    "only: " + ", ".join(others)
                )
        out.append(
            "prediction distillation (eqs. 13-14) on " + ", ".join(keys[k] for k in self.pred)
        )
        out.append(f"stage 1: {self.hparams.stage1}")
        return out
