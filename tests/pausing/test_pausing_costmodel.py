"""The search's cost model under pause configurations: blocks on the tokens they process."""

from __future__ import annotations

import numpy as np
import pytest

from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, HeadSpec, profile_heads
from exitsearch.pausing import build_paumer, pause_cost
from exitsearch.pausing.costs import paused_block_flops, with_pauses
from exitsearch.profile import profile_backbone

SPECS = (HeadSpec("linear", 2), HeadSpec("mlp", 3), HeadSpec("linear", 5))


@pytest.fixture
def setup(make_pause_tiny):  # type: ignore[no-untyped-def]
    bb = make_pause_tiny()
    model = build_paumer(bb, "classification")
    heads = profile_heads(SPECS, HeadContext.from_backbone(bb))
    costs = CostModel(profile_backbone(bb), {k: c.flops for k, c in heads.items()})
    return model, costs


def config(pause, cut=False):  # type: ignore[no-untyped-def]
    return ExitConfig(SPECS, "confidence", (0.5, 0.5, 0.5), cut=cut, pause=pause)


def test_exit_config_checks_pause_by_the_pause_config_rules():
    assert config({"3": 0.2, 1: 0.1}).pause == {1: 0.1, 3: 0.2}
    assert config({3: 1 / 3}).pause == {3: 0.333333}  # 6 decimals, as PauseConfig keeps
    for bad, message in (
        ({0: 0.2}, "layer >= 1"),
        ({3: 1.2}, "0 < fraction < 1"),
        ({3: 0.6, 5: 0.5}, "sum to less than 1"),
        ({3: "x"}, "maps layers to fractions"),
    ):
        with pytest.raises(ConfigError, match=message):
            config(bad)
    assert config({}).pause == {}


def test_exit_costs_count_paused_blocks_and_decoders(setup):  # type: ignore[no-untyped-def]
    model, costs = setup
    pause = {1: 0.2, 3: 0.4}
    costs = with_pauses(costs, model, [pause])
    pc = pause_cost(model, pause)
    heads = np.cumsum([costs.head_flops[s.key] for s in SPECS])
    got = costs.exit_flops(config(pause))
    # an exit after block m pays the stem, blocks 1..m on their own token counts, the decoders
    # of the pause layers before m (the one at m runs after the exit decided), and its heads
    for k, m in enumerate((2, 3, 5)):
        aux = sum(v for layer, v in pc.aux.items() if layer < m)
        assert got[k] == pc.stem + sum(pc.blocks[:m]) + aux + heads[k]
    assert got[-1] == pc.total + heads[-1]
    # cut: no final exit; random pausing runs no decoder
    assert np.array_equal(costs.exit_flops(config(pause, cut=True)), got[:-1])
    rnd = with_pauses(CostModel(costs.profile, costs.head_flops), model, [pause], "random")
    assert rnd.exit_flops(config(pause))[-1] == pc.total - sum(pc.aux.values()) + heads[-1]


def test_the_plain_path_is_unchanged_and_no_pausing_is_the_profile(setup):  # type: ignore[no-untyped-def]
    model, costs = setup
    before = costs.exit_flops(config({}))
    more = with_pauses(costs, model, [{}, {3: 0.4}])
    assert list(more.pause_blocks) == ["3:0.4"]
    np.testing.assert_array_equal(more.exit_flops(config({})), before)
    # the blocks fvcore counts alone on 50 tokens are those of the whole-model trace
    assert paused_block_flops(model, {}) == tuple(float(b.flops) for b in costs.profile.blocks)


def test_under_pause_gives_the_paused_costs_to_unpaused_configurations(setup):  # type: ignore[no-untyped-def]
    model, costs = setup
    pause = {2: 0.3, 4: 0.3}
    costs = with_pauses(costs, model, [pause])
    inner = costs.under_pause(pause)
    np.testing.assert_array_equal(inner.exit_flops(config({})), costs.exit_flops(config(pause)))
    assert inner.backbone_flops == costs.backbone_flops  # speed-ups keep their reference
    assert inner.profile.cumulative(5) == costs.exit_flops(config(pause))[-2] - sum(
        costs.head_flops[s.key] for s in SPECS
    )
    assert costs.under_pause({}) is costs


def test_unknown_or_misfitting_pause_configurations_are_errors(setup):  # type: ignore[no-untyped-def]
    model, costs = setup
    with pytest.raises(ConfigError, match=r"no block costs known for pause configuration 3:0\.4"):
        costs.exit_flops(config({3: 0.4}))
    with pytest.raises(ConfigError, match=r"outside 1\.\.5"):
        with_pauses(costs, model, [{6: 0.2}])
    assert costs.exit_ms(config({3: 0.4})) is None
