"""The papers' hand-set placements, for a 12-block backbone with every head trained."""

from __future__ import annotations

import pytest

from exitsearch.budget import BudgetKind
from exitsearch.heads import HeadSpec
from exitsearch.search.baselines import PAPER000_HEADS, baseline_placements, score_baselines
from exitsearch.search.refine import shared_curve
from exitsearch.search.space import load_search_space
from exitsearch.search.study import BudgetConstraint, front_of


@pytest.fixture(scope="module")
def placements():
    heads = load_search_space("default").candidate_heads(12)
    return {name: (desc, config) for name, desc, config in baseline_placements(heads, 12)}


def _keys(config):
    return [s.key for s in config.exits]


def test_baseline_names(placements):
    expected = (
        ["ryu@3", "ryu@6", "ryu@9"]
        + [f"multiexit-vit-{t}" for t in PAPER000_HEADS]
        + ["lgvit-uniform", "mevit"]
    )
    assert list(placements) == expected


@pytest.mark.parametrize("m", [3, 6, 9])  # L/4, L/2, 3L/4 of 12 blocks
def test_paper002_one_linear_exit(placements, m):
    _, config = placements[f"ryu@{m}"]
    assert _keys(config) == [f"linear@{m}+u"]
    assert config.criterion == "confidence"


@pytest.mark.parametrize("head", PAPER000_HEADS)
def test_paper000_one_type_at_every_location(placements, head):
    _, config = placements[f"multiexit-vit-{head}"]
    assert _keys(config) == [f"{head}@{m}+u" for m in range(1, 12)]
    assert config.criterion == "confidence"


def test_lgvit_uniform_local_then_global(placements):
    _, config = placements["lgvit-uniform"]
    # blocks L/3, L/2, 2L/3, 5L/6 = 4, 6, 8, 10; default mappings k: 3 -> 0 over 4, 6 and
    # s: 2 -> 3 over 8, 10
    assert _keys(config) == ["lph[k=3]@4+u", "lph[k=0]@6+u", "gah[s=2]@8+u", "gah[s=3]@10+u"]


def test_mevit_linear_exits_with_uncertainty(placements):
    desc, config = placements["mevit"]
    assert _keys(config) == [f"linear@{m}+u" for m in range(6, 12)]
    assert config.criterion == "uncertainty"
    assert "uncertainty" in desc


def test_mevit_without_predictors_falls_back_to_confidence():
    heads = [HeadSpec("linear", m) for m in range(1, 12)]
    found = {name: config for name, _, config in baseline_placements(heads, 12)}
    assert set(found) == {"ryu@3", "ryu@6", "ryu@9", "mevit"}
    assert found["mevit"].criterion == "confidence"


def test_missing_heads_leave_baselines_out():
    heads = [HeadSpec("linear", 6), HeadSpec("mlp", 6)]
    names = [name for name, _, _ in baseline_placements(heads, 12)]
    # only ryu@6 is complete; one location is "every location" for multiexit-vit-mlp
    assert names == ["ryu@6", "multiexit-vit-mlp"]


def test_score_baselines_fronts_are_feasible_shared_curves(world):
    ev = world.ev("val")
    budget = BudgetConstraint(500.0, BudgetKind.MEAN)
    scored = {b.name: b for b in score_baselines(ev, world.preds.heads, 6, budget)}
    # the 765-FLOP backbone does not fit 500: an empty front
    assert scored["backbone"].front == []
    for name, b in scored.items():
        if b.placement is None:
            continue
        expected = front_of(shared_curve(ev, b.placement), budget, ev)
        assert [(p.accuracy, p.mean_cost) for p in b.front] == [
            (p.accuracy, p.mean_cost) for p in expected
        ], name
        assert all(p.mean_cost <= 500.0 for p in b.front)
    unconstrained = score_baselines(ev, world.preds.heads, 6, BudgetConstraint(None))
    assert unconstrained[0].front[0].mean_cost == 765
