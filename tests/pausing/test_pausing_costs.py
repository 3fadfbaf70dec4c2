"""FLOPs under pausing against counts derived by hand (1 multiply-accumulate = 1 FLOP)."""

from __future__ import annotations

import pytest

from exitsearch.pausing import (
    AuxDecoder,
    PausingViT,
    aux_decoder_flops,
    build_paumer,
    pause_block_flops,
    pause_cost,
)
from exitsearch.profile import profile_backbone


def analytic_block(d: int, hidden: int, n: int) -> int:
    """A timm ViT block on n tokens: two LayerNorms (5 per element), qkv, Q K^T and A V,
    the output projection, and the two MLP layers."""
    return 2 * 5 * n * d + n * d * 3 * d + 2 * n * n * d + n * d * d + 2 * n * d * hidden


@pytest.mark.parametrize("pause", [{}, {3: 0.2}, {1: 0.5, 4: 0.3}, {2: 0.2, 3: 0.2, 5: 0.2}])
def test_paused_blocks_cost_their_analytic_count(make_pause_tiny, pause):
    bb = make_pause_tiny()
    vit = PausingViT(bb, AuxDecoder(bb.embed_dim, 10))
    d, hidden = bb.embed_dim, bb.model.blocks[0].mlp.fc1.out_features
    counts = vit.token_counts(pause)
    assert pause_block_flops(vit, pause) == [analytic_block(d, hidden, n) for n in counts]


def test_total_is_stem_blocks_aux_and_head(make_pause_tiny):
    bb = make_pause_tiny()
    model = build_paumer(bb, "classification")
    prof = profile_backbone(bb)
    cost = pause_cost(model, {2: 0.2, 4: 0.4})
    assert cost.tokens == [50, 50, 40, 40, 20, 20]
    d, c = bb.embed_dim, 10
    # the decoder reads block 2's 49 patch tokens and block 4's 39: LayerNorm then linear
    assert cost.aux == {2: 49 * (5 * d + d * c), 4: 39 * (5 * d + d * c)}
    assert aux_decoder_flops(model, 49) == cost.aux[2]
    assert cost.stem == prof.stem_flops and cost.head == prof.head_flops
    assert cost.total == cost.stem + sum(cost.blocks) + sum(cost.aux.values()) + cost.head
    # without pausing the cost is the profiler's, exactly
    assert pause_cost(model, {}).total == prof.total_flops
    # the random baseline runs no auxiliary decoder at inference
    rnd = pause_cost(model, {2: 0.2, 4: 0.4}, "random")
    assert rnd.aux == {} and rnd.total == cost.total - sum(cost.aux.values())
    assert cost.cumulative(3) == cost.stem + sum(cost.blocks[:3]) + cost.aux[2]
    assert cost.to_dict()["total"] == cost.total


def test_segmentation_head_is_counted_on_all_tokens(make_pause_tiny):
    bb = make_pause_tiny()
    model = build_paumer(bb, "segmentation", {"depth": 1})
    full, paused = pause_cost(model, {}), pause_cost(model, {3: 0.6})
    # the decoder always sees the 49 assembled patch tokens: its cost does not change
    assert full.head == paused.head > 0
    assert paused.total < full.total
    # what fvcore cannot count is reported (elementwise ops by convention)
    assert "aten::linalg_vector_norm" in full.uncounted_ops
