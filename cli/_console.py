"""Console, rich progress bars and the mapping from library errors to exit codes."""

from __future__ import annotations

import functools
import shlex
import sys
from collections.abc import Callable
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

from exitsearch.errors import ExitSearchError

__all__ = ["RichProgress", "console", "err_console", "handle_errors", "invocation"]

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])

USER_ERROR = 2


def handle_errors(fn: F) -> F:
    """Turn library errors into one line on stderr and exit status 2; Ctrl-C into status 130."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except ExitSearchError as exc:
            err_console.print(
                f"[bold red]error:[/] {_one_line(exc)}", highlight=False, soft_wrap=True
            )
            raise typer.Exit(code=USER_ERROR) from None
        except KeyboardInterrupt:
            err_console.print("interrupted; finished work is kept, rerun the command to resume")
            raise typer.Exit(code=130) from None

    return wrapper  # type: ignore[return-value]


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())


def invocation() -> str:
    """The command line as typed, for recording how an artifact was made."""
    return "exitsearch " + " ".join(shlex.quote(a) for a in sys.argv[1:])


class RichProgress:
    """Implements :class:`exitsearch.progress.Progress` with rich progress bars."""

    def __init__(self, enabled: bool = True) -> None:
        self._progress = Progress(
            TextColumn("[bold]{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            TextColumn("{task.fields[info]}"),
            console=err_console,
            disable=not enabled,
            transient=False,
        )
        self._tasks: dict[str, Any] = {}

    def __enter__(self) -> RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, task: str, total: int | None) -> None:
        self._tasks[task] = self._progress.add_task(escape(task), total=total, info="")

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        if task not in self._tasks:
            self.start(task, None)
        text = "  ".join(
            f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in info.items()
        )
        self._progress.update(self._tasks[task], advance=steps, info=escape(text))

    def finish(self, task: str) -> None:
        # A bar that ended early (early stopping, an interruption) stays where it stopped.
        tid = self._tasks.pop(task, None)
        if tid is not None:
            self._progress.stop_task(tid)

    def log(self, message: str) -> None:
        self._progress.console.print(escape(message), highlight=False)
