"""Backbone: hidden states per block that agree with timm's own forward."""

from __future__ import annotations

import pytest
import torch

from exitsearch.backbone import Backbone, create_backbone


def _check_states_and_head(bb: Backbone, batch: int = 3) -> list[torch.Tensor]:
    torch.manual_seed(1)
    x = torch.randn(batch, bb.in_chans, *bb.img_size)
    with torch.no_grad():
        states = bb.hidden_states(x)
        tokens = bb.embed(x)
        assert tokens.shape == (batch, bb.num_tokens, bb.embed_dim)
        for m, state in enumerate(states, start=1):
            assert state.shape == (batch, bb.num_tokens, bb.embed_dim)
            assert torch.equal(state, bb.run_blocks(tokens, 0, m))
        # continuing from the state after block m gives the later states
        for m in range(len(states)):
            start = tokens if m == 0 else states[m - 1]
            assert torch.equal(bb.run_blocks(start, m, bb.depth), states[-1])
        logits = bb.final_head(states[-1])
        assert torch.allclose(logits, bb.model(x), atol=1e-6, rtol=1e-5)
        assert torch.allclose(bb(x), bb.model(x), atol=1e-6, rtol=1e-5)
    assert len(states) == bb.depth
    assert logits.shape == (batch, bb.num_classes)
    return states


def test_hidden_states_match_timm(make_tiny):
    bb = make_tiny()
    states = _check_states_and_head(bb)
    x = torch.randn(2, bb.in_chans, *bb.img_size)
    with torch.no_grad():
        assert len(bb.hidden_states(x, upto=1)) == 1
    assert not torch.equal(states[0], states[1])


def test_distilled_deit_end_to_end():
    bb = create_backbone("deit_tiny_distilled_patch16_224", img_size=64, depth=2)
    assert bb.num_prefix_tokens == 2 and bb.has_class_token
    assert bb.num_tokens == bb.num_patches + 2
    _check_states_and_head(bb, batch=2)


def test_no_class_token_average_pool_end_to_end():
    bb = create_backbone(
        "vit_tiny_patch16_224",
        img_size=32,
        patch_size=8,
        depth=2,
        class_token=False,
        global_pool="avg",
    )
    assert bb.num_prefix_tokens == 0 and not bb.has_class_token
    assert bb.num_tokens == bb.num_patches == 16
    _check_states_and_head(bb, batch=2)
    assert bb.describe()["global_pool"] == "avg"


def test_register_tokens_are_prefix_tokens():
    bb = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, reg_tokens=4)
    assert bb.num_prefix_tokens == 5
    _check_states_and_head(bb, batch=1)


@pytest.mark.parametrize(("start", "stop"), [(-1, 1), (1, 0), (0, 3)])
def test_run_blocks_checks_its_range(make_tiny, start, stop):
    bb = make_tiny()
    with pytest.raises(IndexError, match="start <= stop"):
        bb.run_blocks(torch.zeros(1, bb.num_tokens, bb.embed_dim), start, stop)


def test_run_blocks_empty_range_is_identity(make_tiny):
    bb = make_tiny()
    t = torch.randn(1, bb.num_tokens, bb.embed_dim)
    assert bb.run_blocks(t, 1, 1) is t


def test_weights_checksum_tracks_every_weight(make_tiny):
    a, b = make_tiny(seed=0), make_tiny(seed=0)
    assert a.weights_checksum() == b.weights_checksum()
    assert len(a.weights_checksum()) == 64
    with torch.no_grad():
        b.model.blocks[-1].mlp.fc2.bias[0] += 1e-3
    assert a.weights_checksum() != b.weights_checksum()
    assert make_tiny(seed=1).weights_checksum() != a.weights_checksum()


def test_input_transform_fits_the_backbone(make_tiny, fmnist):
    bb = make_tiny()
    t = bb.input_transform()
    assert t.img_size == bb.img_size and t.in_chans == bb.in_chans
    assert len(t.mean) >= bb.in_chans
    x = torch.from_numpy(fmnist[0].x[:4].copy())
    with torch.no_grad():
        assert bb(t(x)).shape == (4, bb.num_classes)


def test_input_transform_for_more_channels_than_the_config():
    bb = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=1, in_chans=4)
    t = bb.input_transform()
    assert len(t.mean) == len(t.std) == 4
    out = t(torch.zeros(2, 1, 20, 20, dtype=torch.uint8))
    assert out.shape == (2, 4, 32, 32)


def test_describe(make_tiny, tiny_overrides):
    d = make_tiny().describe()
    assert d["depth"] == tiny_overrides["depth"] and d["embed_dim"] == tiny_overrides["embed_dim"]
    assert d["num_prefix_tokens"] == 1 and d["class_token"] is True
    assert d["img_size"] == [tiny_overrides["img_size"]] * 2
