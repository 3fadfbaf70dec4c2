"""Exit heads trained under PAUMER's randomised pausing (PAUMER, §2.2): what the draws are, and
that heads before every pause layer train exactly as without pausing while later ones see
paused states."""

from __future__ import annotations

import torch

from exitsearch._io import load_safetensors
from exitsearch.core.pause import PauseConfig
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.pausing import AuxDecoder, PausingViT, RandomPausing
from exitsearch.training import HeadTrainConfig, train_heads
from exitsearch.training.head_training import WEIGHTS

SPECS = [HeadSpec("linear", 2), HeadSpec("mlp", 3), HeadSpec("linear", 5), HeadSpec("mlp", 6)]
TRAINING = HeadTrainConfig(epochs=1, batch_size=32, lr=3e-3)


def _vit(make_pause_tiny) -> PausingViT:
    bb = make_pause_tiny(seed=0)
    torch.manual_seed(3)
    return PausingViT(bb, AuxDecoder(bb.embed_dim, bb.num_classes))


def test_draws_follow_paumer(make_pause_tiny) -> None:
    sampler = RandomPausing(_vit(make_pause_tiny), layers=(3, 4), tau_low=0.2, tau_high=0.6)
    gen = torch.Generator().manual_seed(0)
    draws = [sampler.draw(gen) for _ in range(400)]
    layers = [next(iter(d.fractions)) for d in draws]
    taus = [next(iter(d.fractions.values())) for d in draws]
    # one layer per batch, uniformly from the layers; tau uniform in its range
    assert set(layers) == {3, 4} and 150 < layers.count(3) < 250
    assert all(0.2 <= t <= 0.6 for t in taus) and min(taus) < 0.25 and max(taus) > 0.55
    # the same seed draws the same
    again = torch.Generator().manual_seed(0)
    assert [sampler.draw(again) for _ in range(400)] == draws


def test_rejects_bad_ranges(make_pause_tiny) -> None:
    vit = _vit(make_pause_tiny)
    for layers, lo, hi, what in (
        ((), 0.2, 0.4, "pause layers"),
        ((6,), 0.2, 0.4, "pause layers"),  # after the last block pausing is moot
        ((3,), 0.5, 0.4, "tau_low <= tau_high"),
        ((3,), 0.2, 1.0, "tau_high < 1"),
    ):
        try:
            RandomPausing(vit, layers, lo, hi)
        except ConfigError as exc:
            assert what in str(exc)
        else:
            raise AssertionError(f"accepted {layers}, {lo}, {hi}")


def test_states_are_the_assembled_paused_states(make_pause_tiny, images) -> None:
    vit = _vit(make_pause_tiny)
    sampler = RandomPausing(vit, layers=(3,), tau_low=0.5, tau_high=0.5)
    states = sampler.states(images, [2, 5], torch.Generator().manual_seed(0))
    plain = vit.backbone.hidden_states(images)
    torch.testing.assert_close(states[2], plain[1])  # before the pause layer: untouched
    want = vit.forward_states(images, PauseConfig({3: 0.5}), [5]).states[5]
    torch.testing.assert_close(states[5], want)
    assert not torch.allclose(states[5], plain[4])


def test_heads_before_the_pause_layers_train_as_without_pausing(
    make_pause_tiny, pause_splits, tmp_path
) -> None:
    vit = _vit(make_pause_tiny)
    sampler = RandomPausing(vit, layers=(3, 4), tau_low=0.2, tau_high=0.6)
    plain = train_heads(vit.backbone, pause_splits, SPECS, TRAINING, tmp_path / "plain")
    paused = train_heads(
        vit.backbone, pause_splits, SPECS, TRAINING, tmp_path / "paused", states_from=sampler
    )
    a = load_safetensors(tmp_path / "plain" / WEIGHTS)
    b = load_safetensors(tmp_path / "paused" / WEIGHTS)
    for i, spec in enumerate(SPECS):
        keys = [k for k in a if k.startswith(f"heads.{i}.")]
        same = all(torch.equal(a[k], b[k]) for k in keys)
        # exits after blocks 2 and 3 read states no pause layer (3, 4) has touched yet
        assert same is (spec.location <= 3), spec.key
    assert [s.key for s in paused.bank.specs] == [s.key for s in plain.bank.specs]
