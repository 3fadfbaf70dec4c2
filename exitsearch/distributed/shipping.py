"""Getting a model folder to every node without a shared file system.

The driver packs a folder (a PAUMER model, an exported bundle) into one uncompressed tar held
in Ray's object store; a task unpacks it once per node into a cache folder named by the
content's SHA-256 and reuses it afterwards. The object reference is nested in a dataclass so
that Ray does not fetch the bytes for every task: only a node that lacks the folder reads them.
"""

from __future__ import annotations

import hashlib
import io
import os
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["CACHE_ENV", "ShippedFolder", "materialise", "pack_folder", "ship_folder"]

CACHE_ENV = "EXITSEARCH_NODE_CACHE"  # where nodes unpack shipped folders (default: a temp dir)
_DONE = ".exitsearch-complete"


@dataclass(frozen=True)
class ShippedFolder:
    """A folder in the object store: its content hash and the reference to its tar bytes."""

    sha256: str
    ref: Any  # ray.ObjectRef; nested here so that tasks do not fetch it unasked
    name: str = ""


def pack_folder(folder: str | Path) -> tuple[str, bytes]:
    """``(sha256, tar bytes)`` of the regular files under ``folder`` (sorted, stable headers).

    Raises:
        ConfigError: ``folder`` is not a folder.
    """
    root = Path(folder)
    if not root.is_dir():
        raise ConfigError(f"{root} is not a folder")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for path in sorted(p for p in root.rglob("*") if p.is_file()):
            info = tarfile.TarInfo(path.relative_to(root).as_posix())
            info.size = path.stat().st_size
            info.mode = 0o644
            with path.open("rb") as fh:
                tar.addfile(info, fh)
    data = buf.getvalue()
    return hashlib.sha256(data).hexdigest(), data


def ship_folder(folder: str | Path) -> ShippedFolder:
    """Pack ``folder`` and put it into the object store (needs a Ray connection)."""
    import ray

    sha, data = pack_folder(folder)
    return ShippedFolder(sha, ray.put(data), Path(folder).name)


def _cache_root() -> Path:
    return Path(os.environ.get(CACHE_ENV) or Path(tempfile.gettempdir()) / "exitsearch-node-cache")


def materialise(shipped: ShippedFolder) -> Path:
    """The folder on this node, unpacked from the object store the first time (on a worker)."""
    target = _cache_root() / shipped.sha256
    if (target / _DONE).is_file():
        return target
    import ray

    data = ray.get(shipped.ref)
    if hashlib.sha256(data).hexdigest() != shipped.sha256:
        raise ConfigError(f"shipped folder {shipped.name} arrived damaged (checksum differs)")
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{shipped.sha256[:12]}.", dir=target.parent))
    with tarfile.open(fileobj=io.BytesIO(data), mode="r") as tar:
        tar.extractall(tmp, filter="data")
    (tmp / _DONE).write_text(shipped.sha256)
    try:
        os.rename(tmp, target)
    except OSError:  # another worker of this node unpacked it first
        shutil.rmtree(tmp, ignore_errors=True)
    return target
