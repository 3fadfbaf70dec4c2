"""FLOPs per exit of an exit configuration, counted with the search's cost model."""

from __future__ import annotations

from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.errors import ConfigError
from exitsearch.export.points import ExitCosts
from exitsearch.heads import HeadContext, profile_heads
from exitsearch.pausing.costs import with_pauses
from exitsearch.pausing.pause import PausingViT
from exitsearch.profile import profile_backbone

__all__ = ["exit_costs"]


def exit_costs(
    backbone: Backbone, config: ExitConfig, aux_decoder: nn.Module | None = None
) -> ExitCosts:
    """Count the FLOPs of ``config``'s exits on ``backbone`` with the search's cost model (a
    pause configuration needs the auxiliary decoder, whose cost it includes)."""
    heads = profile_heads(config.exits, HeadContext.from_backbone(backbone))
    model = CostModel(profile_backbone(backbone), {k: c.flops for k, c in heads.items()})
    if config.pause:
        if aux_decoder is None:
            raise ConfigError("the cost of a pause configuration needs the auxiliary decoder")
        model = with_pauses(model, PausingViT(backbone, aux_decoder), [config.pause])
    return ExitCosts(float(model.backbone_flops), tuple(float(v) for v in model.exit_flops(config)))
