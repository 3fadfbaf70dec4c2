"""How long-running library work reports progress without printing.

Library functions take a :class:`Progress` and call it; the CLI passes one that draws rich
progress bars, tests and scripts pass nothing and get :class:`NullProgress`.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

__all__ = ["NullProgress", "Progress"]


@runtime_checkable
class Progress(Protocol):
    def start(self, task: str, total: int | None) -> None:
        """Called when a phase named ``task`` begins; ``total`` steps, or None if unknown."""

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        """Called after ``steps`` more steps of ``task``; ``info`` holds running figures."""

    def finish(self, task: str) -> None:
        """Called when ``task`` ends (also when it ends early)."""

    def log(self, message: str) -> None:
        """A one-line note worth showing to the user (a resumed stage, a skipped head)."""


class NullProgress:
    """Discards every report."""

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        pass
