"""The contract every registered exit head keeps, bound to each head through one fixture.

A new head type is picked up by ``list_heads()`` without touching this file; give it
representative parameters in :data:`REPRESENTATIVE_PARAMS` when its defaults are not enough.
"""

from __future__ import annotations

from typing import Any

import pytest
import torch

from exitsearch.backbone import create_backbone
from exitsearch.errors import ConfigError
from exitsearch.heads import ExitHead, HeadContext, HeadSpec, create_head, list_heads

REPRESENTATIVE_PARAMS: dict[str, list[dict[str, Any]]] = {
    "lph": [{"k": 0}, {"k": 3}],
    "gah": [{"s": 1}, {"s": 2}, {"s": 3}],
    "tokenmap": [{}, {"grid": 2}],
}

D, HEADS, CLASSES, BATCH = 24, 3, 5, 2

CONTEXTS: dict[str, HeadContext] = {
    # a ViT-like grid with one class token
    "cls_7x7": HeadContext(D, 1, (7, 7), CLASSES, HEADS),
    # a grid that windows of 2 do not divide
    "cls_5x5": HeadContext(D, 1, (5, 5), CLASSES, HEADS),
    # rows != cols: catches transposed grids
    "cls_3x5": HeadContext(D, 1, (3, 5), CLASSES, HEADS),
    # DeiT: class and distillation token
    "deit_4x4": HeadContext(D, 2, (4, 4), CLASSES, HEADS),
    # class token and four registers
    "registers_4x4": HeadContext(D, 5, (4, 4), CLASSES, HEADS),
    # global average pooling, no class token
    "nocls_4x4": HeadContext(D, 0, (4, 4), CLASSES, HEADS, has_class_token=False),
}

BACKBONES: dict[str, tuple[str, dict[str, Any]]] = {
    "vit": ("vit_tiny_patch16_224", {}),
    "deit_distilled": ("deit_tiny_distilled_patch16_224", {}),
    "vit_avgpool": ("vit_tiny_patch16_224", {"class_token": False, "global_pool": "avg"}),
}


def _variants() -> list[Any]:
    return [
        pytest.param((name, params), id=HeadSpec(name, 1, params).variant)
        for name in list_heads()
        for params in REPRESENTATIVE_PARAMS.get(name, [{}])
    ]


@pytest.fixture(params=_variants())
def variant(request: pytest.FixtureRequest) -> tuple[str, dict[str, Any]]:
    """(head type, params): every registered head, with representative parameters."""
    return request.param


def build(
    variant: tuple[str, dict[str, Any]], ctx: HeadContext, uncertainty: bool = False
) -> ExitHead:
    name, params = variant
    torch.manual_seed(0)
    return create_head(HeadSpec(name, 1, params, uncertainty), ctx)


def hidden_for(ctx: HeadContext, batch: int = BATCH, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, ctx.num_tokens, ctx.embed_dim, generator=gen)


@pytest.fixture(scope="module")
def backbone_states() -> dict[str, tuple[HeadContext, torch.Tensor]]:
    """Hidden states after block 2 of three tiny real timm backbones, with their contexts."""
    out = {}
    for key, (model, extra) in BACKBONES.items():
        torch.manual_seed(0)
        bb = create_backbone(
            model,
            img_size=32,
            patch_size=8,
            depth=4,
            embed_dim=48,
            num_heads=3,
            num_classes=5,
            **extra,
        ).eval()
        with torch.no_grad():
            states = bb.hidden_states(torch.randn(BATCH, 3, 32, 32), upto=2)
        out[key] = (HeadContext.from_backbone(bb), states[-1])
    return out


def test_representative_params_name_registered_heads() -> None:
    assert set(REPRESENTATIVE_PARAMS) <= set(list_heads())


def test_registered_as_exit_head(variant: tuple[str, dict[str, Any]]) -> None:
    head = build(variant, CONTEXTS["cls_7x7"])
    assert isinstance(head, ExitHead)
    assert type(head).head_type == variant[0]  # type: ignore[attr-defined]


@pytest.mark.parametrize("ctx_name", list(CONTEXTS))
def test_logits_shape(variant: tuple[str, dict[str, Any]], ctx_name: str) -> None:
    ctx = CONTEXTS[ctx_name]
    head = build(variant, ctx)
    logits = head(hidden_for(ctx))
    assert logits.shape == (BATCH, CLASSES)
    assert torch.isfinite(logits).all()


@pytest.mark.parametrize("ctx_name", ["cls_7x7", "nocls_4x4"])
def test_gradients_reach_every_parameter(
    variant: tuple[str, dict[str, Any]], ctx_name: str
) -> None:
    ctx = CONTEXTS[ctx_name]
    head = build(variant, ctx).train()
    hidden = hidden_for(ctx).requires_grad_(True)
    head(hidden).square().sum().backward()
    for name, p in head.named_parameters():
        assert p.grad is not None, name
        assert p.grad.abs().sum() > 0, name
    assert hidden.grad is not None and hidden.grad.abs().sum() > 0


def test_forward_is_features_then_classify(variant: tuple[str, dict[str, Any]]) -> None:
    ctx = CONTEXTS["cls_7x7"]
    head = build(variant, ctx).eval()
    hidden = hidden_for(ctx)
    with torch.no_grad():
        torch.testing.assert_close(head.classify(head.features(hidden)), head(hidden))


def test_eval_is_deterministic_and_per_sample(variant: tuple[str, dict[str, Any]]) -> None:
    ctx = CONTEXTS["cls_7x7"]
    head = build(variant, ctx).eval()
    hidden = hidden_for(ctx, batch=3)
    with torch.no_grad():
        first, second = head(hidden), head(hidden)
        alone = head(hidden[1:2])
    torch.testing.assert_close(first, second, rtol=0, atol=0)
    # in eval mode a sample's logits do not depend on the rest of its batch (BatchNorm included)
    torch.testing.assert_close(alone, first[1:2])


def test_uncertainty_predictor(variant: tuple[str, dict[str, Any]]) -> None:
    ctx = CONTEXTS["cls_7x7"]
    head = build(variant, ctx, uncertainty=True).eval()
    assert head.uncertainty is not None
    with torch.no_grad():
        u = head.uncertainty(head(hidden_for(ctx)))
    assert u.shape == (BATCH,)
    assert ((u > 0) & (u < 1)).all()


def test_unknown_parameter_is_a_config_error(variant: tuple[str, dict[str, Any]]) -> None:
    name, params = variant
    with pytest.raises(ConfigError, match="no_such_param"):
        create_head(HeadSpec(name, 1, {**params, "no_such_param": 1}), CONTEXTS["cls_7x7"])


@pytest.mark.parametrize("backbone", list(BACKBONES))
def test_on_real_backbone_hidden_states(
    variant: tuple[str, dict[str, Any]],
    backbone: str,
    backbone_states: dict[str, tuple[HeadContext, torch.Tensor]],
) -> None:
    ctx, hidden = backbone_states[backbone]
    head = build(variant, ctx)
    logits = head(hidden)
    assert logits.shape == (BATCH, CLASSES)
    assert torch.isfinite(logits).all()
