"""The finished tiny run that the round-two fault cases share, and how they invoke the CLI.

A module of its own (not conftest.py, whose name every test folder shares) so that test modules
can import it in any order of the whole suite.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from exitsearch_cli.main import app
from fault_world import TINY_MODEL
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
