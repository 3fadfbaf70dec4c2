"""A budget in milliseconds makes the search rank by the latency table's milliseconds: the
objective, the budget check, threshold refinement and the front are all in ms."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from conftest import World

from exitsearch.budget import BudgetKind
from exitsearch.errors import ConfigError
from exitsearch.profile.latency import LatencyTable
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import pareto_mask
from exitsearch.search.refine import shared_curve
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import parse_search_space
from exitsearch.search.study import BudgetConstraint, SearchSettings, run_search

# blocks take 1 ms each per sample; MLP heads are slow in time (4 ms) though cheap in FLOPs
LATENCY = LatencyTable("toy", "cpu", "cpu", 1, 0.5, [1.0] * 6, 0.25, 6.75, 1, 10)


def _timed(world: World) -> World:
    head_ms = {s.key: (4.0 if s.type == "mlp" else 0.05) for s in world.heads}
    return replace(world, costs=replace(world.costs, latency=LATENCY, head_ms=head_ms))


def test_an_ms_evaluator_answers_in_ms(world: World) -> None:
    timed = _timed(world)
    ev = Evaluator(timed.preds, "val", timed.costs, "ms")
    flops_ev = timed.ev()
    assert ev.backbone_cost == pytest.approx(0.5 + 6.0 + 0.25)
    config = shared_curve(flops_ev, _config(timed, ("linear@1+u", "mlp@2")))[3].config
    acc, mean, mx = ev.quick(config)
    e = flops_ev.evaluate(config)
    assert acc == e.accuracy and mean == pytest.approx(e.mean_ms) and mx == pytest.approx(e.max_ms)
    # the same configurations, their costs in ms
    for p, q in zip(shared_curve(ev, config), shared_curve(flops_ev, config), strict=True):
        assert p.config == q.config and p.accuracy == q.accuracy
        assert p.mean_cost == pytest.approx(flops_ev.evaluate(p.config).mean_ms)
    with pytest.raises(ConfigError, match="latency table"):
        Evaluator(world.preds, "val", world.costs, "ms")


def test_an_ms_budget_ranks_the_search_by_ms(world: World) -> None:
    timed = _timed(world)
    ev = Evaluator(timed.preds, "val", timed.costs, "ms")
    space = parse_search_space(
        {"heads": {"linear": {}, "mlp": {}}, "criteria": ["confidence"], "locations": "all"}
    )
    sampler = ConfigSampler(space, timed.heads, 6)
    budget = BudgetConstraint(None, BudgetKind.MEAN, ms=4.0)
    result = run_search(ev, sampler, budget, SearchSettings(n_trials=40, seed=0))
    front = result.front
    assert front
    flops_ev = timed.ev()
    ms = [flops_ev.evaluate(p.config).mean_ms for p in front]
    # every member fits the budget in ms, its cost is its ms, the front is optimal in ms
    assert all(m <= 4.0 * (1 + 1e-9) for m in ms)
    assert np.allclose([p.mean_cost for p in front], ms)
    assert all(pareto_mask([p.accuracy for p in front], ms))
    assert ms == sorted(ms)
    # the trials were scored in ms too: each feasible one fits the budget in ms
    assert all(t["mean_cost"] <= 4.0 * (1 + 1e-9) for t in result.trials if t["feasible"])


def _config(world: World, keys: tuple[str, ...]):
    from exitsearch.core.config import ExitConfig

    return ExitConfig(tuple(world.spec(k) for k in keys), "confidence", (0.5,) * len(keys))


def test_the_runtimes_work_between_parts_is_priced_per_exit_passed(world: World) -> None:
    timed = _timed(world)
    plain = timed.costs
    # per batch of 1: 0.2 ms per early exit a sample reaches, 0.3 ms once per sample
    busy = replace(plain, latency=LATENCY.with_exit_overhead(0.2, 0.3))
    for keys in (("linear@1+u", "mlp@2"), ("linear@1+u", "mlp@2", "linear@4+u")):
        config = _config(timed, keys)
        n = len(keys)
        extra = np.append(0.2 * np.arange(1, n + 1), 0.2 * n) + 0.3
        assert np.allclose(busy.exit_ms(config) - plain.exit_ms(config), extra)
        cut = replace(config, cut=True)
        assert np.allclose(busy.exit_ms(cut) - plain.exit_ms(cut), extra[:-1])
    # a table written before these were measured prices them at 0
    assert LatencyTable.from_json(LATENCY.to_json()).exit_decision_ms == 0.0
    back = LatencyTable.from_json(busy.latency.to_json())
    assert (back.exit_decision_ms, back.exit_fixed_ms) == (0.2, 0.3)
    assert back.per_sample().exit_decision_ms == 0.2  # batch 1


def test_going_on_after_an_exit_is_priced_per_exit_left_behind(world: World) -> None:
    timed = _timed(world)
    plain = timed.costs
    # 0.4 ms per early exit a sample goes on from (the next part starts cold), besides 0.2 ms
    # per early exit it reaches
    cold = replace(plain, latency=LATENCY.with_exit_overhead(0.2, 0.0, 0.4))
    for keys in (("linear@1+u",), ("linear@1+u", "mlp@2", "linear@4+u")):
        config = _config(timed, keys)
        n = len(keys)
        reached = np.arange(1, n + 1)
        extra = np.append(0.2 * reached + 0.4 * (reached - 1), 0.2 * n + 0.4 * n)
        assert np.allclose(cold.exit_ms(config) - plain.exit_ms(config), extra)
        cut = replace(config, cut=True)
        assert np.allclose(cold.exit_ms(cut) - plain.exit_ms(cut), extra[:-1])
    back = LatencyTable.from_json(cold.latency.to_json())
    assert back.exit_resume_ms == 0.4
    # keeping what a table measured when only the other two are given again
    assert back.with_exit_overhead(0.1, 0.1).exit_resume_ms == 0.4
    assert LatencyTable.from_json(LATENCY.to_json()).exit_resume_ms == 0.0
