"""The budget-aware search: quality against the exhaustive front, reproducibility, resuming,
failed trials and constraints, on the synthetic cache."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from exitsearch.budget import BudgetKind
from exitsearch.core.config import ExitConfig
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadSpec
from exitsearch.search.pareto import hypervolume
from exitsearch.search.samplers import create_sampler, list_samplers
from exitsearch.search.sampling import ConfigSampler
from exitsearch.search.space import parse_search_space
from exitsearch.search.storage import open_storage
from exitsearch.search.study import (
    BudgetConstraint,
    SearchSettings,
    enumerate_placements,
    exhaustive_front,
    run_search,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

BACKBONE = 765
NUM_CLASSES = 4
BUDGET = BudgetConstraint(0.6 * BACKBONE)  # a mean budget of 459 FLOPs
FAST = {"population_size": 20}


class RecordingProgress:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture(autouse=True)
def quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture(scope="module")
def space():
    # 2 * 3 * 2 * 3 * 2 - 1 = 71 placements: exhaustive enumeration is cheap
    return parse_search_space(
        {"heads": {"linear": {}, "mlp": {}}, "criteria": ["confidence"], "uncertainty": False}
    )


@pytest.fixture
def sampler(world, space):
    return ConfigSampler(space, world.preds.heads, depth=6)


def front_hypervolume(front) -> float:
    # reference: chance accuracy (4 classes) and the budget as a fraction of the backbone
    return hypervolume(
        [p.accuracy for p in front], [p.mean_cost / BACKBONE for p in front], 1 / NUM_CLASSES, 0.6
    )


def _front(result):
    return [(p.config.to_dict(), p.accuracy, p.mean_cost) for p in result.front]


def test_nsga2_with_refinement_reaches_the_exhaustive_hypervolume(world, sampler):
    ev = world.ev("val")
    exhaustive = exhaustive_front(ev, sampler, BUDGET)
    assert exhaustive.n_trials == 71
    searched = run_search(ev, sampler, BUDGET, SearchSettings(n_trials=100, seed=0, **FAST))
    assert searched.n_trials == 100 and searched.placements_refined > 0
    ratio = front_hypervolume(searched.front) / front_hypervolume(exhaustive.front)
    assert front_hypervolume(exhaustive.front) > 0
    assert ratio >= 0.99, ratio
    for p in searched.front:
        assert p.mean_cost <= BUDGET.flops
        assert ev.quick(p.config)[:2] == pytest.approx((p.accuracy, p.mean_cost), rel=1e-12)


def test_every_head_alone_is_on_or_under_the_front_whatever_the_trials(world, sampler):
    """A single exit's exact curve is cheap, and trials find a given lone head only by chance:
    with a handful of trials, no point of any head alone beats the front."""
    from exitsearch.search.refine import shared_curve

    ev = world.ev("val")
    alone = sampler.single_exits()
    assert len(alone) == len(world.preds.heads)  # one criterion in this space
    assert {c.exits[0].key for c in alone} == {h.key for h in world.preds.heads}
    front = run_search(ev, sampler, BUDGET, SearchSettings(n_trials=3, seed=0, **FAST)).front
    for config in alone:
        for point in shared_curve(ev, config):
            if point.mean_cost > BUDGET.flops:
                continue
            assert any(
                f.accuracy >= point.accuracy - 1e-12
                and f.mean_cost <= point.mean_cost * (1 + 1e-12)
                for f in front
            ), (config.describe(), point.accuracy, point.mean_cost)
    # a curve's frontier: some of its points, and none of the others beats one of them
    full = shared_curve(ev, alone[0])
    edge = shared_curve(ev, alone[0], frontier=True)
    as_tuple = {(p.accuracy, p.mean_cost, p.config.thresholds) for p in full}
    assert 0 < len(edge) < len(full)
    assert {(p.accuracy, p.mean_cost, p.config.thresholds) for p in edge} <= as_tuple
    for p in full:
        assert any(q.accuracy >= p.accuracy and q.mean_cost <= p.mean_cost for q in edge)
    # spaces whose placement rule has no lone head get none
    lgvit = parse_search_space({"heads": {"lph": {}, "gah": {}}, "placement": "lgvit"})
    assert ConfigSampler(lgvit, world.preds.heads, depth=6).single_exits() == []


def test_the_exhaustive_sampler_gives_the_exhaustive_front(world, sampler):
    ev = world.ev("val")
    via_search = run_search(ev, sampler, BUDGET, SearchSettings(sampler="exhaustive"))
    assert _front(via_search) == _front(exhaustive_front(ev, sampler, BUDGET))


def test_same_seed_same_front_other_seed_other_trials(world, sampler):
    ev = world.ev("val")
    settings = SearchSettings(n_trials=50, seed=3, **FAST)
    a = run_search(ev, sampler, BUDGET, settings)
    b = run_search(ev, sampler, BUDGET, settings)
    c = run_search(ev, sampler, BUDGET, SearchSettings(n_trials=50, seed=4, **FAST))
    assert _front(a) == _front(b)
    assert a.trials == b.trials
    assert a.trials != c.trials


def _snapshot(storage, name):
    study = optuna.load_study(study_name=name, storage=storage)
    return [(t.number, t.state, t.params, t.values) for t in study.get_trials(deepcopy=False)]


def test_resume_continues_exactly_as_an_uninterrupted_run(world, sampler, tmp_path):
    ev = world.ev("val")
    db = tmp_path / "study.db"
    first = run_search(
        ev,
        sampler,
        BUDGET,
        SearchSettings(n_trials=60, seed=0, population_size=40),
        storage=open_storage(db),
        study_name="s",
    )
    assert first.n_trials == 60
    before = _snapshot(open_storage(db), "s")
    progress = RecordingProgress()
    resumed = run_search(
        ev,
        sampler,
        BUDGET,
        SearchSettings(n_trials=120, seed=0, population_size=40),
        storage=open_storage(db),  # a new connection, as after a restart
        study_name="s",
        resume=True,
        progress=progress,
    )
    after = _snapshot(open_storage(db), "s")
    assert resumed.n_trials == len(after) == 120
    assert after[:60] == before
    assert any("60 finished trial(s) kept, 60 to go" in m for m in progress.logs)
    fresh = run_search(
        ev, sampler, BUDGET, SearchSettings(n_trials=120, seed=0, population_size=40)
    )
    assert resumed.trials == fresh.trials
    assert _front(resumed) == _front(fresh)


def test_resume_false_replaces_the_study(world, sampler):
    ev = world.ev("val")
    storage = optuna.storages.InMemoryStorage()
    run_search(ev, sampler, BUDGET, SearchSettings(n_trials=20, **FAST), storage=storage)
    again = run_search(
        ev, sampler, BUDGET, SearchSettings(n_trials=15, **FAST), storage=storage, resume=False
    )
    assert again.n_trials == 15


def test_interrupted_running_trial_is_marked_failed_on_resume(world, sampler):
    ev = world.ev("val")
    storage = optuna.storages.InMemoryStorage()
    run_search(ev, sampler, BUDGET, SearchSettings(n_trials=10, **FAST), storage=storage)
    dropped = optuna.load_study(study_name="exitsearch", storage=storage).ask()  # never told
    assert dropped.number == 10
    progress = RecordingProgress()
    result = run_search(
        ev, sampler, BUDGET, SearchSettings(n_trials=20, **FAST), storage=storage, progress=progress
    )
    trials = optuna.load_study(study_name="exitsearch", storage=storage).get_trials()
    assert trials[10].state is TrialState.FAIL
    assert not [t for t in trials if t.state is TrialState.RUNNING]
    assert any("1 trial(s) interrupted earlier were marked failed" in m for m in progress.logs)
    # the interrupted trial is not one of the 20 asked for, nor a failed evaluation
    assert len(trials) == 21
    assert result.n_trials == 20
    assert result.n_failed == 0
    # and the trials around it are those of an uninterrupted run
    fresh_storage = optuna.storages.InMemoryStorage()
    run_search(ev, sampler, BUDGET, SearchSettings(n_trials=20, **FAST), storage=fresh_storage)
    fresh = optuna.load_study(study_name="exitsearch", storage=fresh_storage).get_trials()
    kept = [t for t in trials if t.number != 10]
    assert [t.params for t in kept] == [t.params for t in fresh]
    assert [t.values for t in kept] == [t.values for t in fresh]


def test_a_worker_joining_a_shared_study_leaves_running_trials_alone(world, sampler):
    """DESIGN.md: many workers share one Optuna storage. Here a second worker starts while the
    first one is inside its first trial (the hook runs mid-trial)."""
    ev = world.ev("val")
    storage = optuna.storages.InMemoryStorage()
    joined = []

    def second_worker_starts(config: ExitConfig) -> None:
        if not joined:
            joined.append(
                run_search(
                    ev,
                    sampler,
                    BUDGET,
                    SearchSettings(n_trials=5, **FAST),
                    storage=storage,
                    exclusive=False,
                )
            )

    run_search(
        ev,
        sampler,
        BUDGET,
        SearchSettings(n_trials=10, **FAST),
        storage=storage,
        objective_hook=second_worker_starts,
    )
    first = optuna.load_study(study_name="exitsearch", storage=storage).trials[0]
    assert first.state is TrialState.COMPLETE


def test_failing_evaluation_is_a_failed_trial_and_the_search_goes_on(world, sampler):
    ev = world.ev("val")

    def hook(config: ExitConfig) -> None:
        if 3 in config.locations:
            raise RuntimeError("simulated evaluation failure at block 3")

    storage = optuna.storages.InMemoryStorage()
    result = run_search(
        ev,
        sampler,
        BUDGET,
        SearchSettings(n_trials=60, **FAST),
        storage=storage,
        objective_hook=hook,
    )
    trials = optuna.load_study(study_name="exitsearch", storage=storage).get_trials()
    failed = [t for t in trials if t.state is TrialState.FAIL]
    assert result.n_trials == 60
    assert result.n_failed == len(failed) > 0
    assert all(t.params.get("exit@3", "none") != "none" for t in failed)
    assert result.front
    assert all(3 not in p.config.locations for p in result.front)


@pytest.mark.parametrize("kind", [BudgetKind.MEAN, BudgetKind.MAX])
def test_constraint_is_recorded_per_trial(world, sampler, kind):
    ev = world.ev("val")
    budget = BudgetConstraint(400.0, kind)
    storage = optuna.storages.InMemoryStorage()
    result = run_search(ev, sampler, budget, SearchSettings(n_trials=40, **FAST), storage=storage)
    trials = optuna.load_study(study_name="exitsearch", storage=storage).get_trials()
    complete = [t for t in trials if t.state is TrialState.COMPLETE]
    with_config = [t for t in complete if t.user_attrs["config"] is not None]
    assert with_config
    signs = set()
    for t in complete:
        config = t.user_attrs["config"]
        if config is None:  # no exit chosen (or, for max budgets, none fits): infeasible
            assert t.constraints == {"budget": 1.0}
            continue
        cfg = ExitConfig.from_dict(config)
        acc, mean, mx = ev.quick(cfg)
        cost = mx if kind is BudgetKind.MAX else mean
        assert t.values == pytest.approx([acc, mean / BACKBONE], rel=1e-12)
        # the relative excess over the budget: feasible when <= 0
        assert t.constraints["budget"] == pytest.approx((cost - 400.0) / 400.0, rel=1e-9)
        signs.add(t.constraints["budget"] <= 0)
        if kind is BudgetKind.MAX:
            assert cfg.cut and mx <= 400.0
    if kind is BudgetKind.MEAN:
        assert signs == {True, False}
    for p in result.front:
        e = ev.evaluate(p.config)
        assert (e.max_flops if kind is BudgetKind.MAX else e.mean_flops) <= 400.0
    feasible_flags = {t["feasible"] for t in result.trials}
    assert True in feasible_flags


def test_an_unknown_sampler_lists_the_known_ones(world, sampler):
    with pytest.raises(ConfigError) as info:
        SearchSettings(sampler="annealing")
    message = str(info.value)
    assert "annealing" in message
    for name in list_samplers():
        assert name in message
    assert {"nsga2", "tpe", "random", "exhaustive"} <= set(list_samplers())
    with pytest.raises(ConfigError, match="nsga2"):
        create_sampler("simplex", seed=0)


def test_exhaustive_on_a_too_large_space_is_a_config_error(world, space):
    # linear or mlp or nothing at each of 12 locations: 3**12 = 531,441 placements
    heads = [HeadSpec(t, m) for m in range(1, 13) for t in ("linear", "mlp")]
    big = ConfigSampler(space, heads, depth=13)
    with pytest.raises(ConfigError, match="531,441"):
        enumerate_placements(big)
    with pytest.raises(ConfigError, match="placements"):
        run_search(world.ev("val"), big, BUDGET, SearchSettings(sampler="exhaustive"))
    # the small space enumerates every non-empty placement once
    small = ConfigSampler(space, world.preds.heads, depth=6)
    keys = [c.placement_key for c in enumerate_placements(small)]
    assert len(keys) == len(set(keys)) == 71


def test_without_refinement_the_front_is_made_of_trials(world, sampler):
    ev = world.ev("val")
    result = run_search(ev, sampler, BUDGET, SearchSettings(n_trials=40, refine=False, **FAST))
    trial_points = {(t["accuracy"], t["mean_cost"]) for t in result.trials}
    assert result.front and result.placements_refined == 0
    for p in result.front:
        assert any(
            a == pytest.approx(p.accuracy) and f == pytest.approx(p.mean_cost)
            for a, f in trial_points
        )


@pytest.mark.parametrize(("field", "value"), [("n_trials", 0), ("timeout", 0.0), ("timeout", -1.0)])
def test_search_settings_check_themselves(field, value):
    with pytest.raises(ConfigError, match=field):
        SearchSettings(**{field: value})
