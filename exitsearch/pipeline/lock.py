"""An exclusive lock on a run folder, so that two processes never write one run at once."""

from __future__ import annotations

import contextlib
import fcntl
import os
import re
import shutil
from pathlib import Path
from types import TracebackType

from exitsearch.errors import ConfigError, RunFolderBusyError
from exitsearch.report.schema import CACHE_DIR, EXPORT_DIR

__all__ = ["RunLock", "sweep_temp_files"]


# What :func:`tempfile.mkstemp` / ``mkdtemp`` make of ``prefix=".<name>."``, ``suffix=".tmp"``
# (exitsearch._io.atomic_path, exitsearch.export.bundle): eight characters of its alphabet.
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")
_STAGE_FOLDER = re.compile(r"^[a-z][a-z0-9_]*-[0-9a-f]{16}$")


def _own_temp_places(folder: Path) -> list[tuple[Path, bool]]:
    """``(place, recursive)`` for every place where exitsearch writes into a run folder."""
    places = [(folder, False), (folder / CACHE_DIR, False), (folder / EXPORT_DIR, False)]
    cache = folder / CACHE_DIR
    if cache.is_dir():
        places += [
            (stage, True)
            for stage in sorted(cache.iterdir())
            if stage.is_dir() and not stage.is_symlink() and _STAGE_FOLDER.match(stage.name)
        ]
    return places


def sweep_temp_files(folder: Path) -> int:
    """Remove temporary files that killed writers left (``.<name>.<random>.tmp``, see
    :func:`exitsearch._io.atomic_path`). Only safe while holding the folder's lock.

    Only names exitsearch itself makes, and only where it writes them: the run folder, its
    ``cache/`` and ``export/`` folders (not below them), and inside its cache's stage folders.
    A user's own ``.*.tmp`` file anywhere else in the run folder is left alone.
    """
    removed = 0
    for place, recursive in _own_temp_places(folder):
        if not place.is_dir() or place.is_symlink():
            continue
        for tmp in place.rglob(".*.tmp") if recursive else place.glob(".*.tmp"):
            if not _TEMP_NAME.match(tmp.name) or tmp.is_symlink():
                continue
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
        ConfigError: the folder's path is (or runs through) a file.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / ".lock"
        self._fh: int | None = None
        self._created = False

    def __enter__(self) -> RunLock:
        folder = self.path.parent
        blocker = next(
            (p for p in (folder, *folder.parents) if p.exists() and not p.is_dir()), None
        )
        if blocker is not None:
            raise ConfigError(
                f"{blocker}: is a file, where the run folder {folder} needs a folder; choose "
                "another --run"
            )
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
