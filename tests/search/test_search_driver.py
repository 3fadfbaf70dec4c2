"""The study driver: rounds asked together and told in trial order, aligned across a resume,
failures told as failed, interrupted trials settled and not counted."""

from __future__ import annotations

import optuna
import pytest
from optuna.trial import TrialState

from exitsearch.progress import NullProgress
from exitsearch.search.driver import (
    FAILED,
    finished,
    mark_interrupted,
    open_study,
    run_rounds,
    settle_interrupted,
)
from exitsearch.search.samplers import INTERRUPTED, create_sampler

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")


class Logs(NullProgress):
    def __init__(self) -> None:
        self.logs: list[str] = []

    def log(self, message: str) -> None:
        self.logs.append(message)


def study(storage=None, resume=True):  # type: ignore[no-untyped-def]
    return open_study(
        storage,
        "s",
        directions=["maximize"],
        sampler=create_sampler("tpe", 0),
        resume=resume,
        metric_names=["score"],
    )


def test_rounds_are_asked_together_and_told_in_trial_order():
    s = study()
    rounds: list[list[int]] = []

    def run_round(trials):  # type: ignore[no-untyped-def]
        rounds.append([t.number for t in trials])
        xs = [t.suggest_float("x", 0.0, 1.0) for t in trials]
        # every trial of the round is still running while the round runs
        assert all(t.state is TrialState.RUNNING for t in s.get_trials(deepcopy=False)[-len(xs) :])
        return [FAILED if t.number == 4 else x for t, x in zip(trials, xs, strict=True)]

    run_rounds(s, 7, 3, run_round)
    assert rounds == [[0, 1, 2], [3, 4, 5], [6]]
    states = [t.state for t in s.get_trials(deepcopy=False)]
    assert states.count(TrialState.COMPLETE) == 6 and states[4] is TrialState.FAIL
    assert finished(s) == 7
    assert s.metric_names == ["score"]


def test_a_resumed_study_keeps_the_round_boundaries():
    storage = optuna.storages.InMemoryStorage()
    s = study(storage)
    rounds: list[list[int]] = []

    def run_round(trials):  # type: ignore[no-untyped-def]
        rounds.append([t.number for t in trials])
        return [0.5] * len(trials)

    run_rounds(s, 4, 3, run_round)
    again = study(storage)
    assert finished(again) == 4
    run_rounds(again, 3, 3, run_round, done=finished(again))
    assert rounds == [[0, 1, 2], [3], [4, 5], [6]]
    fresh = study(storage, resume=False)
    assert finished(fresh) == 0


def test_interrupted_trials_are_settled_and_not_counted():
    s = study()
    run_rounds(s, 2, 2, lambda trials: [1.0] * len(trials))
    s.ask()  # left running, as by a killed process
    s.ask()
    logs = Logs()
    settle_interrupted(s, logs, "pause search")
    assert logs.logs == ["pause search: 2 trial(s) interrupted earlier were marked failed"]
    assert [t.system_attrs.get(INTERRUPTED, False) for t in s.get_trials()] == [0, 0, 1, 1]
    assert finished(s) == 2
    assert mark_interrupted(s) == 0


def test_a_round_must_answer_every_trial():
    with pytest.raises(ValueError, match="returned 1 results"):
        run_rounds(study(), 2, 2, lambda trials: [1.0])
    with pytest.raises(ValueError, match="round_size"):
        run_rounds(study(), 2, 0, lambda trials: [])
