"""What the fault-injection tests share: the tiny run, processes to interrupt, and the checks
that must hold at any kill point.

The tiny run is the one of the issue: a 4-block ViT of width 32 on 28 px Fashion-MNIST,
400 samples per split, two head types after blocks 1-3, three head epochs, 80 search trials.
Subprocesses run with one intra-op thread, as the test process does (``tests/conftest.py``),
so that a front computed in a subprocess equals one computed in the test process bit for bit.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
from safetensors.torch import load_file

from exitsearch.pipeline.cache import MANIFEST, StageStore
from exitsearch.report import schema

EXITSEARCH = Path(sys.executable).with_name("exitsearch")
FAULT_CLI = Path(__file__).with_name("fault_cli.py")

TINY_MODEL = [
    *("--model", "vit_tiny_patch16_224"),
    *("-o", "img_size=28", "-o", "patch_size=7", "-o", "in_chans=1", "-o", "num_classes=10"),
    *("-o", "embed_dim=32", "-o", "depth=4", "-o", "num_heads=2"),
]
SPACE = """\
name: tiny
placement: free
heads:
  linear: {}
  mlp: {}
uncertainty: false
criteria: [confidence]
thresholds: [shared, per_exit]
"""
INTERRUPTED = "interrupted; finished work is kept, rerun the command to resume"
STAGES = ("profile", "heads", "predict")


def run_args(
    run_dir: Path,
    space: Path,
    *,
    limit: int = 400,
    head_epochs: int = 3,
    n_trials: int = 80,
    budget: str = "70%",
    extra: Sequence[str] = (),
) -> list[str]:
    """``exitsearch run`` arguments (without the program name) of the tiny run."""
    return [
        "run",
        *TINY_MODEL,
        *("--limit", str(limit), "--head-epochs", str(head_epochs)),
        *("--n-trials", str(n_trials), "--space", str(space), "--budget", budget),
        *("--run", str(run_dir)),
        *extra,
    ]


def heads_args(run_dir: Path, space: Path, *, limit: int = 400, head_epochs: int = 3) -> list[str]:
    """``exitsearch heads train`` arguments of the tiny run's heads."""
    return [
        *("heads", "train", *TINY_MODEL),
        *("--limit", str(limit), "--head-epochs", str(head_epochs), "--space", str(space)),
        *("--run", str(run_dir)),
    ]


def env(fault: str | None = None) -> dict[str, str]:
    """Environment of a CLI subprocess: one thread, wide console, optionally a fault armed."""
    out = {k: v for k, v in os.environ.items() if k != "EXITSEARCH_FAULT"}
    out.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", COLUMNS="200")
    if fault:
        out["EXITSEARCH_FAULT"] = fault
    return out


def start(args: Sequence[str], fault: str | None = None) -> subprocess.Popen[str]:
    """Start the real command; with ``fault``, through :mod:`fault_cli` with that fault armed."""
    # a fault needs the driver; otherwise the installed entry point itself, where there is one
    plain = [str(EXITSEARCH)] if EXITSEARCH.is_file() else [sys.executable, str(FAULT_CLI)]
    cmd = [sys.executable, str(FAULT_CLI), *args] if fault else [*plain, *args]
    return subprocess.Popen(
        cmd,
        env=env(fault),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Finished:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    signalled_at: Any = None


def finish(proc: subprocess.Popen[str], t0: float, timeout: float = 240) -> Finished:
    """Wait for ``proc``; one that hangs is killed (and its output kept) after ``timeout``."""
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
        err += f"\n[killed by the test after {timeout} s]"
    return Finished(proc.returncode, out, err, time.monotonic() - t0)


def run_cli(args: Sequence[str], fault: str | None = None, timeout: float = 240) -> Finished:
    t0 = time.monotonic()
    return finish(start(args, fault), t0, timeout)


def signal_when(
    proc: subprocess.Popen[str],
    condition: Callable[[], Any],
    sig: signal.Signals,
    timeout: float = 240,
    poll: float = 0.01,
) -> Finished:
    """Send ``sig`` to ``proc`` as soon as ``condition()`` returns something truthy.

    The value it returned is kept as ``signalled_at``; a process that ends first is an error
    of the test set-up (the kill point was never reached), reported by the caller.
    """
    t0 = time.monotonic()
    seen = None
    while proc.poll() is None and time.monotonic() - t0 < timeout:
        seen = condition()
        if seen:
            proc.send_signal(sig)
            break
        time.sleep(poll)
    done = finish(proc, t0, timeout)
    done.signalled_at = seen
    return done


# ----------------------------------------------------------------------- the run folder
def stage_folders(run_dir: Path) -> dict[str, set[str]]:
    cache = run_dir / schema.CACHE_DIR
    return {s: {p.name for p in cache.glob(f"{s}-*")} for s in STAGES}


def manifest_of(folder: Path) -> dict[str, Any]:
    return json.loads((folder / MANIFEST).read_text())


def heads_folder(run_dir: Path) -> Path:
    (folder,) = (run_dir / schema.CACHE_DIR).glob("heads-*")
    return folder


def checkpoint_epoch(run_dir: Path) -> int:
    """Epochs of head training kept: the crash-safe checkpoint's, every configured epoch once
    the stage is committed (its checkpoint is then removed), 0 before the first checkpoint."""
    cache = run_dir / schema.CACHE_DIR
    committed = [f for f in cache.glob("heads-*") if (f / MANIFEST).is_file()]
    if committed:
        return int(json.loads((committed[0] / "heads.json").read_text())["config"]["epochs"])
    found = list(cache.glob("heads-*/checkpoint.json"))
    return int(json.loads(found[0].read_text())["epoch"]) if found else 0


def finished_trials(db: Path) -> dict[int, tuple[str, tuple, tuple]]:
    """``number -> (state, params, values)`` of every COMPLETE or FAIL trial, read-only."""
    if not db.is_file():
        return {}
    con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10)
    try:
        rows = con.execute(
            "SELECT trial_id, number, state FROM trials WHERE state IN ('COMPLETE', 'FAIL')"
        ).fetchall()
        out = {}
        for trial_id, number, state in rows:
            params = con.execute(
                "SELECT param_name, param_value FROM trial_params WHERE trial_id = ? "
                "ORDER BY param_name",
                (trial_id,),
            ).fetchall()
            values = con.execute(
                "SELECT objective, value FROM trial_values WHERE trial_id = ? ORDER BY objective",
                (trial_id,),
            ).fetchall()
            out[number] = (state, tuple(params), tuple(values))
        return out
    finally:
        con.close()


def count_trials(db: Path, state: str = "COMPLETE") -> int:
    """Trials of ``state`` in the study (0 while it does not exist or is being created)."""
    if not db.is_file():
        return 0
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        try:
            return con.execute("SELECT count(*) FROM trials WHERE state = ?", (state,)).fetchone()[
                0
            ]
        finally:
            con.close()
    except sqlite3.Error:  # the tables are not created yet
        return 0


def partial_results(root: Path) -> list[str]:
    """Every result file under ``root`` that does not read back whole (empty list: none).

    JSON must parse, safetensors and .npz must load, committed stages must match their
    manifests, and the SQLite study must pass its integrity check. Temporary files of
    interrupted writes (``.*.tmp``) are not results and are listed by :func:`temp_files`.
    """
    problems = []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.name.endswith(".tmp"):
            continue
        try:
            if path.suffix == ".json":
                json.loads(path.read_text())
            elif path.suffix == ".safetensors":
                load_file(str(path))
            elif path.suffix == ".npz":
                with np.load(path, allow_pickle=False) as z:
                    for key in z.files:
                        z[key]
        except Exception as exc:
            problems.append(f"{path}: {type(exc).__name__}: {exc}")
    for folder in sorted((root / schema.CACHE_DIR).glob("*-*")):
        if (folder / MANIFEST).is_file():
            problem = StageStore(root / schema.CACHE_DIR).verify(folder)
            if problem:
                problems.append(f"{folder}: {problem}")
    db = root / schema.STUDY_DB
    if db.is_file():
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
        try:
            (verdict,) = con.execute("PRAGMA integrity_check").fetchone()
        finally:
            con.close()
        if verdict != "ok":
            problems.append(f"{db}: integrity check says {verdict}")
    return problems


def temp_files(root: Path) -> list[str]:
    """Temporary files and folders of interrupted writes left under ``root``."""
    return sorted(str(p.relative_to(root)) for p in root.rglob("*.tmp"))


def flip_byte(path: Path, offset: int | None = None) -> None:
    """Invert one byte of ``path`` (the middle one by default): damage a checksum must catch."""
    data = bytearray(path.read_bytes())
    i = len(data) // 2 if offset is None else offset
    data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def one_line_error(stderr: str) -> str:
    """The single ``error: ...`` line a user error must produce, or an AssertionError."""
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    assert lines[0].startswith("error: "), lines[0]
    return lines[0]


@dataclass
class Snapshot:
    """What the run folder held right after one interruption."""

    label: str
    returncode: int
    stderr: str
    epoch: int
    trials: dict[int, tuple[str, tuple, tuple]]
    problems: list[str]
    temps: list[str]
    extra: dict[str, Any] = field(default_factory=dict)


def snapshot(label: str, done: Finished, run_dir: Path) -> Snapshot:
    return Snapshot(
        label,
        done.returncode,
        done.stderr,
        checkpoint_epoch(run_dir),
        finished_trials(run_dir / schema.STUDY_DB),
        partial_results(run_dir),
        temp_files(run_dir),
        {
            "signalled_at": done.signalled_at,
            "running": count_trials(run_dir / schema.STUDY_DB, "RUNNING"),
        },
    )


def front(run_dir: Path) -> tuple[list[dict[str, Any]], Any]:
    """The front of ``pareto.json`` (configs, accuracies, costs) and the recommended id."""
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    return doc["front"], doc["recommended"]


def head_weights(run_dir: Path) -> dict[str, Any]:
    return load_file(str(heads_folder(run_dir) / "heads.safetensors"))


@contextmanager
def as_in_a_fresh_process() -> Iterator[None]:
    """Optuna's logging as an ``exitsearch`` process has it, inside the test process.

    The CLI replaces Optuna's handler with a ``NullHandler`` (cli/main.py) on the ``optuna``
    logger, which does not propagate; pytest's log capture adds its own handlers there, which
    would swallow what a user sees on stderr (Python's last resort prints warnings of a logger
    left with no handler at all, tracebacks included).
    """
    logger = logging.getLogger("optuna")
    level = optuna.logging.get_verbosity()
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(logger, "handlers", [logging.NullHandler()])
        optuna.logging.set_verbosity(optuna.logging.INFO)  # Optuna's default
        try:
            yield
        finally:
            optuna.logging.set_verbosity(level)


def kill_signal(sig: signal.Signals) -> int:
    """The return code of a process ended by ``sig`` (SIGINT is caught: exit status 130)."""
    return 130 if sig is signal.SIGINT else -sig
