"""Stage artifacts keyed by a content hash of their inputs, with checksummed manifests.

Each stage writes into ``<run>/cache/<stage>-<key>/``; the stage is complete when its
``manifest.json`` exists and every file it lists still has the recorded SHA-256. A rerun reuses a
complete stage, resumes an incomplete one (stages checkpoint inside their folder), and recomputes
a corrupted one after saying so. Changing any input changes the key, so a stale artifact is never
reused.
"""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from exitsearch._io import atomic_write_json, file_sha256, read_json
from exitsearch.errors import CacheError
from exitsearch.progress import NullProgress, Progress

__all__ = ["MANIFEST", "StageStore"]

MANIFEST = "manifest.json"


class StageStore:
    """The cache folder of one run."""

    def __init__(self, root: str | Path, progress: Progress | None = None) -> None:
        self.root = Path(root)
        self.progress = progress or NullProgress()

    def folder(self, stage: str, key: str) -> Path:
        return self.root / f"{stage}-{key[:16]}"

    def lookup(self, stage: str, key: str) -> Path | None:
        """The stage's folder if complete and intact; a damaged one is reported and cleared."""
        folder = self.folder(stage, key)
        if not (folder / MANIFEST).is_file():
            return None
        problem = self.verify(folder)
        if problem is None:
            return folder
        self.progress.log(f"{stage}: cached artifact is damaged ({problem}); recomputing")
        self.discard(stage, key)
        return None

    def verify(self, folder: Path) -> str | None:
        """None if every file of the manifest is present with its checksum, else what is wrong."""
        try:
            manifest = read_json(folder / MANIFEST)
            files = dict(manifest["files"])
        except (CacheError, KeyError, TypeError) as exc:
            return f"manifest unreadable: {exc}"
        for name, digest in files.items():
            path = folder / name
            if not path.is_file():
                return f"{name} is missing"
            if file_sha256(path) != digest:
                return f"{name} does not match its checksum"
        return None

    def commit(
        self, stage: str, key: str, files: Iterable[str], meta: dict[str, Any] | None = None
    ) -> Path:
        """Record the stage complete: checksums of ``files`` (relative to its folder) + ``meta``."""
        folder = self.folder(stage, key)
        manifest = {
            "stage": stage,
            "key": key,
            "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "files": {name: file_sha256(folder / name) for name in sorted(set(files))},
            "meta": meta or {},
        }
        atomic_write_json(folder / MANIFEST, manifest)
        return folder

    def meta(self, folder: Path) -> dict[str, Any]:
        return dict(read_json(folder / MANIFEST).get("meta", {}))

    def complete(self, stage: str) -> Iterator[tuple[Path, dict[str, Any]]]:
        """``(folder, manifest)`` of every complete folder of ``stage``, by name; intact or not
        is left to :meth:`verify` (it reads every file)."""
        for manifest in sorted(self.root.glob(f"{stage}-*/{MANIFEST}")):
            try:
                doc = read_json(manifest)
            except CacheError:
                continue
            if isinstance(doc, dict) and doc.get("stage") == stage:
                yield manifest.parent, doc

    def discard(self, stage: str, key: str) -> None:
        shutil.rmtree(self.folder(stage, key), ignore_errors=True)
