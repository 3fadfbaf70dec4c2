"""FLOPs of a pause configuration: every block counted exactly on the tokens it processes.

Convention (DESIGN.md, fvcore's): one multiply-accumulate is one FLOP, LayerNorm 5 per element.
A configuration costs the stem, each block on its own token count (fvcore on a block fed that
many tokens), the auxiliary decoder at every pause layer on the tokens still processed there
(entropy mode only: random pausing does not run it at inference), and the main head on the
assembled state. Gathering, scattering and sorting tokens are memory operations and count 0.
Exit heads see assembled states, so their cost does not change under pausing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.costs import CostModel
from exitsearch.core.pause import PauseConfig
from exitsearch.errors import ConfigError
from exitsearch.pausing.pause import PauseMode, PausingViT, uses_aux_decoder
from exitsearch.profile.backbone import block_flops, profile_backbone
from exitsearch.profile.flops import UNIT, FlopCount, count_flops

__all__ = [
    "PauseCost",
    "aux_decoder_flops",
    "pause_block_flops",
    "pause_cost",
    "paused_block_flops",
    "with_pauses",
]

# fvcore traces are the slow part (tens of ms each); a block's count depends only on its
# architecture (its repr names every layer and size) and the token count.
_BLOCK_CACHE: dict[tuple[str, int], int] = {}
_MODULE_CACHE: dict[tuple[str, tuple[int, ...]], FlopCount] = {}


def _cached_block_flops(backbone: Backbone, index: int, num_tokens: int) -> int:
    key = (repr(backbone.model.blocks[index - 1]), num_tokens)
    if key not in _BLOCK_CACHE:
        _BLOCK_CACHE[key] = block_flops(backbone, index, num_tokens)
    return _BLOCK_CACHE[key]


def _module_count(module: nn.Module, shape: tuple[int, ...]) -> FlopCount:
    key = (repr(module), shape)
    if key not in _MODULE_CACHE:
        _MODULE_CACHE[key] = count_flops(module, torch.zeros(shape))
    return _MODULE_CACHE[key]


def _as_pausing(model: Any) -> PausingViT:
    return model.vit if hasattr(model, "vit") else model


def pause_block_flops(
    model: PausingViT | Any, pause: PauseConfig | Mapping[int, float] | str | None
) -> list[int]:
    """Exact FLOPs of blocks ``1..L`` under ``pause``, each on its own token count.

    ``model`` is a :class:`PausingViT` or a model holding one as ``.vit`` (``PaumerModel``).
    """
    vit = _as_pausing(model)
    bb = vit.backbone
    return [_cached_block_flops(bb, i + 1, n) for i, n in enumerate(vit.token_counts(pause))]


def aux_decoder_flops(model: PausingViT | Any, num_tokens: int) -> int:
    """FLOPs of the auxiliary decoder on ``num_tokens`` patch tokens."""
    vit = _as_pausing(model)
    return _module_count(vit.aux, (1, num_tokens, vit.backbone.embed_dim)).total


class _Head(nn.Module):
    """The main head of a model as one module, so that fvcore can trace it."""

    def __init__(self, model: Any) -> None:
        super().__init__()
        self.model = model

    def forward(self, assembled: torch.Tensor) -> torch.Tensor:
        return self.model.head(assembled)


@dataclass(frozen=True)
class PauseCost:
    """FLOPs per image of one pause configuration; ``total`` is the sum of the parts.

    Attributes:
        tokens: tokens (prefix included) processed by each block.
        blocks: FLOPs of each block on those tokens.
        aux: FLOPs of the auxiliary decoder at each pause layer (``{layer: flops}``).
        uncounted_ops: ops of the main head that no FLOP handle counts (elementwise by
            convention), reported rather than dropped silently.
    """

    pause: str
    mode: str
    stem: int
    tokens: list[int]
    blocks: list[int]
    aux: dict[int, int]
    head: int
    uncounted_ops: dict[str, int] = field(default_factory=dict)
    unit: str = UNIT

    @property
    def total(self) -> int:
        return self.stem + sum(self.blocks) + sum(self.aux.values()) + self.head

    def cumulative(self, location: int) -> int:
        """Stem, blocks ``1..location`` and the auxiliary decoders run by then (the backbone
        part of the cost of an exit after block ``location``)."""
        aux = sum(v for k, v in self.aux.items() if k <= location)
        return self.stem + sum(self.blocks[:location]) + aux

    def to_dict(self) -> dict[str, Any]:
        return {
            **asdict(self),
            "aux": {str(k): v for k, v in self.aux.items()},
            "total": self.total,
        }


def pause_cost(
    model: Any,
    pause: PauseConfig | Mapping[int, float] | str | None,
    mode: PauseMode | str = PauseMode.ENTROPY,
) -> PauseCost:
    """FLOPs per image of ``model`` (a ``PaumerModel``, or a ``PausingViT`` whose main head is the
    backbone's own) under ``pause`` in ``mode``."""
    vit = _as_pausing(model)
    bb = vit.backbone
    cfg = vit.resolve(pause)
    tokens = vit.token_counts(cfg)
    prof = _profile(bb)
    aux: dict[int, int] = {}
    if uses_aux_decoder(mode):
        p = bb.num_prefix_tokens
        # the decoder reads the output of block l: the tokens block l processed, minus prefix
        aux = {layer: aux_decoder_flops(vit, tokens[layer - 1] - p) for layer in cfg.layers}
    if hasattr(model, "head") and getattr(model, "decoder", None) is not None:
        fc = _module_count(_Head(model), (1, bb.num_tokens, bb.embed_dim))
        head, uncounted = fc.total, fc.uncounted_ops
    else:
        head, uncounted = prof.head_flops, {}
    return PauseCost(
        pause=cfg.key,
        mode=PauseMode.parse(mode).value,
        stem=prof.stem_flops,
        tokens=tokens,
        blocks=pause_block_flops(vit, cfg),
        aux=aux,
        head=head,
        uncounted_ops=dict(uncounted),
    )


_PROFILE_CACHE: dict[str, Any] = {}


def _profile(bb: Backbone) -> Any:
    key = repr(bb.model) + repr(bb.img_size)
    if key not in _PROFILE_CACHE:
        _PROFILE_CACHE[key] = profile_backbone(bb)
    return _PROFILE_CACHE[key]


def paused_block_flops(vit: Any, pause: Any, mode: str = "entropy") -> tuple[float, ...]:
    """FLOPs of blocks ``1..L`` of ``vit`` (a ``PausingViT`` or a model holding one as ``.vit``)
    under ``pause``, each on its own token count, with the auxiliary decoder at pause layer
    ``l`` added to block ``l + 1`` (entropy mode; random pausing does not run it).

    Raises:
        ConfigError: the pause configuration does not fit the model.
    """
    inner = vit.vit if hasattr(vit, "vit") else vit
    cfg = inner.resolve(pause)
    blocks = [float(b) for b in pause_block_flops(inner, cfg)]
    if uses_aux_decoder(mode):
        tokens = inner.token_counts(cfg)
        p = inner.num_prefix_tokens
        for layer in cfg.layers:  # 1 <= layer <= L - 1: block layer + 1 exists
            blocks[layer] += float(aux_decoder_flops(inner, tokens[layer - 1] - p))
    return tuple(blocks)


def with_pauses(
    costs: CostModel, vit: Any, pauses: Iterable[Any], mode: PauseMode | str = "entropy"
) -> CostModel:
    """``costs`` plus the block costs of ``pauses`` (``PauseConfig`` or ``{layer: fraction}``)
    on ``vit``, the pausing model whose backbone ``costs.profile`` describes.

    Raises:
        ConfigError: a pause configuration does not fit the model, or ``vit``'s backbone has
            another depth than the profile.
    """
    inner = vit.vit if hasattr(vit, "vit") else vit
    if inner.depth != costs.profile.depth:
        raise ConfigError(
            f"the pausing model has {inner.depth} blocks but the cost profile {costs.profile.depth}"
        )
    mode = PauseMode.parse(mode).value
    tables: dict[str, tuple[float, ...]] = {}
    for pause in pauses:
        cfg = inner.resolve(pause)
        if cfg and cfg.key not in costs.pause_blocks and cfg.key not in tables:
            tables[cfg.key] = paused_block_flops(inner, cfg, mode)
    return costs.with_pause_blocks(tables)
