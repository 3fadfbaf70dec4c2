"""Optuna storage by URL or path: SQLite in the run folder, a journal file, or an RDB server."""

from __future__ import annotations

import json
import sqlite3
import time
import warnings
from pathlib import Path

import optuna
import sqlalchemy.exc
from optuna.storages import BaseStorage, JournalStorage, RDBStorage
from optuna.storages.journal import JournalFileBackend
from sqlalchemy import event

from exitsearch._redact import redact
from exitsearch.errors import ConfigError

__all__ = ["check_storage", "open_storage", "storage_url"]


def _sqlite_pragmas(dbapi_connection: sqlite3.Connection, _record: object) -> None:
    dbapi_connection.execute("PRAGMA synchronous=NORMAL")


def _open_server(url: str, attempts: int = 5) -> RDBStorage:
    """A database server shared by several processes or machines.

    ``postgresql://`` URLs are routed to psycopg2 (the driver exitsearch installs). Processes
    that open a fresh database at the same moment race to create Optuna's tables; the loser sees
    an integrity error and simply retries once the tables exist. Trials record heartbeats, so a
    trial of a dead worker is failed by Optuna while live workers' trials are left alone.
    """
    if url.startswith("postgresql://"):
        url = "postgresql+psycopg2://" + url.removeprefix("postgresql://")
    for attempt in range(attempts):
        try:
            with warnings.catch_warnings():  # heartbeats are "experimental": not the user's news
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                return RDBStorage(url, heartbeat_interval=10, grace_period=30)
        except sqlalchemy.exc.IntegrityError:
            if attempt == attempts - 1:
                raise
            time.sleep(0.2 * (attempt + 1))
    raise AssertionError("unreachable")


def storage_url(spec: str | Path) -> str:
    """``study.db`` -> ``sqlite:///study.db``; URLs and journal files pass through."""
    text = str(spec)
    if "://" in text or text.endswith((".log", ".jsonl")):
        return text
    return f"sqlite:///{Path(text).resolve()}"


_SQLITE_MAGIC = b"SQLite format 3\x00"


def _check_storage_file(path: Path, journal: bool) -> None:
    """Refuse, before anything is written, a file that is neither Optuna's nor SQLite's.

    An empty or missing file is fine (a new study); a folder, or a file of the user's that
    holds anything else (a text log, notes), is never appended to or overwritten.
    """
    if path.is_dir():
        raise ConfigError(f"{path}: is a folder; --storage takes a file (.db, .log) or a URL")
    if not path.exists() or path.stat().st_size == 0:
        return
    what = "an Optuna journal" if journal else "an Optuna SQLite database"
    try:
        with open(path, "rb") as fh:
            head = fh.readline(1 << 16) if journal else fh.read(len(_SQLITE_MAGIC))
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read the storage file ({exc.strerror})") from None
    if journal:
        try:
            record = json.loads(head)
            ok = isinstance(record, dict) and "op_code" in record
        except ValueError:
            ok = False
    else:
        ok = head == _SQLITE_MAGIC
        if ok:
            tables = _sqlite_tables(path)
            if tables and not tables & {"studies", "alembic_version"}:
                raise ConfigError(
                    f"{path}: a SQLite database of another program (tables: "
                    f"{', '.join(sorted(tables)[:5])}); exitsearch adds no tables to it, so "
                    "choose another --storage file (or a new name)"
                )
    if not ok:
        raise ConfigError(
            f"{path}: exists and is not {what}; exitsearch writes into no other file, so "
            "choose another --storage file (or a new name)"
        )


def _sqlite_tables(path: Path) -> set[str]:
    """The tables of a SQLite file, read-only; empty when it cannot be read (a damaged study
    is reported when it is opened)."""
    try:
        con = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=10)
        try:
            rows = con.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        finally:
            con.close()
    except sqlite3.Error:
        return set()
    return {str(name) for (name,) in rows}


def check_storage(spec: str | Path) -> None:
    """Check a storage before any work that precedes the search.

    A file is read, never written: it must be missing, empty, an Optuna journal, or a SQLite
    database that holds an Optuna study or nothing. A database server is connected to, so that a
    wrong URL or an unreachable server fails before heads are trained.

    Raises:
        ConfigError: ``spec`` names a folder, a file of another kind or program (exitsearch never
            writes into a user's other files), or a server that cannot be reached.
    """
    url = storage_url(spec)
    if "://" not in url:
        _check_storage_file(Path(url), journal=True)
    elif url.startswith("sqlite:///"):
        _check_storage_file(Path(url.removeprefix("sqlite:///")), journal=False)
    else:
        storage = open_storage(spec)
        engine = getattr(storage, "engine", None)
        if engine is not None:
            engine.dispose()


def open_storage(spec: str | Path) -> BaseStorage:
    """Open (creating if needed) the storage that ``spec`` names.

    * a path ending in ``.db`` / ``.sqlite`` or a ``sqlite:///`` URL: SQLite, switched to
      write-ahead logging so that readers never block the search;
    * a path ending in ``.log`` / ``.jsonl``: Optuna's journal file (several local processes);
    * ``postgresql://...``, ``mysql://...``: a database server shared by many machines.

    Raises:
        ConfigError: the storage cannot be opened.
    """
    url = storage_url(spec)
    if "://" not in url:
        _check_storage_file(Path(url), journal=True)
    elif url.startswith("sqlite:///"):
        _check_storage_file(Path(url.removeprefix("sqlite:///")), journal=False)
    try:
        if url.endswith((".log", ".jsonl")) and "://" not in url:
            Path(url).parent.mkdir(parents=True, exist_ok=True)
            return JournalStorage(JournalFileBackend(url))
        if url.startswith("sqlite:///"):
            path = Path(url.removeprefix("sqlite:///"))
            path.parent.mkdir(parents=True, exist_ok=True)
            with sqlite3.connect(path) as con:
                con.execute("PRAGMA journal_mode=WAL")
            storage = RDBStorage(url, engine_kwargs={"connect_args": {"timeout": 60}})
            # In WAL mode, synchronous=NORMAL skips the fsync at each commit: a committed trial
            # survives a killed process (what resuming needs), not a power cut, and the search
            # runs several times faster.
            event.listen(storage.engine, "connect", _sqlite_pragmas)
            storage.engine.dispose()
            return storage
        return _open_server(url)
    except (
        optuna.exceptions.StorageInternalError,
        sqlite3.Error,
        OSError,
        ValueError,
        ImportError,
        sqlalchemy.exc.SQLAlchemyError,
    ) as exc:
        detail = redact(" ".join(str(exc).split()))[:300]
        raise ConfigError(f"cannot open Optuna storage {redact(url)}: {detail}") from None
