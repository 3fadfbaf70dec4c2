"""``--help`` loads no heavy library: the command line imports torch, timm, Optuna and the
pipeline only when a command runs."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

HEAVY = ("torch", "timm", "optuna", "numpy", "fvcore", "ray", "onnxruntime", "matplotlib", "PIL")

COMMANDS = [
    [],
    ["run"],
    ["profile"],
    ["export"],
    ["bench"],
    ["finetune"],
    ["finetune-compare"],
    ["backbone"],
    ["backbone", "train"],
    ["backbone", "list"],
    ["heads", "train"],
    ["heads", "predict"],
    ["pause"],
    ["pause", "train"],
    ["pause", "search"],
    ["pause", "report"],
]

PROBE = """
import json, sys
from exitsearch_cli.main import app
try:
    app(args=sys.argv[1:] + ["--help"], prog_name="exitsearch")
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "heavy": [m for m in HEAVY if m in sys.modules]}))
"""


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "exitsearch")
def test_help_imports_no_heavy_library(command):
    out = subprocess.run(
        [sys.executable, "-c", f"HEAVY = {HEAVY!r}\n" + PROBE, *command],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr
    *help_text, last = out.stdout.strip().splitlines()
    result = json.loads(last)
    assert result["code"] in (0, None)
    assert "Usage: exitsearch" in "\n".join(help_text)
    assert result["heavy"] == [], f"`{' '.join(command)} --help` imported {result['heavy']}"


def test_a_running_command_silences_optunas_own_handler():
    # no longer done at import: the error wrapper of every command does it before the command
    import logging

    import optuna
    from exitsearch_cli._console import handle_errors

    optuna.logging.enable_default_handler()

    @handle_errors
    def command() -> list[logging.Handler]:
        return list(logging.getLogger("optuna").handlers)

    handlers = command()
    assert not [h for h in handlers if type(h) is logging.StreamHandler]
    assert any(isinstance(h, logging.NullHandler) for h in handlers)
