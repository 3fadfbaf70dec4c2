"""The user's own files around and inside a run folder, and what the fault cases check of them.

Every case of ``test_fault_user_files.py`` and ``test_fault_cli_errors.py`` runs with this tree
in place (an autouse fixture) and fails if any of its files changed, moved or vanished: no
fault, however handled, may cost the user a file exitsearch did not write. The names include
hidden ``.tmp`` files at every depth (the run lock used to sweep them all), a folder of notes in
``export/`` and ``cache/``, and files next to the run folder.

Also the helpers that put a command in its own mount namespace, so that a full disk and a
read-only folder are real (a tiny tmpfs, a read-only bind mount), not simulated: ``unshare``
maps this user to root in a new user namespace, which is allowed for an unprivileged user on
the Linux kernels CI runs on; where it is not, those cases are skipped with the reason.
"""

from __future__ import annotations

import hashlib
import shlex
import shutil
import stat
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fault_world import FAULT_CLI, env

# relative to the case's folder; the run folder is ``run/``
USER_FILES: dict[str, bytes] = {
    "notes.txt": b"my notes next to the run\n",
    ".draft.tmp": b"a hidden temp-looking file of mine beside the run\n",
    "run/README.md": b"# what this run is for\n",
    "run/.mine.tmp": b"looks like a temp file, at the top of the run folder\n",
    "run/.plot.png.tmp": b"my half-finished plot\n",
    "run/analysis/.scratch.tmp": b"scratch\n",
    "run/analysis/deep/.cache.abcdefgh.tmp": b"named like exitsearch's temp files, elsewhere\n",
    "run/analysis/results.csv": b"a,b\n1,2\n",
    "run/cache/NOTES.txt": b"notes in the cache folder\n",
    "run/export/mine/model.txt": b"my own export\n",
    "run/export/.keep.tmp": b"keep me\n",
}


@dataclass
class UserTree:
    root: Path

    @property
    def run_dir(self) -> Path:
        return self.root / "run"

    def create(self) -> UserTree:
        for rel, data in USER_FILES.items():
            path = self.root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        return self

    def fingerprint(self) -> dict[str, tuple[str, int] | None]:
        """``path -> (sha256, mode)`` of every user file, None for one that is gone."""
        out: dict[str, tuple[str, int] | None] = {}
        for rel in USER_FILES:
            path = self.root / rel
            if not path.is_file() or path.is_symlink():
                out[rel] = None
                continue
            out[rel] = (
                hashlib.sha256(path.read_bytes()).hexdigest(),
                stat.S_IMODE(path.stat().st_mode),
            )
        return out


def expected_fingerprint(root: Path) -> dict[str, tuple[str, int] | None]:
    return UserTree(root).fingerprint()


# ------------------------------------------------------------------ mount namespaces
def namespaces_work() -> str | None:
    """None if ``unshare -rm`` can mount here, else why not (the reason a case is skipped)."""
    if not shutil.which("unshare"):
        return "no unshare(1)"
    probe = subprocess.run(
        ["unshare", "-rm", "sh", "-c", "mount -t tmpfs -o size=4k tmpfs /mnt || exit 3"],
        capture_output=True,
        text=True,
    )
    return None if probe.returncode == 0 else f"unshare -rm cannot mount: {probe.stderr.strip()}"


def run_in_namespace(
    setup: str, args: Sequence[str], after: str = "", timeout: float = 240
) -> subprocess.CompletedProcess[str]:
    """Run ``exitsearch ARGS`` after the shell ``setup`` (mounts) in a private mount namespace.

    ``after`` runs in the same namespace once the command ended (the mounts vanish with it), its
    output after a ``--after--`` line on stdout; the command's own exit status is printed as
    ``rc=N`` there.
    """
    cmd = shlex.join([sys.executable, str(FAULT_CLI), *args])
    script = f"set -e\n{setup}\nset +e\n{cmd}\nrc=$?\necho --after--\necho rc=$rc\n{after}\n"
    return subprocess.run(
        ["unshare", "-rm", "sh", "-c", script],
        env=env(),
        capture_output=True,
        text=True,
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
