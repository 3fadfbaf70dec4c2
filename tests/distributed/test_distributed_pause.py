"""The pause-configuration search driver, in process: the space, the budget, failed trials,
and a driver killed mid-round that resumes to exactly the uninterrupted study."""

from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Any

import optuna
import pytest
from dist_world import PAUSE_DATA
from optuna.trial import TrialState

from exitsearch.distributed import (
    LocalExecutor,
    PauseSearchSettings,
    PauseSpace,
    front_table,
    run_pause_search,
)
from exitsearch.errors import BudgetError, ConfigError
from exitsearch.pausing import PauseConfig, run_pause_job
from exitsearch.search.samplers import INTERRUPTED
from exitsearch.search.storage import open_storage

SPACE = PauseSpace.for_depth(6, min_layer=2, taus=(0.0, 0.3, 0.6))
SETTINGS = PauseSearchSettings(n_trials=10, population_size=4, seed=1)


def test_space_parameters_are_relative_taus():
    space = PauseSpace(layers=(5, 3, 3), taus=(0.5, 0.0, 0.25))
    assert space.layers == (3, 5) and space.taus == (0.0, 0.25, 0.5) and space.size == 9
    trial = optuna.trial.FixedTrial({"tau@3": 0.5, "tau@5": 0.5})
    # half of the tokens after block 3, half of the rest after block 5
    assert space.sample(trial) == PauseConfig({3: 0.5, 5: 0.25})
    assert space.sample(optuna.trial.FixedTrial({"tau@3": 0.0, "tau@5": 0.0})) == PauseConfig()
    assert PauseSpace.for_depth(6).layers == (1, 2, 3, 4, 5)
    with pytest.raises(ConfigError, match="tau"):
        PauseSpace(layers=(3,), taus=(0.0, 1.0))
    with pytest.raises(ConfigError, match="max_layer"):
        PauseSpace.for_depth(6, max_layer=6)
    with pytest.raises(ConfigError, match="unknown pause mode"):
        PauseSpace(layers=(3,), mode="sometimes")


def _trials(result) -> list[tuple[Any, ...]]:
    return [(t["number"], t["state"], t["params"], t["metric"], t["flops"]) for t in result.trials]


def test_budget_is_a_constraint_and_over_budget_configurations_are_not_evaluated(paumer_dir):
    res = run_pause_search(paumer_dir, PAUSE_DATA, SPACE, SETTINGS, budget="70%")
    assert res.n_trials == 10 and res.n_failed == 0 and res.budget_flops == 0.7 * res.full_flops
    over = [t for t in res.trials if t["flops"] > res.budget_flops]
    under = [t for t in res.trials if t["flops"] <= res.budget_flops]
    assert over and under
    assert all(not t["evaluated"] and not t["feasible"] and t["metric"] == 0.0 for t in over)
    assert all(t["evaluated"] and t["feasible"] for t in under)
    assert res.nodes == {"local": len(under)}
    assert res.front and all(p.flops <= res.budget_flops for p in res.front)
    assert [p.flops for p in res.front] == sorted(p.flops for p in res.front)
    metrics = [p.metric for p in res.front]
    assert metrics == sorted(metrics)  # cheaper points of a front are less accurate
    # the same seed: the same trials and front
    again = run_pause_search(paumer_dir, PAUSE_DATA, SPACE, SETTINGS, budget="70%")
    assert _trials(again) == _trials(res) and front_table(again) == front_table(res)
    with pytest.raises(BudgetError, match="milliseconds"):
        run_pause_search(paumer_dir, PAUSE_DATA, SPACE, SETTINGS, budget="5ms")
    with pytest.raises(ConfigError, match="outside"):
        run_pause_search(paumer_dir, PAUSE_DATA, PauseSpace(layers=(6,)), SETTINGS)


def failing_job(fail: str, job: Any) -> dict[str, Any]:
    if job.label == fail:
        raise ValueError("this configuration cannot be scored")
    return run_pause_job(job)


def test_a_failed_evaluation_is_a_failed_trial(paumer_dir):
    res = run_pause_search(
        paumer_dir,
        PAUSE_DATA,
        SPACE,
        SETTINGS,
        executor=LocalExecutor(runner=partial(failing_job, "2")),
    )
    assert res.n_trials == 10 and res.n_failed == 1
    (bad,) = [t for t in res.trials if t["state"] == "FAIL"]
    assert bad["number"] == 2 and bad["error"] == "ValueError: this configuration cannot be scored"
    assert sum(t["state"] == "COMPLETE" for t in res.trials) == 9


class DriverKilled(BaseException):
    """Stands for the driver process dying (not an Exception: nothing catches it)."""


def dies_once(flag: Path, at: str, job: Any) -> dict[str, Any]:
    if job.label == at and not flag.exists():
        flag.touch()
        raise DriverKilled
    return run_pause_job(job)


def test_a_driver_killed_mid_round_resumes_to_the_uninterrupted_study(paumer_dir, tmp_path):
    reference = run_pause_search(paumer_dir, PAUSE_DATA, SPACE, SETTINGS)
    storage = open_storage(tmp_path / "study.db")
    killing = LocalExecutor(runner=partial(dies_once, tmp_path / "died", "5"))
    with pytest.raises(DriverKilled):
        run_pause_search(
            paumer_dir,
            PAUSE_DATA,
            SPACE,
            SETTINGS,
            executor=killing,
            storage=storage,
            study_name="s",
        )
    study = optuna.load_study(study_name="s", storage=storage)
    states = [t.state for t in study.get_trials()]
    # round 1 (trials 0-3) was told; round 2 (4-7) was asked and never told
    assert states == [TrialState.COMPLETE] * 4 + [TrialState.RUNNING] * 4
    resumed = run_pause_search(
        paumer_dir,
        PAUSE_DATA,
        SPACE,
        SETTINGS,
        executor=killing,
        storage=open_storage(tmp_path / "study.db"),
        study_name="s",
    )
    study = optuna.load_study(study_name="s", storage=storage)
    assert sum(bool(t.system_attrs.get(INTERRUPTED)) for t in study.get_trials()) == 4
    assert _without_numbers(resumed) == _without_numbers(reference)
    assert front_table(resumed) == front_table(reference)


def _without_numbers(result) -> list[tuple[Any, ...]]:
    """The trials in order, numbers left out (the interrupted trials kept theirs)."""
    return [row[1:] for row in _trials(result)]
