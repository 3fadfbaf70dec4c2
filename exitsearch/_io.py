"""Atomic file writes and content hashes.

Every result file is written to a temporary name in its final folder and renamed into place, so
a reader (or a rerun after a crash) never sees a partial file.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import stat
import tempfile
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from exitsearch.errors import CacheError


def current_umask() -> int:
    """The process umask, read without changing it (Linux); os.umask's set-and-restore otherwise."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


__all__ = [
    "atomic_path",
    "atomic_write_bytes",
    "atomic_write_json",
    "atomic_write_text",
    "check_output_file",
    "check_output_folder",
    "current_umask",
    "derive_seed",
    "file_sha256",
    "load_safetensors",
    "read_json",
    "save_safetensors",
    "sha256_of",
]


def _is_special(path: Path) -> bool:
    """A device, FIFO or socket (``/dev/null``): something to write into, never to replace."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return False
    return not (stat.S_ISREG(mode) or stat.S_ISDIR(mode))


def check_output_file(path: str | os.PathLike[str], option: str) -> Path:
    """Check, before any work, that a result file can be written at ``path``.

    Called by commands that measure first and write last (``profile --save``, ``bench
    --json-out``), so that a wrong path costs nothing instead of the whole measurement.

    Raises:
        ConfigError: ``path`` is a folder, a file stands where one of its folders belongs, or
            its folder exists but cannot be written.
    """
    from exitsearch.errors import ConfigError

    p = Path(path)
    if str(path).strip() == "":
        raise ConfigError(f"{option} takes a file name, got an empty one")
    if _is_special(p):
        if not os.access(p, os.W_OK):
            raise ConfigError(f"{p}: cannot write there (no permission)")
        return p
    if p.is_dir():
        raise ConfigError(f"{p}: is a folder; {option} takes a file name")
    for parent in p.parents:
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(f"{parent}: is a file, where a folder of {option} {p} belongs")
            if not os.access(parent, os.W_OK | os.X_OK):
                raise ConfigError(f"{parent}: cannot write there (read-only or no permission)")
            break
    return p


def check_output_folder(path: str | os.PathLike[str], option: str) -> Path:
    """Check, before any work, that ``path`` is or can become a folder.

    Raises:
        ConfigError: ``path`` or one of the folders above it is a file.
    """
    from exitsearch.errors import ConfigError

    p = Path(path)
    for place in (p, *p.parents):
        if place.exists() or place.is_symlink():
            if not place.is_dir():
                raise ConfigError(
                    f"{place}: is a file, where a folder is expected ({option} {p}); move it or "
                    "choose another path"
                )
            break
    return p


@contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` if the block succeeds."""
    final = Path(path)
    if _is_special(final):
        # /dev/null, /dev/stdout, a FIFO: written in place. Renaming a file onto one would
        # replace the device itself (as root, /dev/null would become a regular file).
        yield final
        return
    final.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final.name}.", suffix=".tmp", dir=final.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600 and some writers recreate the file: set the mode last.
        os.chmod(tmp, 0o666 & ~current_umask())
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp, final)
    except OSError as exc:
        # A full disk while writing names no file, or the temporary one: name the result.
        if exc.errno is not None and exc.filename in (None, str(tmp), tmp):
            raise OSError(exc.errno, exc.strerror, str(final)) from exc
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def _json_default(obj: Any) -> Any:
    if isinstance(obj, np.integer):
        return int(obj)
    if isinstance(obj, np.floating):
        return float(obj)
    if isinstance(obj, np.ndarray):
        return _finite(obj.tolist())
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"{type(obj).__name__} is not JSON serialisable")


def _finite(obj: Any) -> Any:
    """Non-finite floats become None, so every file is strict JSON (jq, browsers)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if np.isfinite(obj) else None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def to_json(obj: Any, indent: int | None = None) -> str:
    """Strict JSON (non-finite floats as null), as every result file and ``--json`` write it;
    ``indent=None`` is compact."""
    separators = (",", ":") if indent is None else None
    return json.dumps(
        _finite(obj), indent=indent, separators=separators, default=_json_default, allow_nan=False
    )


def atomic_write_json(path: str | os.PathLike[str], obj: Any, indent: int | None = 2) -> None:
    """Write ``obj`` as JSON, whole or not at all (``indent=None``: compact, for large files)."""
    atomic_write_text(path, to_json(obj, indent) + "\n")


def read_json(path: str | os.PathLike[str]) -> Any:
    """Read a JSON file; a missing or unparsable file raises :class:`CacheError` naming it."""
    p = Path(path)
    try:
        return json.loads(p.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CacheError(f"{p}: file is missing") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise CacheError(f"{p}: not valid JSON ({exc})") from None


def save_safetensors(
    path: str | os.PathLike[str],
    tensors: Mapping[str, torch.Tensor],
    metadata: Mapping[str, str] | None = None,
) -> None:
    plain = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        try:
            save_file(plain, str(tmp), metadata=dict(metadata) if metadata else None)
        except SafetensorError as exc:
            # safetensors reports a failed write (a full disk) as its own error with the OS's
            # code in the text: hand it on as the OSError it is.
            code = re.search(r"os error (\d+)", str(exc))
            if code is None:
                raise
            errnum = int(code[1])
            raise OSError(errnum, os.strerror(errnum), str(path)) from None


def load_safetensors(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    p = Path(path)
    if not p.is_file():
        raise CacheError(f"{p}: file is missing")
    try:
        return load_file(str(p))
    except Exception:  # safetensors raises its own SafetensorError and OSError
        from exitsearch._mismatch import unreadable_safetensors

        raise CacheError(
            f"{p}: not a readable safetensors file ({unreadable_safetensors(p)})"
        ) from None


def sha256_of(*parts: Any) -> str:
    """A stable hash of JSON-able values, bytes and arrays (used as cache keys)."""
    h = hashlib.sha256()
    for part in parts:
        _feed(h, part)
    return h.hexdigest()


def _feed(h: Any, part: Any) -> None:
    if isinstance(part, bytes | bytearray | memoryview):
        h.update(b"b")
        h.update(bytes(part))
    elif isinstance(part, np.ndarray):
        h.update(f"a{part.dtype.str}{part.shape}".encode())
        h.update(np.ascontiguousarray(part).tobytes())
    elif isinstance(part, torch.Tensor):
        t = part.detach().cpu().contiguous()
        h.update(f"t{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    else:
        h.update(b"j")
        h.update(json.dumps(part, sort_keys=True, default=_json_default).encode())


def portable_path(path: str | os.PathLike[str] | None) -> str | None:
    """``path`` relative to the working directory, for files that are shared or committed: a
    result must not carry the absolute paths of the machine that wrote it."""
    if path is None:
        return None
    try:
        return os.path.relpath(path)
    except ValueError:  # another drive (Windows): the name is all that can be said
        return Path(path).name


def derive_seed(*parts: object) -> int:
    """A 31-bit seed from any values, stable across processes and machines."""
    digest = hashlib.sha256(":".join(str(p) for p in parts).encode()).digest()
    return int.from_bytes(digest[:4], "little") & 0x7FFFFFFF


def file_sha256(path: str | os.PathLike[str], chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(chunk), b""):
            h.update(block)
    return h.hexdigest()


def call_atomically(path: str | os.PathLike[str], writer: Callable[[Path], None]) -> None:
    """Run ``writer(tmp_path)`` and move the result onto ``path`` only if it returns."""
    with atomic_path(path) as tmp:
        writer(tmp)
