"""The pausing forward: exactness without pausing, token counts, which tokens pause, assembly."""

from __future__ import annotations

import math

import pytest
import torch
from torch import nn

from exitsearch.errors import ConfigError
from exitsearch.pausing import (
    AuxDecoder,
    PauseConfig,
    PausedTokens,
    PausingViT,
    assemble,
    token_entropy,
)

N = 49  # patch tokens of the tiny backbone


def _vit(bb, classes: int = 10) -> PausingViT:
    torch.manual_seed(1)
    return PausingViT(bb, AuxDecoder(bb.embed_dim, classes)).eval()


class _RankLogits(nn.Module):
    """A hand-made auxiliary decoder: token i of the ORIGINAL grid gets logits (a_i, 0, 0), so
    its entropy falls as a_i grows. It reads the token's identity from feature 0, which the
    test writes as the patch index."""

    def __init__(self, strength: torch.Tensor) -> None:
        super().__init__()
        self.strength = strength

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        ident = tokens[..., 0].round().long()
        a = self.strength[ident]
        return torch.stack([a, torch.zeros_like(a), torch.zeros_like(a)], dim=-1)


class _IdentityBlock(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


@torch.no_grad()
def test_empty_configuration_is_the_plain_backbone_exactly(make_pause_tiny, images):
    bb = make_pause_tiny().eval()
    vit = _vit(bb)
    plain = bb.hidden_states(images)
    for pause in (None, PauseConfig(), {}, ""):
        out = vit.forward_states(images, pause, locations=range(1, 7))
        assert not out.paused and not out.aux_logits
        for m in range(1, 7):
            assert torch.equal(out.states[m], plain[m - 1])
        assert torch.equal(out.final, plain[-1])
        assert torch.equal(bb.final_head(out.final), bb(images))


@torch.no_grad()
def test_token_counts_match_what_each_block_receives(make_pause_tiny, images):
    bb = make_pause_tiny().eval()
    vit = _vit(bb)
    pause = PauseConfig({2: 0.2, 4: 0.3})  # 10, then 15 of the 49 patch tokens
    assert vit.token_counts(pause) == [50, 50, 40, 40, 25, 25]
    seen: list[int] = []
    hooks = [
        blk.register_forward_pre_hook(lambda m, a: seen.append(a[0].shape[1]))
        for blk in bb.model.blocks
    ]
    try:
        out = vit.forward_states(images, pause)
    finally:
        for h in hooks:
            h.remove()
    assert seen == vit.token_counts(pause)
    assert [(p.layer, p.index.shape[1]) for p in out.paused] == [(2, 10), (4, 15)]
    assert vit.token_counts({}) == [50] * 6


@torch.no_grad()
def test_the_lowest_entropy_tokens_pause_first(make_pause_tiny):
    bb = make_pause_tiny().eval()
    # identity blocks and a hand-made decoder make the entropies known in advance
    bb.model.blocks = nn.Sequential(*(_IdentityBlock() for _ in range(6)))
    # a permutation of 0..48, scaled so that float32 entropies stay distinct
    strength = torch.tensor([float((5 * i) % N) for i in range(N)]) / 10
    vit = PausingViT(bb, _RankLogits(strength))  # type: ignore[arg-type]
    tokens = torch.zeros(2, 1 + N, bb.embed_dim)
    tokens[:, 1:, 0] = torch.arange(N, dtype=torch.float32)  # feature 0 = patch index
    bb.embed = lambda x: tokens.clone()  # type: ignore[method-assign]
    out = vit.forward_states(torch.zeros(2, 1, 28, 28), PauseConfig({2: 0.2, 4: 0.1}))
    first, second = out.paused
    # the strongest logits have the lowest entropy: ranks 48..39 pause after block 2,
    # then the next round(0.1 * 49) = 5 strongest of the rest, 38..34, after block 4
    order = torch.argsort(strength, descending=True)
    assert sorted(first.index[0].tolist()) == sorted(order[:10].tolist())
    assert sorted(second.index[0].tolist()) == sorted(order[10:15].tolist())
    assert torch.equal(first.index[0], first.index[1])
    ent = token_entropy(torch.stack([strength, 0 * strength, 0 * strength], -1))
    assert ent[first.index[0]].max() <= ent[second.index[0]].min()
    # the aux logits at block 4 were computed on the 39 tokens left, with their identities
    assert out.aux_index[4].shape == (2, 39)
    assert not set(out.aux_index[4][0].tolist()) & set(first.index[0].tolist())


@torch.no_grad()
def test_ties_go_to_the_earlier_token(make_pause_tiny):
    bb = make_pause_tiny().eval()
    bb.model.blocks = nn.Sequential(*(_IdentityBlock() for _ in range(6)))
    vit = PausingViT(bb, _RankLogits(torch.ones(N)))  # type: ignore[arg-type]
    tokens = torch.zeros(1, 1 + N, bb.embed_dim)
    tokens[:, 1:, 0] = torch.arange(N, dtype=torch.float32)
    bb.embed = lambda x: tokens.clone()  # type: ignore[method-assign]
    out = vit.forward_states(torch.zeros(1, 1, 28, 28), {3: 0.2})
    assert out.paused[0].index[0].tolist() == list(range(10))


@torch.no_grad()
def test_entropy_pausing_matches_the_entropies_of_the_real_states(make_pause_tiny, images):
    bb = make_pause_tiny().eval()
    vit = _vit(bb)
    out = vit.forward_states(images, {3: 0.3}, locations=[3])
    ent = token_entropy(vit.aux(bb.hidden_states(images, upto=3)[-1][:, 1:]))
    k = round(0.3 * N)
    for b in range(images.shape[0]):
        paused = set(out.paused[0].index[b].tolist())
        assert len(paused) == k
        kept = [i for i in range(N) if i not in paused]
        assert ent[b, sorted(paused)].max() <= ent[b, kept].min()


@torch.no_grad()
def test_prefix_tokens_are_never_paused(make_pause_tiny, images):
    bb = make_pause_tiny(model="deit_tiny_distilled_patch16_224").eval()
    assert bb.num_prefix_tokens == 2
    vit = _vit(bb)
    seen: list[torch.Tensor] = []
    hooks = [
        blk.register_forward_pre_hook(lambda m, a: seen.append(a[0])) for blk in bb.model.blocks
    ]
    try:
        out = vit.forward_states(images, {1: 0.4, 3: 0.4}, mode="random")
    finally:
        for h in hooks:
            h.remove()
    embedded = bb.embed(images)
    first = bb.model.blocks[0](embedded)
    # block 2 receives both prefix tokens of block 1's output, untouched, in front
    assert torch.equal(seen[1][:, :2], first[:, :2])
    for p in out.paused:
        assert p.index.min() >= 0 and p.index.max() < N
    assert out.final.shape == (3, 2 + N, bb.embed_dim)


@torch.no_grad()
def test_assembler_restores_every_token_to_its_index(make_pause_tiny, images):
    bb = make_pause_tiny().eval()
    vit = _vit(bb)
    out = vit.forward_states(images, {2: 0.2, 4: 0.4}, locations=[2, 4, 5])
    p = bb.num_prefix_tokens
    paused_at = {}
    for chunk in out.paused:
        for b in range(images.shape[0]):
            for j, i in enumerate(chunk.index[b].tolist()):
                paused_at[(b, i)] = (chunk.layer, chunk.tokens[b, j])
    assert len(paused_at) == images.shape[0] * (10 + 20)
    for b in range(images.shape[0]):
        for i in range(N):
            if (b, i) in paused_at:
                layer, value = paused_at[(b, i)]
                # a paused token keeps the value it had when paused, at its own index ...
                assert torch.equal(out.final[b, p + i], value)
                assert torch.equal(out.states[layer][b, p + i], value)
                # ... in every later assembled state too
                assert torch.equal(out.states[5][b, p + i], value)
    # tokens still processed after block 5 moved on
    running = [i for i in range(N) if (0, i) not in paused_at]
    assert not torch.equal(out.final[0, p + running[0]], out.states[5][0, p + running[0]])


def test_assemble_is_a_scatter_back_and_passes_gradients():
    b, d, n = 2, 3, 6
    full = torch.arange(b * (1 + n) * d, dtype=torch.float32).view(b, 1 + n, d)
    full.requires_grad_(True)
    paused_idx = torch.tensor([[4, 1], [0, 5]])
    active_idx = torch.tensor([[0, 2, 3, 5], [1, 2, 3, 4]])
    take = lambda idx: full[:, 1:].gather(1, idx.unsqueeze(-1).expand(-1, -1, d))  # noqa: E731
    active = torch.cat([full[:, :1], take(active_idx)], dim=1)
    out = assemble(active, active_idx, [PausedTokens(3, paused_idx, take(paused_idx))], 1)
    assert torch.equal(out, full)
    out.sum().backward()
    assert torch.equal(full.grad, torch.ones_like(full))


def test_random_mode_pauses_other_tokens_per_seed_but_as_many(make_pause_tiny, images):
    bb = make_pause_tiny().eval()
    vit = _vit(bb)

    def paused(seed: int) -> list[list[int]]:
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            out = vit.forward_states(images, {3: 0.4}, mode="random", generator=gen)
        return [sorted(r) for r in out.paused[0].index.tolist()]

    a, b, again = paused(0), paused(1), paused(0)
    assert a == again
    assert a != b
    assert all(len(r) == round(0.4 * N) for r in a + b)
    # random mode does not need the auxiliary decoder at inference
    with torch.no_grad():
        out = vit.forward_states(images, {3: 0.4}, mode="random")
    assert not out.aux_logits


def test_bad_requests_are_config_errors(make_pause_tiny, images):
    vit = _vit(make_pause_tiny())
    with pytest.raises(ConfigError, match=r"outside 1\.\.5"):
        vit.forward_states(images, {6: 0.2})
    with pytest.raises(ConfigError, match="locations"):
        vit.forward_states(images, {}, locations=[7])
    with pytest.raises(ConfigError, match="unknown pause mode"):
        vit.forward_states(images, {2: 0.2}, mode="gumbel")


def test_entropy_is_eq4_in_nats():
    logits = torch.tensor([[0.0, 0.0, 0.0, 0.0], [100.0, 0.0, 0.0, 0.0]])
    assert token_entropy(logits).tolist() == pytest.approx([math.log(4), 0.0], abs=1e-6)
