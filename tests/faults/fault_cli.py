"""Run the real ``exitsearch`` command with one fault armed: a signal at an exact point.

Used as a script by the fault-injection tests (``python fault_cli.py ARGS...``), never imported
by pytest. ``EXITSEARCH_FAULT=PATTERN:N:SIGNAL:WHEN`` makes the process send itself ``SIGNAL``
(``KILL``, ``INT`` or ``TERM``; ``BUG`` raises an exception exitsearch does not expect instead) at the ``N``-th ``os.replace`` onto a file or folder whose name matches the
glob ``PATTERN``: ``before`` the rename (a write cut in the middle, its temporary copy already
complete on disk) or ``after`` it (the file in place, the code after it not yet run). Every
result file of exitsearch is put in place with ``os.replace`` (``exitsearch._io``,
``exitsearch.export.bundle``), so these are exactly the points where a partial result could leak.

Nothing else of the command is changed.
"""

from __future__ import annotations

import fnmatch
import os
import signal
import sys
from pathlib import Path

_SIGNALS = {"KILL": signal.SIGKILL, "INT": signal.SIGINT, "TERM": signal.SIGTERM}
BUG = "BUG"  # instead of a signal: raise an exception exitsearch does not expect (a bug)


class InjectedBug(RuntimeError):
    """What ``BUG`` raises: an exception no part of exitsearch handles on purpose."""


def arm(spec: str) -> None:
    pattern, nth, sig_name, when = spec.split(":")
    target = int(nth)
    sig = None if sig_name == BUG else _SIGNALS[sig_name]
    if when not in ("before", "after"):
        raise SystemExit(f"EXITSEARCH_FAULT: WHEN must be before or after, got {when!r}")
    real_replace = os.replace
    seen = 0

    def replace(src, dst, *args, **kwargs):  # type: ignore[no-untyped-def]
        nonlocal seen
        hit = False
        if fnmatch.fnmatch(Path(os.fsdecode(dst)).name, pattern):
            seen += 1
            hit = seen == target
        if hit and when == "before":
            fire()
        result = real_replace(src, dst, *args, **kwargs)
        if hit and when == "after":
            fire()
        return result

    def fire() -> None:
        if sig is None:
            raise InjectedBug(f"injected at os.replace onto {pattern} #{target}")
        os.kill(os.getpid(), sig)

    os.replace = replace


def main() -> None:
    # As run from a terminal: a test session started in the background inherits SIGINT ignored,
    # and Python then installs no KeyboardInterrupt handler of its own.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    spec = os.environ.get("EXITSEARCH_FAULT")
    if spec:
        arm(spec)
    from exitsearch_cli.main import app

    app(args=sys.argv[1:], prog_name="exitsearch")


if __name__ == "__main__":
    main()
