"""Fixtures of the round-two fault cases: a finished tiny run with its bundle, the user's files.

The tiny run is trained once per session (about 15 s) and copied into each case that alters
it; every case runs with the user's own files of :mod:`fault_user_files` around and inside its
run folder, and fails at teardown if one of them changed.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
from exitsearch_cli.main import app
from fault_user_files import UserTree
from fault_world import SPACE, TINY_MODEL
from typer.testing import CliRunner


@dataclass
class TinyRun:
    root: Path
    data_dir: Path
    space: Path
    run_dir: Path  # a finished run (never altered: cases copy it)
    bundle: Path  # its recommended configuration, exported

    def run_args(self, run_dir: Path, *extra: str, budget: str = "70%") -> list[str]:
        """The tiny ``run`` on the small IDX copy; ``extra`` comes last."""
        args = ["run", *TINY_MODEL, "--limit", "200", "--head-epochs", "1", "--n-trials", "10"]
        args += ["--run", str(run_dir), "--data-dir", str(self.data_dir)]
        if "--space" not in extra:
            args += ["--space", str(self.space)]
        if "--budget" not in extra:
            args += ["--budget", budget]
        return [*args, *extra]

    def heads_args(self, run_dir: Path, *extra: str) -> list[str]:
        args = ["heads", "train", *TINY_MODEL, "--limit", "200", "--head-epochs", "1"]
        args += ["--run", str(run_dir), "--data-dir", str(self.data_dir)]
        return [*args, "--space", str(self.space), *extra]

    def copy_run(self, dest: Path) -> Path:
        """The finished run copied to ``dest`` (merged into what is there: the user's files)."""
        shutil.copytree(self.run_dir, dest, dirs_exist_ok=True)
        return dest


def invoke(args: list[str]):  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return CliRunner().invoke(app, args)


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
