"""Fixtures of the round-two fault cases: a finished tiny run with its bundle, the user's files.

The tiny run is trained once per session (about 15 s) and copied into each case that alters
it; every case runs with the user's own files of :mod:`fault_user_files` around and inside its
run folder, and fails at teardown if one of them changed.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from fault_tiny_run import TinyRun, invoke
from fault_user_files import UserTree
from fault_world import SPACE


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory: pytest.TempPathFactory, small_fmnist_dir: Path) -> TinyRun:
    root = tmp_path_factory.mktemp("round-two")
    space = root / "tiny.yaml"
    space.write_text(SPACE)
    done = TinyRun(root, small_fmnist_dir, space, root / "run", root / "bundle")
    result = invoke(done.run_args(done.run_dir))
    assert result.exit_code == 0, result.output
    result = invoke(["export", str(done.run_dir), "--out", str(done.bundle)])
    assert result.exit_code == 0, result.output
    return done


@pytest.fixture
def user_tree(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[UserTree]:
    """The user's files in ``tmp_path`` (run folder ``tmp_path/run``), checked after the case."""
    tree = UserTree(tmp_path).create()
    before = tree.fingerprint()
    yield tree
    after = tree.fingerprint()
    changed = {k: (before[k], after[k]) for k in before if before[k] != after[k]}
    assert not changed, f"the user's own files changed: {changed}"
