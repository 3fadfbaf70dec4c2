"""Atomic writes, JSON and safetensors files, content hashes."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch

from exitsearch._io import (
    atomic_path,
    atomic_write_bytes,
    atomic_write_json,
    atomic_write_text,
    call_atomically,
    file_sha256,
    load_safetensors,
    read_json,
    save_safetensors,
    sha256_of,
)
from exitsearch.errors import CacheError


class _Boom(RuntimeError):
    pass


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _leftovers(folder: Path, final: str) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if p.name != final)


def test_atomic_write_creates_folders_and_leaves_no_temp_files(tmp_path):
    target = tmp_path / "a" / "b" / "out.txt"
    atomic_write_text(target, "hello")
    assert target.read_text() == "hello"
    assert _leftovers(target.parent, "out.txt") == []
    atomic_write_bytes(target, b"\x00\x01")
    assert target.read_bytes() == b"\x00\x01"
    assert _leftovers(target.parent, "out.txt") == []


def test_writer_that_raises_leaves_no_file(tmp_path):
    target = tmp_path / "out.bin"
    with pytest.raises(_Boom), atomic_path(target) as tmp:
        tmp.write_bytes(b"half of it")
        raise _Boom
    assert not target.exists()
    assert list(tmp_path.iterdir()) == []


def test_writer_that_raises_keeps_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})

    def writer(tmp: Path) -> None:
        tmp.write_text('{"v": 2, "trunc')
        raise _Boom

    with pytest.raises(_Boom):
        call_atomically(target, writer)
    assert read_json(target) == {"v": 1}
    assert _leftovers(tmp_path, "out.json") == []


def test_unserialisable_json_leaves_the_old_file(tmp_path):
    target = tmp_path / "out.json"
    atomic_write_json(target, {"v": 1})
    with pytest.raises(TypeError, match="object is not JSON serialisable"):
        atomic_write_json(target, {"v": object()})
    assert read_json(target) == {"v": 1}
    assert _leftovers(tmp_path, "out.json") == []


def test_mode_follows_the_umask(tmp_path):
    target = tmp_path / "out.txt"
    atomic_write_text(target, "x")
    mode = stat.S_IMODE(target.stat().st_mode)
    assert mode == 0o666 & ~_current_umask()
    if _current_umask() & 0o044 == 0:
        assert mode != 0o600  # not mkstemp's private mode


def test_mode_follows_a_umask_set_after_import(tmp_path):
    target = tmp_path / "out.txt"
    old = os.umask(0o027)
    try:
        atomic_write_text(target, "x")
    finally:
        os.umask(old)
    assert stat.S_IMODE(target.stat().st_mode) == 0o640


def test_json_round_trip_with_numpy_and_paths(tmp_path):
    target = tmp_path / "d.json"
    atomic_write_json(
        target,
        {"i": np.int64(3), "f": np.float32(0.5), "a": np.arange(3), "p": Path("/x/y"), "s": "é"},
    )
    assert read_json(target) == {"i": 3, "f": 0.5, "a": [0, 1, 2], "p": "/x/y", "s": "é"}
    assert target.read_text().endswith("\n")


@pytest.mark.parametrize("content", [b'{"a": 1', b"", b"\xff\xfe\x00garbage", b"[1, 2]]"])
def test_read_json_of_a_corrupt_file(tmp_path, content):
    target = tmp_path / "bad.json"
    target.write_bytes(content)
    with pytest.raises(CacheError, match="not valid JSON") as info:
        read_json(target)
    assert str(target) in str(info.value)


def test_read_json_of_a_missing_file(tmp_path):
    with pytest.raises(CacheError, match="missing"):
        read_json(tmp_path / "none.json")


def test_safetensors_round_trip(tmp_path):
    target = tmp_path / "t.safetensors"
    tensors = {"a": torch.arange(6.0).view(2, 3).t(), "b": torch.tensor([1, 2], dtype=torch.int64)}
    save_safetensors(target, tensors, metadata={"k": "v"})
    back = load_safetensors(target)
    assert back.keys() == tensors.keys()
    assert all(torch.equal(back[k], tensors[k]) for k in tensors)
    assert _leftovers(tmp_path, "t.safetensors") == []


def test_unreadable_safetensors(tmp_path):
    with pytest.raises(CacheError, match="missing"):
        load_safetensors(tmp_path / "none.safetensors")
    target = tmp_path / "t.safetensors"
    save_safetensors(target, {"a": torch.zeros(100)})
    target.write_bytes(target.read_bytes()[:-50])
    with pytest.raises(CacheError, match="not a readable safetensors"):
        load_safetensors(target)


def test_sha256_of_distinguishes_content_and_type():
    base = sha256_of("x", np.arange(4, dtype=np.int32))
    assert base == sha256_of("x", np.arange(4, dtype=np.int32))
    assert base != sha256_of("x", np.arange(4, dtype=np.int64))
    assert base != sha256_of("x", np.arange(4, dtype=np.int32).reshape(2, 2))
    assert base != sha256_of("y", np.arange(4, dtype=np.int32))
    assert sha256_of({"a": 1, "b": 2}) == sha256_of({"b": 2, "a": 1})
    assert sha256_of(b"ab") != sha256_of("ab")
    t = torch.arange(4, dtype=torch.float32)
    assert sha256_of(t) == sha256_of(t.clone()) != sha256_of(t.double())
    assert sha256_of(torch.zeros(0)) != sha256_of(torch.zeros(0, 2))


def test_file_sha256(tmp_path):
    import hashlib

    target = tmp_path / "f.bin"
    data = os.urandom(3000)
    target.write_bytes(data)
    assert file_sha256(target, chunk=1000) == hashlib.sha256(data).hexdigest()
