"""The run-folder lock: one writer at a time, and never a lock left behind by a dead process.

``flock`` locks belong to an open file description, not to a process: two ``RunLock`` objects
in one process open ``.lock`` twice and so conflict like two processes do (checked below).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from exitsearch.errors import RunFolderBusyError
from exitsearch.pipeline.lock import RunLock

HOLDER = textwrap.dedent(
    """
    import sys, time
    from exitsearch.pipeline.lock import RunLock
    with RunLock(sys.argv[1]):
        print("locked", flush=True)
        time.sleep(120)
    """
)


@pytest.fixture
def holder(tmp_path) -> Iterator[subprocess.Popen]:
    """Another process holding the lock on ``tmp_path / 'run'``."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path / "run")],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        assert proc.stdout.readline().strip() == "locked"
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=30)


def test_lock_creates_the_folder_and_names_its_holder(tmp_path):
    run = tmp_path / "new" / "run"
    with RunLock(run) as lock:
        assert lock.path == run / ".lock"
        assert (run / ".lock").read_text() == f"process {os.getpid()}"


def test_two_locks_in_one_process_conflict(tmp_path):
    with RunLock(tmp_path), pytest.raises(RunFolderBusyError) as info:
        RunLock(tmp_path).__enter__()
    assert f"process {os.getpid()}" in str(info.value)
    assert str(tmp_path) in str(info.value)
    with RunLock(tmp_path):  # released on exit
        pass


def test_lock_is_released_when_the_block_raises(tmp_path):
    with pytest.raises(ValueError), RunLock(tmp_path):
        raise ValueError("boom")
    with RunLock(tmp_path):
        pass


def test_another_process_holds_the_folder_until_it_is_killed(tmp_path, holder):
    run: Path = tmp_path / "run"
    with pytest.raises(RunFolderBusyError) as info, RunLock(run):
        pass
    message = str(info.value)
    assert f"in use by process {holder.pid}" in message
    assert "--run" in message
    assert "\n" not in message
    # a failed attempt does not disturb the holder's record
    assert (run / ".lock").read_text() == f"process {holder.pid}"

    holder.send_signal(signal.SIGKILL)
    holder.wait(timeout=30)
    assert holder.returncode == -signal.SIGKILL
    # the operating system dropped the dead process's lock: no stale lock to clean up
    with RunLock(run):
        assert (run / ".lock").read_text() == f"process {os.getpid()}"
