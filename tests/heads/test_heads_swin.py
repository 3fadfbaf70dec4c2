"""Heads on a Swin backbone: each sized for its location's stage (grid, width, heads)."""

from __future__ import annotations

import pytest
import torch

from exitsearch.backbone import create_backbone
from exitsearch.device import resolve_device
from exitsearch.heads import HeadContext, HeadSpec, profile_heads
from exitsearch.heads.bank import HeadBank
from exitsearch.heads.registry import create_head
from exitsearch.search.space import load_search_space
from exitsearch.training.groups import plan_head_groups

SMALL = {
    "img_size": 28,
    "patch_size": 2,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 16,
    "depths": (2, 1, 2),
    "num_heads": (1, 2, 4),
    "window_size": 7,
}


@pytest.fixture(scope="module")
def swin():
    return create_backbone("swin_tiny_patch4_window7_224", **SMALL)


@pytest.fixture(scope="module")
def states(swin):
    torch.manual_seed(0)
    with torch.no_grad():
        return swin.hidden_states(torch.randn(2, 1, 28, 28))


def test_context_at_a_location_is_its_stages(swin):
    ctx = HeadContext.from_backbone(swin)
    assert len(ctx.locations) == swin.depth
    for m in range(1, swin.depth + 1):
        here = ctx.at(m)
        assert here.grid_size == swin.state_grid(m)
        assert here.embed_dim == swin.state_dim(m)
        assert here.num_heads == swin.state_heads(m)
        assert here.num_tokens == swin.state_tokens(m) and here.num_prefix_tokens == 0
    with pytest.raises(ValueError):
        ctx.at(swin.depth + 1)


def test_a_plain_vit_context_is_the_same_everywhere():
    vit = create_backbone("vit_tiny_patch16_224", img_size=28, patch_size=7, depth=3, embed_dim=48)
    ctx = HeadContext.from_backbone(vit)
    assert ctx.locations == () and all(ctx.at(m) is ctx for m in (1, 2, 3))


@pytest.mark.parametrize("space", ["default", "lgvit", "multiexit-vit"])
def test_every_candidate_head_reads_its_stage(swin, states, space):
    ctx = HeadContext.from_backbone(swin)
    specs = load_search_space(space).candidate_heads(swin.depth)
    assert {s.location for s in specs} >= {1, swin.depth - 1}  # heads in more than one stage
    for spec in specs:
        head = create_head(spec, ctx).eval()
        with torch.no_grad():
            logits = head(states[spec.location - 1])
        assert logits.shape == (2, 10), spec.key


def test_head_costs_follow_the_stage(swin):
    ctx = HeadContext.from_backbone(swin)
    specs = [HeadSpec("linear", m) for m in range(1, swin.depth + 1)]
    specs += [HeadSpec("gah", m, {"s": 2}) for m in (1, 5)]
    costs = profile_heads(specs, ctx)
    linear = [costs[f"linear@{m}"].flops for m in range(1, swin.depth + 1)]
    # LayerNorm over the state's width, then width x classes: one figure per stage
    expected = [5 * swin.state_dim(m) + swin.state_dim(m) * 10 for m in range(1, swin.depth + 1)]
    assert linear == expected
    assert costs["gah[s=2]@1"].params != costs["gah[s=2]@5"].params  # widths 16 and 64


def test_memory_plan_uses_each_locations_state(swin):
    ctx = HeadContext.from_backbone(swin)
    bank = HeadBank([HeadSpec("mlp", m) for m in range(1, swin.depth + 1)], ctx)
    rt = resolve_device("cpu")
    plan = plan_head_groups(swin, bank, batch_size=32, rt=rt, limit=1 << 34)
    assert len(plan.groups) == 1 and plan.group_bytes[0] > 0
    # one group holds every state up to the deepest: more than the first state alone
    first = 32 * swin.state_tokens(1) * swin.state_dim(1) * 4
    assert plan.group_bytes[0] > first
