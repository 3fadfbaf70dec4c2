"""Interruptions on purpose: SIGINT and SIGKILL during head training, prediction, search and
export, and two runs on one folder.

One uninterrupted reference run (a real ``exitsearch run`` process) is shared by the module;
while it holds its run folder, a second ``exitsearch run`` on the same folder must be refused.
A second run folder is then interrupted again and again, each time by a fresh process of the
same command:

1. SIGINT right after the heads' checkpoint of epoch 1 is in place (``fault_cli``);
2. SIGKILL in the middle of writing the validation predictions (``fault_cli``: the temporary
   file is complete, the rename has not happened);
3. SIGKILL from outside once the study holds a number of finished trials drawn from a fixed
   seed;

and finally the same command runs to the end. After every interruption each result file must
read back whole, the checkpoint epoch must not go backwards and no finished trial may be lost
or changed; at the end the front and the head weights must equal the reference run's.
Separately: a Ctrl-C that arrives while a trial is being evaluated (seeded trial number; in the
test process), and an ``exitsearch export`` killed half-way through its bundle.
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest
import torch
from exitsearch_cli.main import app
from fault_world import (
    INTERRUPTED,
    SPACE,
    Finished,
    Snapshot,
    as_in_a_fresh_process,
    count_trials,
    finish,
    finished_trials,
    front,
    head_weights,
    heads_args,
    kill_signal,
    one_line_error,
    partial_results,
    run_args,
    run_cli,
    signal_when,
    snapshot,
    start,
    temp_files,
)
from typer.testing import CliRunner

from exitsearch.data import FASHION_MNIST_DIR
from exitsearch.export import load_bundle, read_manifest
from exitsearch.report import schema
from exitsearch.search.evaluator import Evaluator

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"),
]

SEED = 20240607  # draws the search kill points; change it to try other ones
N_TRIALS = 80


@pytest.fixture(scope="module")
def space(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(SPACE)
    return path


# ------------------------------------------------------------------ reference and busy folder
@dataclass
class Reference:
    run_dir: Path
    first: Finished  # the uninterrupted run
    second: Any  # `exitsearch run` on the same folder while the first held it
    heads: Any  # `exitsearch heads train` on the same folder, too
    first_still_running: bool
    space: Path


@pytest.fixture(scope="module")
def reference(tmp_path_factory: pytest.TempPathFactory, space: Path) -> Reference:
    """The uninterrupted run, a real process; as soon as it holds its folder (its pid in
    ``.lock``), it is stopped (SIGSTOP) while ``exitsearch run`` and ``exitsearch heads train``
    try the same folder, then let go on (SIGCONT): a tiny run would otherwise end before
    they reach the lock."""
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    args = run_args(run_dir, space, n_trials=N_TRIALS)
    proc = start(args)
    lock = run_dir / ".lock"
    t0 = time.monotonic()
    while proc.poll() is None and time.monotonic() - t0 < 120:
        if lock.is_file() and lock.read_text().strip() == f"process {proc.pid}":
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGSTOP)
    try:
        torch.set_num_threads(1)
        runner = CliRunner()
        second = runner.invoke(app, args)
        heads = runner.invoke(app, heads_args(run_dir, space))
        still_running = proc.poll() is None
    finally:
        proc.send_signal(signal.SIGCONT)
    return Reference(run_dir, finish(proc, t0), second, heads, still_running, space)


def test_second_run_on_a_busy_folder_is_refused_in_one_line(reference: Reference):
    assert reference.first_still_running, "the first run ended before the second one started"
    for result in (reference.second, reference.heads):
        assert result.exit_code == 2, result.output
        line = one_line_error(result.stderr)
        assert f"run folder {reference.run_dir} is in use by process" in line
        assert "choose another --run" in line
        assert result.stdout == ""


def test_the_first_run_finishes_normally(reference: Reference):
    assert reference.first.returncode == 0, reference.first.stderr
    assert "Traceback" not in reference.first.stderr
    assert (reference.run_dir / schema.PARETO_JSON).is_file()
    assert partial_results(reference.run_dir) == []
    assert temp_files(reference.run_dir) == []


# ------------------------------------------------------------------- the interrupted chain
@dataclass
class Chain:
    run_dir: Path
    snaps: list[Snapshot]  # after each interruption, in order
    final: Any  # the run to the end
    kill: int  # finished trials after which the search was killed


EXPECTED_SIGNALS = [signal.SIGINT, signal.SIGKILL, signal.SIGKILL]


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory, space: Path) -> Chain:
    kill = random.Random(SEED).randint(10, 60)
    run_dir = tmp_path_factory.mktemp("chain") / "run"
    args = run_args(run_dir, space, n_trials=N_TRIALS)
    db = run_dir / schema.STUDY_DB
    snaps: list[Snapshot] = []

    done = run_cli(args, fault="checkpoint.json:1:INT:after")
    snaps.append(snapshot("SIGINT after the heads' epoch-1 checkpoint", done, run_dir))

    done = run_cli(args, fault="val.npz:1:KILL:before")
    snaps.append(snapshot("SIGKILL while writing the validation predictions", done, run_dir))

    def trials_reached():  # type: ignore[no-untyped-def]
        return (c := count_trials(db)) >= kill and c

    done = signal_when(start(args), trials_reached, signal.SIGKILL)
    snaps.append(snapshot(f"SIGKILL after >= {kill} trials", done, run_dir))

    torch.set_num_threads(1)
    final = CliRunner().invoke(app, args)
    return Chain(run_dir, snaps, final, kill)


def test_every_interruption_hit_its_point(chain: Chain):
    snaps = chain.snaps
    assert [s.returncode for s in snaps] == [kill_signal(s) for s in EXPECTED_SIGNALS], [
        (s.label, s.returncode, s.stderr[-2000:]) for s in snaps
    ]
    assert snaps[2].extra["signalled_at"]
    # the search really was cut short, after at least the drawn number of trials
    assert chain.kill <= len(snaps[2].trials) < N_TRIALS


def test_ctrl_c_says_how_to_resume_and_prints_no_traceback(chain: Chain):
    s = chain.snaps[0]
    assert s.stderr.strip().splitlines()[-1] == INTERRUPTED, s.stderr
    assert "Traceback" not in s.stderr


def test_each_rerun_resumes_where_the_last_one_stopped(chain: Chain):
    snaps, final = chain.snaps, chain.final
    assert "heads: resuming after epoch 1 of 3" in snaps[1].stderr
    assert "heads: reusing 6 heads trained" in snaps[2].stderr
    assert "predict: reusing cached predictions" not in snaps[2].stderr  # never committed
    assert "predict: reusing cached predictions" in final.stderr
    # a trial left running by the killed process is settled on resume (none when the kill
    # fell between two trials)
    running = snaps[2].extra["running"]
    assert ("interrupted earlier were marked failed" in final.stderr) == (running > 0)
    if running:
        assert f"search: {running} trial(s) interrupted earlier were marked failed" in final.stderr
    assert f"search: {len(snaps[2].trials)} finished trial(s) kept" in final.stderr


def test_no_result_file_is_ever_partial(chain: Chain):
    for s in chain.snaps:
        assert s.problems == [], s.label


def test_the_checkpoint_epoch_never_goes_backwards(chain: Chain):
    epochs = [s.epoch for s in chain.snaps]
    assert epochs[0] == 1  # the checkpoint that SIGINT followed was kept
    assert epochs == sorted(epochs)
    assert epochs[-1] == 3


def test_no_finished_trial_is_lost_or_changed(chain: Chain):
    history = [s.trials for s in chain.snaps]
    history.append(finished_trials(chain.run_dir / schema.STUDY_DB))
    for before, after in pairwise(history):
        assert len(after) >= len(before)
        changed = {n: (t, after.get(n)) for n, t in before.items() if after.get(n) != t}
        assert changed == {}
    states = [t[0] for t in history[-1].values()]
    # failed: only the trial that was running when the search was killed
    assert states.count("FAIL") == chain.snaps[2].extra["running"]
    assert states.count("COMPLETE") == N_TRIALS


def test_the_resumed_run_equals_the_uninterrupted_one(chain: Chain, reference: Reference):
    assert chain.final.exit_code == 0, chain.final.output
    assert reference.first.returncode == 0, reference.first.stderr
    assert front(chain.run_dir) == front(reference.run_dir)
    ours, theirs = head_weights(chain.run_dir), head_weights(reference.run_dir)
    assert ours.keys() == theirs.keys()
    assert all(torch.equal(ours[k], theirs[k]) for k in ours)


def test_no_temporary_file_is_left_after_the_rerun(chain: Chain):
    assert chain.final.exit_code == 0, chain.final.output
    assert temp_files(chain.run_dir) == []


# ------------------------------------------------------------- Ctrl-C during an evaluation
@dataclass
class CtrlC:
    trial: int  # the evaluation (1-based) during which SIGINT arrived
    interrupted: Finished
    trials_after: dict[int, tuple[str, tuple, tuple]]
    final: Any
    run_dir: Path


@pytest.fixture(scope="module")
def ctrl_c_in_evaluation(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> CtrlC:
    """The reference's stages reused, its search started afresh and Ctrl-C'd mid-trial.

    In the test process: the KeyboardInterrupt is raised where Python's SIGINT handler would
    raise it, inside the evaluation of trial N (seeded), and the CLI then handles it as usual.
    """
    assert reference.first.returncode == 0, reference.first.stderr
    run_dir = tmp_path_factory.mktemp("ctrl-c") / "run"
    shutil.copytree(reference.run_dir / schema.CACHE_DIR, run_dir / schema.CACHE_DIR)
    args = run_args(run_dir, reference.space, n_trials=N_TRIALS)
    trial = random.Random(SEED + 1).randint(5, 60)
    calls = 0
    quick = Evaluator.quick

    def evaluate(self: Evaluator, config: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == trial:
            raise KeyboardInterrupt
        return quick(self, config)

    torch.set_num_threads(1)
    with as_in_a_fresh_process(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(Evaluator, "quick", evaluate)
        result = CliRunner().invoke(app, args)
    interrupted = Finished(result.exit_code, result.stdout, result.stderr, 0.0)
    trials_after = finished_trials(run_dir / schema.STUDY_DB)
    with as_in_a_fresh_process():
        final = CliRunner().invoke(app, args)
    return CtrlC(trial, interrupted, trials_after, final, run_dir)


def test_ctrl_c_during_an_evaluation_stops_the_run(ctrl_c_in_evaluation: CtrlC):
    c = ctrl_c_in_evaluation
    assert c.interrupted.returncode == 130, c.interrupted.stderr
    assert c.interrupted.stderr.strip().splitlines()[-1] == INTERRUPTED
    assert c.final.exit_code == 0, c.final.output
    assert partial_results(c.run_dir) == []


def test_ctrl_c_during_an_evaluation_prints_no_traceback(ctrl_c_in_evaluation: CtrlC):
    assert "Traceback" not in ctrl_c_in_evaluation.interrupted.stderr


def test_ctrl_c_during_an_evaluation_resumes_as_if_uninterrupted(
    ctrl_c_in_evaluation: CtrlC, reference: Reference
):
    c = ctrl_c_in_evaluation
    assert c.final.exit_code == 0, c.final.output
    states = [t[0] for t in finished_trials(c.run_dir / schema.STUDY_DB).values()]
    assert states.count("COMPLETE") == N_TRIALS
    ours = json.loads((c.run_dir / schema.PARETO_JSON).read_text())
    theirs = json.loads((reference.run_dir / schema.PARETO_JSON).read_text())
    assert ours["search"]["failed_trials"] == theirs["search"]["failed_trials"]
    assert front(c.run_dir) == front(reference.run_dir)


# ------------------------------------------------------------------------------ export
@dataclass
class KilledExport:
    dest: Path
    killed: Finished
    left: list[str]  # what the destination's parent held after the kill
    rerun: Any


@pytest.fixture(scope="module")
def killed_export(reference: Reference, tmp_path_factory: pytest.TempPathFactory) -> KilledExport:
    """``exitsearch export`` killed half-way through its bundle, then run again."""
    assert reference.first.returncode == 0, reference.first.stderr
    work = tmp_path_factory.mktemp("export")
    run_copy = Path(shutil.copytree(reference.run_dir, work / "run"))
    dest = work / "bundles" / "chosen"
    args = ["export", str(run_copy), "--out", str(dest)]
    killed = run_cli(args, fault="heads.safetensors:1:KILL:before")
    left = sorted(p.name for p in dest.parent.iterdir()) if dest.parent.exists() else []
    torch.set_num_threads(1)
    return KilledExport(dest, killed, left, CliRunner().invoke(app, args))


def test_a_killed_export_leaves_no_bundle_at_the_destination(killed_export: KilledExport):
    assert killed_export.killed.returncode == -signal.SIGKILL, killed_export.killed.stderr
    name = killed_export.dest.name
    assert name not in killed_export.left  # the half bundle never took the bundle's name
    assert any(n.startswith(f".{name}.") for n in killed_export.left)  # it was cut mid-way


def test_the_export_rerun_succeeds_with_a_whole_bundle(killed_export: KilledExport):
    assert killed_export.rerun.exit_code == 0, killed_export.rerun.output
    read_manifest(killed_export.dest, verify=True)
    model = load_bundle(killed_export.dest)
    with torch.no_grad():
        assert model(torch.zeros(2, 1, 28, 28)).logits.shape == (2, 10)


def test_no_half_bundle_is_left_after_the_export_rerun(killed_export: KilledExport):
    assert killed_export.rerun.exit_code == 0, killed_export.rerun.output
    assert sorted(p.name for p in killed_export.dest.parent.iterdir()) == [killed_export.dest.name]
