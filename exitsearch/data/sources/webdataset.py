"""Tar shards in the WebDataset layout, read lazily with random access.

A shard is an uncompressed ``.tar`` whose members are grouped into samples by key (the member's
path up to the first dot of its file name): ``000017.jpg`` + ``000017.cls`` is one sample, its
image and its integer label. ``--data`` takes one ``.tar`` or a folder of ``*.tar`` shards,
optionally with ``train/``, ``val/`` and ``test/`` sub-folders of shards (as for image folders);
a ``classes.txt`` beside the shards names the classes, one per line.

The shards are indexed once (member headers and the small label members only); an image is read
with one ``pread`` at its offset, so any sample can be read by any DataLoader worker in any order.
"""

from __future__ import annotations

import os
import tarfile
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch._io import sha256_of
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.samples import Samples, check_labels, open_image
from exitsearch.data.sources import SourceData, register_source
from exitsearch.errors import DataError

__all__ = ["TarShardDataset", "load_shards"]

_IMAGE_EXTS = ("jpg", "jpeg", "png", "webp", "bmp", "ppm", "pgm", "tif", "tiff")
_LABEL_EXTS = ("cls", "cls2", "label", "class")


class TarShardDataset(Samples):
    """Samples of WebDataset tar shards: key, shard, byte offset and size of each image."""

    def __init__(
        self,
        shards: tuple[str, ...],
        keys: np.ndarray,
        where: np.ndarray,
        y: np.ndarray,
        classes: tuple[str, ...],
        origin: str,
        stats: tuple[tuple[int, int], ...],
        preprocess: Preprocess | None = None,
    ) -> None:
        self.shards = shards
        self.keys = keys
        self.where = where  # int64 rows: shard index, offset, size
        self.y = y
        self.classes = classes
        self.origin = origin
        self.stats = stats
        self.preprocess = preprocess

    def ids(self) -> np.ndarray:
        return self.keys.astype(str)

    def read(self, i: int) -> Any:
        shard, offset, size = (int(v) for v in self.where[i])
        fd = self._fd(shard)
        data = os.pread(fd, size, offset)
        if len(data) != size:
            raise DataError(
                f"{self.shards[shard]}: truncated shard (sample {self.keys[i].decode()})"
            )
        return open_image(data, f"{self.shards[shard]}:{self.keys[i].decode()}")

    def _fd(self, shard: int) -> int:
        fds = self.__dict__.setdefault("_fds", {})
        if fds.get("pid") != os.getpid():  # a worker process opens its own descriptors
            fds.clear()
            fds["pid"] = os.getpid()
        if shard not in fds:
            fds[shard] = os.open(self.shards[shard], os.O_RDONLY)
        return fds[shard]

    def __getstate__(self) -> dict[str, Any]:
        state = super().__getstate__()
        state.pop("_fds", None)
        return state

    def subset(self, index: np.ndarray) -> TarShardDataset:
        index = np.asarray(index, dtype=np.int64)
        return TarShardDataset(
            self.shards,
            self.keys[index],
            self.where[index],
            self.y[index],
            self.classes,
            self.origin,
            self.stats,
            self.preprocess,
        )

    def content_key(self) -> Any:
        # the shards' names and stats, not where they lie: moved (or named by another path),
        # the same shards keep their cached stages
        names = [os.path.basename(s) for s in self.shards]
        return sha256_of("wds-v2", names, list(self.stats), self.keys, self.where)


def index_shards(
    shards: list[Path], classes: tuple[str, ...] | None, origin: str
) -> TarShardDataset:
    """Read every shard's member headers and label members (not the images)."""
    keys: list[bytes] = []
    where: list[tuple[int, int, int]] = []
    labels: list[int] = []
    seen: set[bytes] = set()
    for s, shard in enumerate(shards):
        images: dict[str, tuple[int, int]] = {}
        found: dict[str, int] = {}
        try:
            with tarfile.open(shard, "r:") as tf:
                for m in tf:
                    if not m.isfile():
                        continue
                    base = os.path.basename(m.name)
                    if base.startswith(".") or "." not in base:
                        continue
                    stem, ext = base.split(".", 1)
                    key = f"{os.path.dirname(m.name)}/{stem}".lstrip("/")
                    ext = ext.lower()
                    if ext in _IMAGE_EXTS:
                        images[key] = (m.offset_data, m.size)
                    elif ext in _LABEL_EXTS:
                        raw = tf.extractfile(m).read(64)  # type: ignore[union-attr]
                        try:
                            found[key] = int(raw.decode().strip())
                        except ValueError:
                            raise DataError(
                                f"{shard}: label of {key} is not an integer ({raw[:20]!r})"
                            ) from None
        except (tarfile.TarError, OSError) as exc:
            raise DataError(f"{shard}: not a readable tar shard ({exc})") from None
        for key in sorted(images):
            if key not in found:
                raise DataError(f"{shard}: sample {key} has an image but no .cls label")
            bkey = f"{shard.name}/{key}".encode() if key.encode() in seen else key.encode()
            seen.add(bkey)
            keys.append(bkey)
            where.append((s, *images[key]))
            labels.append(found[key])
    if not keys:
        raise DataError(f"{origin}: the shards hold no samples with an image and a .cls label")
    y = check_labels(np.asarray(labels, dtype=np.int64), origin)
    if classes is None:
        classes = tuple(str(i) for i in range(int(y.max()) + 1))
    y = check_labels(y, origin, len(classes))
    return TarShardDataset(
        tuple(str(s) for s in shards),
        np.array(keys),
        np.asarray(where, dtype=np.int64).reshape(-1, 3),
        y,
        classes,
        origin,
        tuple((os.stat(s).st_size, os.stat(s).st_mtime_ns) for s in shards),
    )


def _shards_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix == ".tar" and p.is_file())


def _classes(folder: Path) -> tuple[str, ...] | None:
    f = folder / "classes.txt"
    if not f.is_file():
        return None
    names = tuple(line.strip() for line in f.read_text().splitlines() if line.strip())
    return names or None


def load_shards(path: str | Path) -> SourceData:
    """Index one shard or a folder of shards (with optional train/ val/ test/ sub-folders)."""
    root = Path(path)
    if root.is_file():
        return SourceData(index_shards([root], _classes(root.parent), str(root)))
    parts = {
        name: _shards_in(root / name) for name in ("train", "val", "test") if (root / name).is_dir()
    }
    if not parts.get("train"):
        return SourceData(index_shards(_shards_in(root), _classes(root), str(root)))
    classes = _classes(root) or _classes(root / "train")
    train = index_shards(parts["train"], classes, str(root / "train"))
    others = {
        k: index_shards(v, train.classes, str(root / k))
        for k, v in parts.items()
        if k != "train" and v
    }
    val, test = others.get("val"), others.get("test")
    if test is None:
        val, test = None, val
    return SourceData(train, val, test)


def _matches(source: str) -> bool:
    p = Path(source)
    if p.is_file():
        return p.suffix == ".tar"
    if not p.is_dir():
        return False
    return bool(_shards_in(p)) or ((p / "train").is_dir() and bool(_shards_in(p / "train")))


@register_source("webdataset", _matches, "a .tar shard or a folder of WebDataset .tar shards")
def _open(spec: Any) -> SourceData:
    return load_shards(spec.source)
