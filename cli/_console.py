"""Console, rich progress bars and the mapping from library errors to exit codes."""

from __future__ import annotations

import errno
import functools
import os
import shlex
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import FrameType
from typing import Any, TypeVar

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from typer.core import TyperGroup
from typer.exceptions import TyperException

from exitsearch._redact import redact
from exitsearch.errors import ConfigError, ExitSearchError

__all__ = [
    "OneLineErrorGroup",
    "RichProgress",
    "console",
    "err_console",
    "handle_errors",
    "invocation",
    "print_error",
    "raise_terminated",
    "set_debug",
]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

USER_ERROR = 2
INTERNAL_ERROR = 1
TERMINATED = 143  # 128 + SIGTERM, what a shell reports for a process SIGTERM ended


DEBUG_ENV = "EXITSEARCH_DEBUG"
_debug = False


def set_debug(enabled: bool) -> None:
    """``--debug``: let errors through with their traceback instead of one line."""
    global _debug
    _debug = enabled


def debug_enabled() -> bool:
    return _debug or os.environ.get(DEBUG_ENV, "").strip().lower() not in ("", "0", "false", "no")


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C would be, so that it stops the command the same clean way."""


def raise_terminated(signum: int, frame: FrameType | None) -> None:
    raise Terminated


def quiet_optuna() -> None:
    """Failed trials are recorded in the study and summarised by the commands; Optuna's own
    handler would print a traceback for each (and without any handler Python's last resort
    would). Called when a command runs, not at import: ``--help`` never loads Optuna."""
    import logging

    import optuna

    optuna.logging.disable_default_handler()
    # SQLAlchemy (Optuna's storage) logs, with a traceback, a connection it could not reset
    # after Ctrl-C or SIGTERM cut a query short; the command already says it was interrupted.
    for name in ("optuna", "sqlalchemy"):
        logger = logging.getLogger(name)
        if not any(isinstance(h, logging.NullHandler) for h in logger.handlers):
            logger.addHandler(logging.NullHandler())


def handle_errors(fn: F) -> F:
    """Turn every error into one line on stderr and a non-zero exit status.

    Library errors (and what the operating system refuses: a full disk, a read-only folder, a
    file where a folder belongs) exit with 2; Ctrl-C with 130 and SIGTERM with 143, both after
    saying that the finished work is kept; anything else is a bug, reported in one line that
    says how to see its traceback (``--debug`` or ``EXITSEARCH_DEBUG=1``), exit status 1.
    """

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        restore_signals = _catch_sigterm()
        try:
            check_shared_options(kwargs)
            quiet_optuna()
            return fn(*args, **kwargs)
        except (typer.Exit, typer.Abort, TyperException):
            raise
        except Terminated:
            err_console.print("terminated; finished work is kept, rerun the command to resume")
            raise typer.Exit(code=TERMINATED) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished work is kept, rerun the command to resume")
            raise typer.Exit(code=130) from None
        except ExitSearchError as exc:
            if debug_enabled():
                raise
            print_error(message_of(exc))
            raise typer.Exit(code=USER_ERROR) from None
        except OSError as exc:
            if debug_enabled():
                raise
            print_error(describe_os_error(exc))
            raise typer.Exit(code=USER_ERROR) from None
        except MemoryError:
            if debug_enabled():
                raise
            print_error(
                "out of memory; use smaller batch sizes or --limit, or a machine with more memory"
            )
            raise typer.Exit(code=USER_ERROR) from None
        except Exception as exc:
            if debug_enabled():
                raise
            text = _one_line(message_of(exc))
            text = text if len(text) <= 200 else text[:200] + "..."
            print_error(
                f"unexpected {type(exc).__name__}: {text} -- a bug in exitsearch, not in your "
                f"input; rerun with --debug (exitsearch --debug COMMAND ...) or {DEBUG_ENV}=1 to "
                "see the traceback"
            )
            raise typer.Exit(code=INTERNAL_ERROR) from None
        finally:
            restore_signals()

    return wrapper  # type: ignore[return-value]


SEED_MAX = 2**32 - 1  # numpy's generators take seeds in 0 .. 2**32 - 1
_SEED_OPTIONS = ("seed", "split_seed")


def check_shared_options(params: dict[str, Any]) -> None:
    """Options several commands share, checked once for all before any work.

    Seeds must lie in 0 .. 2**32 - 1 (what numpy's and torch's generators take, so a seed that
    works for the split also works for the heads trained later); ``--head-shards`` needs a
    cluster to shard over.

    Raises:
        ConfigError: a seed out of range, or ``--head-shards`` below 1 or without a cluster.
    """
    for name in _SEED_OPTIONS:
        value = params.get(name)
        if value is not None and not 0 <= value <= SEED_MAX:
            raise ConfigError(
                f"--{name.replace('_', '-')} must lie in 0..{SEED_MAX} (2**32 - 1), got {value}"
            )
    shards = params.get("head_shards")
    if shards is not None:
        if shards < 1:
            raise ConfigError(f"--head-shards takes a positive integer, got {shards}")
        if "ray_address" in params and not params["ray_address"]:
            raise ConfigError(
                "--head-shards splits head training over a Ray cluster, and no cluster is given: "
                "add --ray-address HOST:PORT (or set RAY_ADDRESS), or leave --head-shards out"
            )


def _catch_sigterm() -> Callable[[], None]:
    """Route SIGTERM to :class:`Terminated` for the command's duration; returns what puts the
    old handler back.

    Python cannot raise an exception out of a garbage-collector callback or a ``__del__``: a
    signal that lands in one (SQLAlchemy runs weakref callbacks while Optuna works) would be
    printed as "Exception ignored" and the command would run on. The unraisable hook sends such
    a signal again, so that it is raised in ordinary code a moment later.
    """
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    global _previous_unraisablehook
    hook = sys.unraisablehook
    if hook is not _redeliver_interrupts:
        _previous_unraisablehook = hook
        sys.unraisablehook = _redeliver_interrupts
    handler = signal.signal(signal.SIGTERM, raise_terminated)

    def restore() -> None:
        signal.signal(signal.SIGTERM, handler)
        sys.unraisablehook = hook

    return restore


_previous_unraisablehook = sys.unraisablehook
_REDELIVER_AFTER_S = 0.05


def _redeliver_interrupts(unraisable: Any) -> None:
    """Send SIGTERM or SIGINT again when its exception was swallowed; let anything else through.

    The signal is sent again from another thread, a moment later: sent from here, its handler
    would run (and raise) inside this hook, which swallows exceptions too. Should it land in
    another such place, it comes back here and is sent again.
    """
    exc = unraisable.exc_value
    if isinstance(exc, Terminated):
        signum = signal.SIGTERM
    elif isinstance(exc, KeyboardInterrupt) and callable(signal.getsignal(signal.SIGINT)):
        signum = signal.SIGINT
    else:
        _previous_unraisablehook(unraisable)
        return
    timer = threading.Timer(_REDELIVER_AFTER_S, os.kill, args=(os.getpid(), signum))
    timer.daemon = True
    timer.start()


_OS_ERRORS = {
    errno.ENOSPC: "no space left on the device",
    errno.EDQUOT: "disk quota exceeded",
    errno.EFBIG: "file too large for the file system or the limits of this process",
    errno.EROFS: "read-only file system",
    errno.EACCES: "permission denied",
    errno.EPERM: "operation not permitted",
    errno.EISDIR: "is a folder, where a file is expected",
    errno.ENOTDIR: "a file is in the way, where a folder is expected",
    errno.EEXIST: "already exists",
    errno.ENOENT: "no such file or folder",
    errno.ENAMETOOLONG: "name too long",
}
_OS_ADVICE = {
    errno.ENOSPC: "; free some space (or write elsewhere) and rerun: finished work is kept",
    errno.EDQUOT: "; free some space (or write elsewhere) and rerun: finished work is kept",
    errno.EROFS: "; write elsewhere (the command's --out or --run) or make it writable",
    errno.EACCES: "; write elsewhere (the command's --out or --run) or make it writable",
}


def describe_os_error(exc: OSError) -> str:
    """One line for what the operating system refused: the path, what went wrong, what to do."""
    what = _OS_ERRORS.get(exc.errno or 0) or (exc.strerror or type(exc).__name__).lower()
    where = exc.filename if exc.filename is not None else None
    if exc.errno in (errno.EEXIST, errno.ENOTDIR) and where is not None:
        # mkdir onto a file, or a path through one: name the file that is in the way
        blocker = next(
            (
                p
                for p in (Path(os.fsdecode(where)), *Path(os.fsdecode(where)).parents)
                if p.exists() and not p.is_dir()
            ),
            None,
        )
        if blocker is not None:
            return (
                f"{blocker}: is a file, where a folder is expected; move it or choose another path"
            )
    text = f"{where}: {what}" if where is not None else f"{what}"
    if exc.filename2 is not None:
        text += f" (with {exc.filename2})"
    return text + _OS_ADVICE.get(exc.errno or 0, "")


_WORKER_TRACEBACK = "Original Traceback (most recent call last):"


def message_of(exc: BaseException) -> str:
    """The error's own message, also for one raised in a DataLoader worker process.

    torch re-raises a worker's exception as the same class with the worker's whole traceback
    as its text ("Caught DataError in DataLoader worker process 0. Original Traceback ...");
    its last line is the original ``module.Class: message``.
    """
    text = str(exc)
    if _WORKER_TRACEBACK not in text:
        return text
    last = [line for line in text.splitlines() if line.strip()][-1]
    prefix = f"{type(exc).__module__}.{type(exc).__qualname__}: "
    for head in (prefix, f"{type(exc).__qualname__}: "):
        if last.startswith(head):
            return last[len(head) :]
    return last


def print_error(message: str) -> None:
    """The one ``error:`` line; passwords of URLs in it are masked."""
    err_console.print(
        f"[bold red]error:[/] {escape(_one_line(redact(message)))}",
        highlight=False,
        soft_wrap=True,
    )


def _one_line(text: str) -> str:
    return " ".join(text.split())


def invocation() -> str:
    """The command line as typed (passwords masked), for recording how an artifact was made."""
    return "exitsearch " + " ".join(shlex.quote(redact(a)) for a in sys.argv[1:])


RICH_HELP_COLUMNS = 100
"""Narrower than this, ``--help`` is click's plain layout: typer's framed table of six columns
cut option names (``--head-train-lim``) and words of their help at 80 columns."""


def help_width() -> int:
    """The columns help is laid out in: typer's ``TERMINAL_WIDTH``, else the terminal's
    (``COLUMNS`` first; 80 when the output is not a terminal)."""
    fixed = os.environ.get("TERMINAL_WIDTH", "")
    return int(fixed) if fixed.isdigit() else shutil.get_terminal_size().columns


def plain_help(command: Any) -> None:
    """Lay out the help of ``command`` and every command under it as click does: one option
    per line, its help wrapped beside or below it, at any width."""
    command.rich_markup_mode = None
    for sub in getattr(command, "commands", {}).values():
        plain_help(sub)


class OneLineErrorGroup(TyperGroup):
    """The top-level command: a usage error (unknown option, a value out of range) is one
    ``error:`` line and exit status 2, like every other error, not a framed panel."""

    def main(  # type: ignore[override]
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        if help_width() < RICH_HELP_COLUMNS:
            plain_help(self)
        try:
            rv = super().main(
                args=args,
                prog_name=prog_name,
                complete_var=complete_var,
                standalone_mode=False,
                **extra,
            )
        except TyperException as exc:
            if not standalone_mode:
                raise
            ctx = getattr(exc, "ctx", None)
            if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
                typer.echo(ctx.get_help())  # the command's help, as typer shows it
                sys.exit(exc.exit_code)
            hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
            print_error(exc.format_message() + hint)
            sys.exit(exc.exit_code)
        except typer.Abort:
            if not standalone_mode:
                raise
            err_console.print("aborted")
            sys.exit(1)
        if not standalone_mode:
            return rv
        sys.exit(rv if isinstance(rv, int) else 0)


PLAIN_EVERY = 30.0


def plain_status(clock: list[float], now: float) -> str:
    """``12/40 steps, 1m05s elapsed, about 2m31s left`` from [start, last, done, total]."""
    start, _, done, total = clock
    elapsed = now - start
    text = f"{done:.0f}/{total:.0f}" if total else f"{done:.0f}"
    text += f" steps, {_duration(elapsed)} elapsed"
    if total and done:
        text += f", about {_duration(elapsed / done * (total - done))} left"
    return text


def _duration(seconds: float) -> str:
    m, s = divmod(int(seconds), 60)
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m" if h else (f"{m}m{s:02d}s" if m else f"{s}s")


class RichProgress:
    """Implements :class:`exitsearch.progress.Progress` with rich progress bars."""

    def __init__(self, enabled: bool = True) -> None:
        # Without a terminal (a log file, CI), rich would draw the bars once, at the end: a plain
        # line with the time left is printed at least every PLAIN_EVERY seconds instead, and one
        # when a task ends.
        self._plain = enabled and not err_console.is_terminal
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            disable=not enabled or self._plain,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}
        self._clock: dict[str, list[float]] = {}  # task -> [start, last line, done, total]
        self._info: dict[str, str] = {}  # task -> what its last step said
        self.logged: set[str] = set()  # the lines :meth:`log` printed (a summary skips them)

    def __enter__(self) -> RichProgress:
        # The live display starts with the first bar: a command that fails before any work
        # (a bad option) would otherwise print its empty display, a blank line, before the error.
        self._live = False
        return self

    def __exit__(self, *exc: object) -> None:
        for task in list(self._clock):  # where each task that did not finish stopped
            self.finish(task)
        if self._live:
            self._progress.stop()

    def start(self, task: str, total: int | None) -> None:
        if not getattr(self, "_live", True):
            self._progress.start()
            self._live = True
        self._tasks[task] = self._progress.add_task(escape(task), total=total, info="")
        now = time.monotonic()
        self._clock[task] = [now, now, 0.0, float(total or 0)]

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        if task not in self._tasks:
            self.start(task, None)
        text = "  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
        )
        self._progress.update(self._tasks[task], advance=steps, info=escape(text))
        if self._plain and task in self._clock:
            self._info[task] = text
            clock = self._clock[task]
            clock[2] += steps
            now = time.monotonic()
            if now - clock[1] >= PLAIN_EVERY and not (clock[3] and clock[2] >= clock[3]):
                clock[1] = now
                err_console.print(  # (the last step's is the line that finish prints)
                    escape(f"{task}: {plain_status(clock, now)} {text}"), highlight=False
                )

    def finish(self, task: str) -> None:
        # A bar that ended early (early stopping, an interruption) stays where it stopped.
        tid = self._tasks.pop(task, None)
        if tid is not None:
            self._progress.stop_task(tid)
        clock = self._clock.pop(task, None)
        if self._plain and clock is not None:
            now = time.monotonic()
            status = f"{clock[2]:.0f}/{clock[3]:.0f}" if clock[3] else f"{clock[2]:.0f}"
            info = self._info.pop(task, "")
            err_console.print(
                escape(f"{task}: {status} steps in {_duration(now - clock[0])} {info}".rstrip()),
                highlight=False,
            )

    def log(self, message: str) -> None:
        self._progress.console.print(escape(message), highlight=False)
        self.logged.add(message)
