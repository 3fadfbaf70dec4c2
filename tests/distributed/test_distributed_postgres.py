"""A real PostgreSQL server as the Optuna storage that search processes share.

The server is scripts/postgres.sh's (started by the fixture when not running). Two OS processes
run ``run_search`` on one study at the same time; no trial may be duplicated or lost.
"""

from __future__ import annotations

import subprocess
import sys
import uuid
from pathlib import Path

import optuna
import pytest
from optuna.trial import TrialState

from exitsearch.search.storage import open_storage

pytestmark = pytest.mark.postgres

WORKER = Path(__file__).with_name("pg_search_worker.py")
POSTGRES_SH = Path(__file__).resolve().parents[2] / "scripts" / "postgres.sh"


def test_the_script_is_idempotent(postgres_url):
    assert postgres_url.startswith("postgresql+psycopg2://postgres@127.0.0.1:")
    again = subprocess.run(["bash", str(POSTGRES_SH), "start"], capture_output=True, text=True)
    assert again.returncode == 0 and again.stdout.strip() == postgres_url
    url = subprocess.run(["bash", str(POSTGRES_SH), "url"], capture_output=True, text=True)
    assert url.stdout.strip() == postgres_url


def test_two_search_processes_share_one_study(postgres_url, tmp_path):
    study_name = f"shared-{uuid.uuid4().hex[:8]}"
    n = 25
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # Optuna creates its tables on first use; two processes doing that at once on an empty
    # database race (one dies with IntegrityError on pg_type), so the schema is made first.
    open_storage(postgres_url)
    args = [sys.executable, str(WORKER), postgres_url, study_name, str(n), str(barrier)]
    procs = [
        subprocess.Popen(
            [*args, f"w{i}", "2"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for i in range(2)
    ]
    for p in procs:
        _, err = p.communicate(timeout=240)
        assert p.returncode == 0, err[-2000:]
    study = optuna.load_study(study_name=study_name, storage=open_storage(postgres_url))
    trials = study.get_trials()
    numbers = [t.number for t in trials]
    assert sorted(numbers) == list(range(2 * n))  # none lost, none duplicated
    assert len({t._trial_id for t in trials}) == 2 * n
    assert all(t.state is TrialState.COMPLETE for t in trials)
    pairs = [(t.number, tuple(sorted(t.params.items()))) for t in trials]
    assert len(set(pairs)) == len(pairs)
    optuna.delete_study(study_name=study_name, storage=open_storage(postgres_url))


def test_a_second_process_leaves_running_trials_of_the_first_alone(postgres_url):
    from pg_search_worker import DEPTH, synthetic_evaluator

    from exitsearch.search.sampling import ConfigSampler
    from exitsearch.search.space import parse_search_space
    from exitsearch.search.study import BudgetConstraint, SearchSettings, run_search

    storage = open_storage(postgres_url)
    name = f"live-{uuid.uuid4().hex[:8]}"
    first = optuna.create_study(
        study_name=name, storage=storage, directions=["maximize", "minimize"]
    )
    running = first.ask()  # the first process is evaluating this trial right now
    ev, heads = synthetic_evaluator()
    space = parse_search_space(
        {"heads": {"linear": {}}, "criteria": ["confidence"], "uncertainty": False}
    )
    try:
        run_search(
            ev,
            ConfigSampler(space, heads, DEPTH),
            BudgetConstraint(None),
            SearchSettings(n_trials=2, population_size=4, refine=False),
            storage=storage,
            study_name=name,
            exclusive=False,
        )
        state = storage.get_trial(running._trial_id).state
        assert state is TrialState.RUNNING
    finally:
        optuna.delete_study(study_name=name, storage=storage)
