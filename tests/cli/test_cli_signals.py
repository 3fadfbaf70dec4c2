"""A signal whose exception Python has to swallow (it landed in a ``__del__`` or a garbage
collector callback) still stops the command."""

from __future__ import annotations

import gc
import os
import signal
import sys
import time

import pytest
import typer
from exitsearch_cli._console import TERMINATED, handle_errors


class _KillsOnCollection:
    """Sends SIGTERM from inside ``__del__``: the handler runs there, where a raise is lost."""

    def __del__(self) -> None:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(1000):  # give the handler a few bytecodes to run here, inside __del__
            pass


def _wait_for_signal() -> None:
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline:
        time.sleep(0.01)


def test_sigterm_swallowed_in_a_destructor_still_ends_the_command() -> None:
    reached_the_end = []
    hook_before = sys.unraisablehook
    handler_before = signal.getsignal(signal.SIGTERM)

    @handle_errors
    def command() -> None:
        obj = _KillsOnCollection()
        del obj
        gc.collect()
        _wait_for_signal()
        reached_the_end.append(True)

    with pytest.raises(typer.Exit) as stopped:
        command()
    assert stopped.value.exit_code == TERMINATED
    assert not reached_the_end
    assert sys.unraisablehook is hook_before  # both put back when the command ends
    assert signal.getsignal(signal.SIGTERM) is handler_before


def test_other_unraisable_errors_still_reach_the_previous_hook(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[BaseException] = []
    monkeypatch.setattr(sys, "unraisablehook", lambda u: seen.append(u.exc_value))

    class _FailsOnCollection:
        def __del__(self) -> None:
            raise ValueError("from a destructor")

    @handle_errors
    def command() -> None:
        obj = _FailsOnCollection()
        del obj
        gc.collect()

    command()
    assert [type(e) for e in seen] == [ValueError]
