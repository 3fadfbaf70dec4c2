"""Reader for the IDX format used by (Fashion-)MNIST, gzip-compressed or not."""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from exitsearch.errors import DataError

__all__ = ["read_idx"]

_DTYPES = {0x08: np.uint8, 0x09: np.int8, 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(path: str | Path, expect_ndim: int | None = None) -> np.ndarray:
    """Read an IDX file into an array.

    Raises:
        DataError: the file is missing, truncated, not IDX, or has another number of dimensions
            than ``expect_ndim``; the message names the file and what was expected.
    """
    p = Path(path)
    if not p.is_file():
        raise DataError(f"{p}: file not found (expected an IDX file{_gz_hint(p)})")
    try:
        raw = gzip.decompress(p.read_bytes()) if p.suffix == ".gz" else p.read_bytes()
    except (OSError, EOFError, zlib.error) as exc:
        raise DataError(f"{p}: not a readable gzip file ({exc})") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0 or raw[2] not in _DTYPES:
        raise DataError(f"{p}: not an IDX file (bad magic number)")
    ndim = raw[3]
    if expect_ndim is not None and ndim != expect_ndim:
        raise DataError(f"{p}: expected an IDX file with {expect_ndim} dimensions, found {ndim}")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{p}: truncated IDX header")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    dtype = np.dtype(_DTYPES[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(
            f"{p}: truncated or padded IDX data: header says shape {tuple(shape)} "
            f"({expected} bytes), file holds {len(raw) - header} bytes"
        )
    return (
        np.frombuffer(raw, dtype=dtype, offset=header)
        .reshape(shape)
        .astype(dtype.newbyteorder("="))
    )


def _gz_hint(p: Path) -> str:
    return ", gzip-compressed" if p.suffix == ".gz" else ""
