"""Exact threshold refinement against a brute-force sweep over every threshold that matters."""

from __future__ import annotations

import numpy as np
import pytest
from search_brute import BACKBONE, brute_evaluate

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.search.refine import (
    per_exit_generalises,
    refine_per_exit,
    refine_placement,
    shared_curve,
)

LAMBDAS = np.array([0.0, 0.003, 0.03, 0.1, 0.3, 1.0, 3.0])

PLACEMENTS = [
    ("linear@1+u", "mlp@2", "linear@3+u", "mlp@4", "linear@5+u"),
    ("mlp@2", "linear@5+u"),
    ("linear@1+u", "linear@3+u", "linear@4+u"),
    ("linear@3+u",),
]
CASES = [
    (criterion, keys, cut)
    for criterion in ("confidence", "entropy", "patience", "uncertainty")
    for keys in PLACEMENTS
    for cut in (False, True)
    if criterion != "uncertainty" or all(k.startswith("linear") for k in keys)
]


def _config(world, keys, criterion, cut) -> ExitConfig:
    exits = tuple(world.spec(k) for k in keys)
    return ExitConfig(exits, criterion, (0.0,) * len(exits), "shared", cut)


def _user_values(world, config, deciding: bool = False) -> np.ndarray:
    """Every cached value of the criterion at the configuration's early exits, in user units
    (with ``deciding``, without a cut model's last exit, which always fires)."""
    sp = world.preds.splits["val"]
    rows = [world.preds.row(s.key) for s in config.exits]
    if deciding and config.cut:
        rows = rows[:-1]
    if config.criterion == "patience":
        return np.arange(0, len(rows) + 1, dtype=np.float64)
    table = {"confidence": sp.confidence, "entropy": sp.entropy, "uncertainty": sp.uncertainty}
    return np.unique(table[config.criterion][rows].astype(np.float64))


def _never(criterion: str, values: np.ndarray) -> float:
    """A shared threshold that no sample meets."""
    return {
        "confidence": 2.0,
        "entropy": -1.0,
        "uncertainty": -1.0,
        "patience": float(values.max() + 1),
    }[criterion]


def _key(acc: float, mean: float) -> tuple[float, float]:
    return round(acc, 12), round(mean, 9)


@pytest.mark.parametrize(("criterion", "keys", "cut"), CASES)
def test_shared_curve_is_exactly_the_brute_force_sweep(world, criterion, keys, cut):
    ev = world.ev("val")
    config = _config(world, keys, criterion, cut)
    values = _user_values(world, config)
    brute = set()
    for t in [*values.tolist(), _never(criterion, values)]:
        b = brute_evaluate(
            world.preds, "val", config.with_thresholds([t] * len(keys)), world.head_flops
        )
        brute.add(_key(b.accuracy, b.mean))
    curve = shared_curve(ev, config)
    assert {_key(p.accuracy, p.mean_cost) for p in curve} == brute
    # every point reproduces itself and is one shared threshold
    for p in curve:
        assert p.config.threshold_mode == "shared"
        assert len(set(p.config.thresholds)) == 1
        assert p.config.placement_key == config.placement_key
        acc, mean, _ = ev.quick(p.config)
        assert (acc, mean) == pytest.approx((p.accuracy, p.mean_cost), rel=1e-12, abs=1e-12)


def _record_bounds(world, config) -> np.ndarray:
    """Readiness values at which some sample's exit changes: where its running maximum over
    the deciding exits rises (brute force, one sample at a time), ascending."""
    crit = create_criterion(config.criterion)
    sp = world.preds.splits["val"]
    table = {"confidence": sp.confidence, "entropy": sp.entropy, "uncertainty": sp.uncertainty}
    rows = [world.preds.row(s.key) for s in config.exits]
    deciding = rows[:-1] if config.cut else rows
    records = set()
    for j in range(sp.num_samples):
        best = -np.inf
        for r in deciding:
            v = crit.bound(float(table[config.criterion][r, j]))
            if v > best:
                records.add(v)
                best = v
    return np.array(sorted(records))


@pytest.mark.parametrize(
    ("criterion", "keys", "cut"),
    [c for c in CASES if c[0] != "patience" and (len(c[1]) > 1 or not c[2])],
    ids=str,
)
def test_shared_thresholds_lie_between_cached_values(world, criterion, keys, cut):
    """Midpoints, never on a value: a runtime whose last bits differ decides the same.

    (A cut model's last exit always fires, so its values decide nothing and are left out.)
    """
    ev = world.ev("val")
    config = _config(world, keys, criterion, cut)
    crit = create_criterion(criterion)
    values = set(_user_values(world, config, deciding=True).tolist())
    records = _record_bounds(world, config)
    for p in shared_curve(ev, config):
        t = p.config.thresholds[0]
        assert t not in values
        b = crit.bound(t)
        above, below = records[records > b], records[records < b]
        if len(above) and len(below):  # halfway between neighbouring decisive values
            assert b == pytest.approx((above[0] + below[-1]) / 2, rel=0, abs=1e-12)
        elif len(above):  # below every decisive value: half a unit under the lowest
            assert b == pytest.approx(records[0] - 0.5, rel=0, abs=1e-12)
        else:  # the "never" point, above every value
            assert b > records[-1]


def test_shared_curve_has_the_documented_end_points(world):
    ev = world.ev("val")
    config = _config(world, ("mlp@2", "mlp@4"), "confidence", False)
    curve = shared_curve(ev, config)
    # nobody leaves early: the final exit's accuracy at 760 + 5 + 14 FLOPs
    sp = world.preds.splits["val"]
    first = curve[0]
    assert first.mean_cost == 779
    assert first.accuracy == pytest.approx(float(np.mean(sp.pred[-1] == sp.labels)))
    # the lowest threshold: everybody leaves at mlp@2 (220 + 7)
    last = min(curve, key=lambda p: p.mean_cost)
    assert last.mean_cost == 227
    assert last.accuracy == pytest.approx(
        float(np.mean(sp.pred[world.preds.row("mlp@2")] == sp.labels))
    )


@pytest.mark.parametrize(
    ("criterion", "keys", "cut"),
    [c for c in CASES if len(c[1]) > 1 or not c[2]],
    ids=str,
)
def test_refine_per_exit_reproduces_and_beats_the_shared_curve(world, criterion, keys, cut):
    ev = world.ev("val")
    config = _config(world, keys, criterion, cut)
    shared = shared_curve(ev, config)
    refined = refine_per_exit(ev, config, lambdas=LAMBDAS)
    assert refined
    scale = float(BACKBONE)
    for p in refined:
        assert p.config.threshold_mode == "per_exit"
        assert p.config.placement_key == config.placement_key
        acc, mean, _ = ev.quick(p.config)
        assert (acc, mean) == pytest.approx((p.accuracy, p.mean_cost), rel=1e-12, abs=1e-12)
        b = brute_evaluate(world.preds, "val", p.config, world.head_flops)
        assert (b.accuracy, b.mean) == pytest.approx((p.accuracy, p.mean_cost), rel=1e-12)
    for lam in LAMBDAS:

        def score(p, lam=lam):
            return p.accuracy - lam * p.mean_cost / scale

        assert max(map(score, refined)) >= max(map(score, shared)) - 1e-12, lam
    if criterion != "patience":
        values = set(_user_values(world, config, deciding=True).tolist())
        early = len(keys) - 1 if cut else len(keys)
        for p in refined:
            assert not values & set(p.config.thresholds[:early])


def test_refine_per_exit_finds_better_than_shared_somewhere(world):
    """Per-exit thresholds are worth having: some trade-off beats every shared threshold."""
    ev = world.ev("val")
    config = _config(
        world, ("linear@1+u", "mlp@2", "linear@3+u", "mlp@4", "linear@5+u"), "confidence", False
    )
    shared = shared_curve(ev, config)
    refined = refine_per_exit(ev, config, lambdas=LAMBDAS)
    gains = [
        max(p.accuracy - lam * p.mean_cost / BACKBONE for p in refined)
        - max(p.accuracy - lam * p.mean_cost / BACKBONE for p in shared)
        for lam in LAMBDAS
    ]
    assert max(gains) > 1e-9


def test_refine_of_a_cut_single_exit_is_empty_and_placement_adds_the_curve(world):
    ev = world.ev("val")
    config = _config(world, ("mlp@4",), "confidence", True)
    assert refine_per_exit(ev, config) == []
    points = refine_placement(ev, config)
    # every sample leaves at the only exit: one outcome, 470 + 7 FLOPs
    assert {_key(p.accuracy, p.mean_cost) for p in points} == {
        _key(
            float(
                np.mean(
                    world.preds.splits["val"].pred[world.preds.row("mlp@4")]
                    == world.preds.splits["val"].labels
                )
            ),
            477.0,
        )
    }


# --------------------------------------------------------------- per-exit cross-fitting
def _rescaled(world, key: str, factor: float):
    """The world with one head's confidences shrunk: same ranking, another scale."""
    from exitsearch.search.evaluator import Evaluator
    from exitsearch.training.predict import Predictions, SplitPredictions

    row = world.preds.row(key)
    splits = {}
    for name, sp in world.preds.splits.items():
        conf = sp.confidence.copy()
        conf[row] *= factor
        splits[name] = SplitPredictions(sp.labels, conf, sp.entropy, sp.pred, sp.uncertainty)
    preds = Predictions(world.preds.heads, splits, world.preds.num_classes)
    return Evaluator(preds, "val", world.costs)


def test_per_exit_thresholds_are_kept_where_one_shared_threshold_cannot_serve(make_world):
    """Exit 1's confidences live on another scale than exit 3's: one shared threshold cannot
    suit both, per-exit thresholds can, and do on held-out samples too."""
    world = make_world(seed=3, n_val=2000)
    config = _config(world, ("linear@1+u", "linear@3+u", "linear@5+u"), "confidence", False)
    ev = _rescaled(world, "linear@3+u", 0.3)
    assert per_exit_generalises(ev, config)
    modes = {p.config.threshold_mode for p in refine_placement(ev, config)}
    assert modes == {"shared", "per_exit"}


def test_per_exit_thresholds_are_dropped_where_they_only_fit_noise(make_world):
    """Too few samples to cross-fit: only the shared curve is kept; otherwise the decision is
    the sign of the out-of-fold gain, recomputed here."""
    small = make_world(seed=4, n_val=150)
    config = _config(small, ("linear@1+u", "mlp@2", "linear@3+u"), "confidence", False)
    assert not per_exit_generalises(small.ev(), config)
    assert {p.config.threshold_mode for p in refine_placement(small.ev(), config)} == {"shared"}
    # the gate compares out-of-fold objectives it can recompute: per-exit loses here
    world = make_world(seed=5, n_val=600)
    ev = world.ev()
    one = _config(world, ("linear@4+u", "linear@5+u"), "confidence", False)
    even, odd = ev.halves()
    assert even.n + odd.n == ev.n and abs(even.n - odd.n) <= 1
    assert per_exit_generalises(ev, one) == (_out_of_fold_gain(ev, one) > 0)


def _out_of_fold_gain(ev, config) -> float:
    lambdas = np.logspace(-3.5, 0.5, 17)
    scale = float(ev.costs.backbone_flops)
    total = 0.0
    even, odd = ev.halves()
    for fit, held in ((even, odd), (odd, even)):
        families = (refine_per_exit(fit, config, lambdas), shared_curve(fit, config))
        for lam in lambdas:
            s = [
                (lambda a, m, _: a - lam * m / scale)(
                    *held.quick(max(f, key=lambda p: p.accuracy - lam * p.mean_cost / scale).config)
                )
                for f in families
            ]
            total += s[0] - s[1]
    return total
