"""An exclusive lock on a run folder, so that two processes never write one run at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import shutil
from pathlib import Path
from types import TracebackType

from exitsearch.errors import RunFolderBusyError

__all__ = ["RunLock", "sweep_temp_files"]


def sweep_temp_files(folder: Path) -> int:
    """Remove temporary files that killed writers left (``.<name>.<random>.tmp``, see
    :func:`exitsearch._io.atomic_path`). Only safe while holding the folder's lock."""
    removed = 0
    for tmp in folder.rglob(".*.tmp"):
        if tmp.is_file():
            tmp.unlink(missing_ok=True)
            removed += 1
        elif tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
            removed += 1
    return removed


class RunLock:
    """``with RunLock(folder): ...`` holds an advisory lock on ``folder/.lock``.

    The operating system drops the lock when the process ends, also when it is killed, so a
    crashed run never leaves the folder locked.

    Raises:
        RunFolderBusyError: another live process holds the folder.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self._fh: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        self._created = not self.path.parent.exists()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 64, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise RunFolderBusyError(
                f"run folder {self.path.parent} is in use by {holder}; wait for it to finish "
                "or choose another --run"
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"process {os.getpid()}".encode(), 0)
        self._fh = fd
        sweep_temp_files(self.path.parent)
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._fh is not None:
            fcntl.flock(self._fh, fcntl.LOCK_UN)
            os.close(self._fh)
            self._fh = None
            # A folder this lock created and nothing else wrote into (the command failed before
            # any work) is removed again, so a typo leaves no empty run folder behind.
            folder = self.path.parent
            if self._created and [p.name for p in folder.iterdir()] == [".lock"]:
                self.path.unlink(missing_ok=True)
                with contextlib.suppress(OSError):
                    folder.rmdir()
