"""Exit costs and cached evaluation against hand sums and a per-sample brute force."""

from __future__ import annotations

import numpy as np
import pytest
from search_brute import CUMULATIVE, brute_evaluate, brute_exit_index, cumulative

from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec

ALL = ("linear@1+u", "mlp@2", "linear@2+u", "linear@3+u", "mlp@4", "linear@5+u")
CONTINUOUS = ("confidence", "entropy", "uncertainty")
CRITERIA = ("confidence", "entropy", "patience", "uncertainty")


def _config(world, keys, criterion="confidence", thresholds=None, cut=False) -> ExitConfig:
    exits = tuple(world.spec(k) for k in keys)
    thresholds = thresholds if thresholds is not None else (0.5,) * len(exits)
    return ExitConfig(exits, criterion, tuple(thresholds), "per_exit", cut)


# ------------------------------------------------------------------------------ costs
@pytest.mark.parametrize(
    ("keys", "cut", "expected"),
    [
        # linear@2: 220 + 3; mlp@4: 470 + 3 + 7; final: 760 + 5 + 3 + 7
        (("linear@2+u", "mlp@4"), False, [223, 480, 775]),
        # linear@1: 110 + 3; linear@3: 340 + 6; linear@5: 610 + 9; final: 760 + 5 + 9
        (("linear@1+u", "linear@3+u", "linear@5+u"), False, [113, 346, 619, 774]),
        (("linear@1+u", "linear@3+u", "linear@5+u"), True, [113, 346, 619]),
        # mlp@4 alone, cut: 470 + 7
        (("mlp@4",), True, [477]),
        # mlp@2: 220 + 7; mlp@4: 470 + 7 + 7; final: 760 + 5 + 14
        (("mlp@2", "mlp@4"), False, [227, 484, 779]),
        # no early exit: the backbone alone, 765
        ((), False, [765]),
    ],
)
def test_exit_flops_hand_sums(world, keys, cut, expected):
    config = _config(world, keys, cut=cut)
    got = world.costs.exit_flops(config)
    assert got.tolist() == expected


def test_exit_flops_unknown_head_and_pause_are_config_errors(world):
    stranger = HeadSpec("vit", 3)
    with pytest.raises(ConfigError, match=r"vit@3"):
        world.costs.exit_flops(ExitConfig((stranger,), "confidence", (0.5,)))
    paused = ExitConfig((world.spec("mlp@4"),), "confidence", (0.5,), pause={2: 0.5})
    with pytest.raises(ConfigError, match="pause"):
        world.costs.exit_flops(paused)


def test_cheapest_exit_and_cumulative_agree_with_hand_sums(world):
    # linear@1: 110 + 3 = 113 is the cheapest of linear@1 (113), mlp@2 (227), linear@3 (343)
    assert world.costs.cheapest_exit_flops(["mlp@2", "linear@1+u", "linear@3+u"], [2, 1, 3]) == 113
    assert world.costs.cheapest_exit_flops([], []) == 765
    assert world.costs.backbone_flops == 765


# --------------------------------------------------------------------------- evaluator
def _threshold_sets(world, config_keys, criterion, seed):
    """Random thresholds, thresholds equal to cached values (ties), and both extremes."""
    rng = np.random.default_rng(seed)
    sp = world.preds.splits["val"]
    e = len(config_keys)
    rows = [world.preds.row(k) for k in config_keys]
    if criterion == "patience":
        return [tuple(float(x) for x in rng.integers(0, 4, e)) for _ in range(3)] + [
            (0.0,) * e,
            (1.0,) * e,
            (9.0,) * e,
        ]
    values = {"confidence": sp.confidence, "entropy": sp.entropy, "uncertainty": sp.uncertainty}[
        criterion
    ]
    lo, hi = (0.3, 1.0) if criterion == "confidence" else (0.0, 1.0)
    sets = [tuple(float(x) for x in rng.uniform(lo, hi, e)) for _ in range(3)]
    # exactly on cached values: >= and <= must include the sample sitting on the threshold
    sets.append(tuple(float(values[r, int(rng.integers(0, sp.num_samples))]) for r in rows))
    shared = float(np.median(values[rows[0]]))
    sets.append((shared,) * e)
    sets += [(-1.0,) * e, (2.0,) * e]
    return sets


CASES = [
    (criterion, keys, cut)
    for criterion in CRITERIA
    for keys in (
        ("linear@1+u", "mlp@2", "linear@3+u", "mlp@4", "linear@5+u"),
        ("mlp@2", "linear@5+u"),
        ("linear@3+u",),
        ("linear@1+u", "linear@2+u", "linear@4+u"),
    )
    for cut in (False, True)
    if criterion != "uncertainty" or all(k.startswith("linear") for k in keys)
]


@pytest.mark.parametrize(("criterion", "keys", "cut"), CASES)
def test_exit_index_and_evaluate_match_brute_force(world, criterion, keys, cut):
    ev = world.ev("val")
    seed = CASES.index((criterion, keys, cut))
    for thresholds in _threshold_sets(world, keys, criterion, seed):
        config = _config(world, keys, criterion, thresholds, cut)
        expected_idx = brute_exit_index(world.preds, "val", config)
        assert ev.exit_index(config).tolist() == expected_idx, thresholds

        got = ev.evaluate(config)
        want = brute_evaluate(world.preds, "val", config, world.head_flops)
        assert got.accuracy == pytest.approx(want.accuracy, abs=1e-15)
        assert got.mean_flops == pytest.approx(want.mean, rel=1e-12)
        assert got.p95_flops == pytest.approx(want.p95, rel=1e-12)
        assert got.max_flops == want.max
        assert got.exit_counts == want.counts
        assert got.speedup == pytest.approx(want.speedup, rel=1e-12)
        assert got.mean_ms is None

        acc, mean, mx = ev.quick(config)
        assert (acc, mean, mx) == pytest.approx(
            (got.accuracy, got.mean_flops, got.max_flops), rel=1e-12
        )


def test_thresholds_decide_something(world):
    """The cases above are not vacuous: the chosen thresholds send samples to several exits."""
    ev = world.ev("val")
    keys = ("linear@1+u", "mlp@2", "linear@3+u", "mlp@4", "linear@5+u")
    for criterion in ("confidence", "entropy", "patience"):
        used = set()
        for thresholds in _threshold_sets(world, keys, criterion, seed=3):
            used |= set(ev.exit_index(_config(world, keys, criterion, thresholds)).tolist())
        assert len(used) >= 4, (criterion, used)


def test_evaluate_on_test_split_matches_brute_force(world):
    ev = world.ev("test")
    config = _config(world, ("mlp@2", "linear@3+u", "mlp@4"), "entropy", (0.4, 0.6, 0.8))
    got = ev.evaluate(config)
    want = brute_evaluate(world.preds, "test", config, world.head_flops)
    assert ev.n == 160
    assert got.exit_counts == want.counts
    assert got.accuracy == pytest.approx(want.accuracy, abs=1e-15)
    assert got.mean_flops == pytest.approx(want.mean, rel=1e-12)


def test_no_early_exit_is_the_backbone(world):
    ev = world.ev("val")
    sp = world.preds.splits["val"]
    got = ev.evaluate(ExitConfig((), "confidence", ()))
    backbone = ev.backbone()
    final_acc = float(np.mean(sp.pred[-1] == sp.labels))
    assert got.accuracy == backbone.accuracy == pytest.approx(final_acc, abs=1e-15)
    assert got.mean_flops == got.max_flops == backbone.mean_flops == 765
    assert got.exit_counts == backbone.exit_counts == (sp.num_samples,)
    assert got.speedup == backbone.speedup == 1.0


@pytest.mark.parametrize("keys", [("mlp@2",), ("linear@1+u", "mlp@4"), ("mlp@2", "mlp@4")])
def test_uncertainty_without_predictor_is_a_config_error(world, keys):
    ev = world.ev("val")
    config = _config(world, keys, "uncertainty", (0.5,) * len(keys))
    for method in (ev.exit_index, ev.evaluate, ev.quick):
        with pytest.raises(ConfigError, match="uncertainty"):
            method(config)


def test_latency_free_cost_model_reports_no_milliseconds(world):
    costs = CostModel(world.profile, world.head_flops)
    assert not costs.has_latency
    assert costs.exit_ms(_config(world, ("mlp@2",))) is None


def test_toy_profile_is_the_hand_table(world, deep_world):
    for m, flops in CUMULATIVE.items():
        assert world.profile.cumulative(m) == cumulative(m) == flops
    assert world.profile.total_flops == 765
    # 20 blocks: 10 + 100 * 20 + 10 * 190 = 3910, plus the final head's 5
    assert deep_world.profile.cumulative(20) == cumulative(20) == 3910
    assert deep_world.profile.total_flops == 3915


# Exit counts around the evaluator's internal limits: 8 exits per uint8 code, 16 per uint16 code,
# more than that take another path. Non-cut configurations have one more (final) outcome.
DEEP_CASES = [
    (criterion, e, cut)
    for criterion in ("confidence", "entropy", "patience")
    for e in (7, 8, 9, 15, 16, 17, 19)
    for cut in (False, True)
]


@pytest.mark.parametrize(("criterion", "e", "cut"), DEEP_CASES)
def test_many_exits_match_brute_force(deep_world, criterion, e, cut):
    ev = deep_world.ev("val")
    locations = np.linspace(1, 19, e).round().astype(int)
    keys = [f"linear@{m}+u" for m in locations]
    assert len(set(keys)) == e
    rng = np.random.default_rng(DEEP_CASES.index((criterion, e, cut)))
    if criterion == "patience":
        thresholds = [float(x) for x in rng.integers(1, 6, e)]
    elif criterion == "confidence":
        thresholds = [float(x) for x in rng.uniform(0.6, 1.0, e)]
    else:
        thresholds = [float(x) for x in rng.uniform(0.0, 0.4, e)]
    config = _config(deep_world, keys, criterion, thresholds, cut)
    expected_idx = brute_exit_index(deep_world.preds, "val", config)
    assert ev.exit_index(config).tolist() == expected_idx
    assert len(set(expected_idx)) >= 3  # several exits in use: the test decides something
    got = ev.evaluate(config)
    want = brute_evaluate(deep_world.preds, "val", config, deep_world.head_flops, depth=20)
    assert got.exit_counts == want.counts
    assert got.accuracy == pytest.approx(want.accuracy, abs=1e-15)
    assert got.mean_flops == pytest.approx(want.mean, rel=1e-12)
    assert got.p95_flops == pytest.approx(want.p95, rel=1e-12)
    assert got.max_flops == want.max
    assert got.speedup == pytest.approx(want.speedup, rel=1e-12)
    assert ev.quick(config) == pytest.approx((want.accuracy, want.mean, want.max), rel=1e-12)
