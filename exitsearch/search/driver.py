"""Driving an Optuna study: every study exitsearch runs is opened, resumed, settled and asked here.

- :func:`open_study` creates a study, continues one of the same name (``resume``) or replaces
  it, and names its objectives.
- :func:`settle_interrupted` marks the trials a killed process left RUNNING as interrupted and
  failed, so a resumed run redoes them; :func:`finished` counts the trials that count towards
  the number asked for.
- :func:`run_rounds` asks trials in rounds: a round's trials are asked together, evaluated
  together (in parallel where the caller can) and told in trial order, so the sampler never sees
  the order in which they finished and a seeded study is reproducible.

Who drives what: the exit search (:func:`exitsearch.search.study.run_search`) scores a trial in
microseconds and runs one at a time in Optuna's own loop (``Study.optimize``, which keeps the
heartbeat of a shared database); the searches over pause configurations (inside a run, and
``exitsearch pause search`` on a cluster) run in rounds.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Callable, Sequence

import optuna
from optuna.trial import TrialState

from exitsearch.progress import NullProgress, Progress
from exitsearch.search.samplers import INTERRUPTED

__all__ = [
    "FAILED",
    "ask",
    "finished",
    "mark_interrupted",
    "open_study",
    "run_rounds",
    "settle_interrupted",
]

FAILED = None  # what a round returns for a trial that failed (told as FAIL)

Told = float | Sequence[float] | None


def open_study(
    storage: optuna.storages.BaseStorage | None,
    name: str,
    *,
    directions: Sequence[str],
    sampler: optuna.samplers.BaseSampler,
    resume: bool = True,
    metric_names: Sequence[str] | None = None,
) -> optuna.Study:
    """The study ``name`` in ``storage`` (in memory when None): continued with ``resume``,
    otherwise replaced by a new one."""
    storage = storage if storage is not None else optuna.storages.InMemoryStorage()
    if not resume:
        with contextlib.suppress(KeyError):
            optuna.delete_study(study_name=name, storage=storage)
    study = optuna.create_study(
        study_name=name,
        storage=storage,
        directions=list(directions),
        sampler=sampler,
        load_if_exists=True,
    )
    if metric_names is not None:
        with warnings.catch_warnings():  # experimental since Optuna 3.2, stable in use
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study


def mark_interrupted(study: optuna.Study, only: set[int] | None = None) -> int:
    """Mark the study's RUNNING trials (those whose trial ids are in ``only``, when given) as
    interrupted and failed, so a resumed run redoes them; returns how many."""
    storage = study._storage
    stale = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
        if only is None or t._trial_id in only
    ]
    for t in stale:
        storage.set_trial_system_attr(t._trial_id, INTERRUPTED, True)
        storage.set_trial_state_values(t._trial_id, TrialState.FAIL)
    return len(stale)


def settle_interrupted(study: optuna.Study, progress: Progress, what: str = "search") -> None:
    """Trials left RUNNING by a killed process are marked failed so the study can go on."""
    if n := mark_interrupted(study):
        progress.log(f"{what}: {n} trial(s) interrupted earlier were marked failed")


def finished(study: optuna.Study) -> int:
    """Trials that count towards the number asked for: complete or failed, not interrupted."""
    return sum(
        1
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.FAIL))
        if not t.system_attrs.get(INTERRUPTED)
    )


def ask(study: optuna.Study) -> optuna.Trial:
    """``study.ask()``, without the warning that RDB storages with heartbeats give outside
    ``Study.optimize``."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "Heartbeat of storage", UserWarning)
        return study.ask()


def run_rounds(
    study: optuna.Study,
    n_trials: int,
    round_size: int,
    run_round: Callable[[list[optuna.Trial]], Sequence[Told]],
    *,
    done: int = 0,
    progress: Progress | None = None,
    task: str | None = None,
) -> None:
    """Run ``n_trials`` more trials in rounds of ``round_size``.

    ``run_round`` gets a round's asked trials and returns, for each in order, its objective
    value(s) or :data:`FAILED`; the trials are then told in trial order. Rounds stay aligned to
    multiples of ``round_size`` counted from the study's start (``done`` trials finished
    before), so a resumed study asks the same rounds as an uninterrupted one.
    """
    if round_size < 1:
        raise ValueError(f"round_size must be >= 1, got {round_size}")
    progress = progress or NullProgress()
    remaining = n_trials
    while remaining > 0:
        k = min(round_size - done % round_size, remaining)
        trials = [ask(study) for _ in range(k)]
        told = list(run_round(trials))
        if len(told) != k:
            raise ValueError(f"a round of {k} trials returned {len(told)} results")
        for trial, values in zip(trials, told, strict=True):
            if values is FAILED:
                study.tell(trial, state=TrialState.FAIL)
            else:
                study.tell(trial, values)
            if task is not None:
                progress.advance(task, 1)
        done += k
        remaining -= k
