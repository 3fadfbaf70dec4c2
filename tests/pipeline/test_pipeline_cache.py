"""The stage cache: commit, lookup, checksum verification, and recovery from damage."""

from __future__ import annotations

import json

import pytest

from exitsearch._io import file_sha256, read_json
from exitsearch.pipeline.cache import MANIFEST, StageStore

KEY = "0123456789abcdef" + "f" * 48


class RecordingProgress:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture
def progress() -> RecordingProgress:
    return RecordingProgress()


@pytest.fixture
def store(tmp_path, progress) -> StageStore:
    return StageStore(tmp_path / "cache", progress)


def _write_stage(store: StageStore, stage: str = "heads", key: str = KEY) -> tuple:
    folder = store.folder(stage, key)
    folder.mkdir(parents=True)
    (folder / "weights.bin").write_bytes(bytes(range(256)) * 4)
    (folder / "sub").mkdir()
    (folder / "sub" / "table.json").write_text(json.dumps({"a": 1}))
    store.commit(stage, key, ["weights.bin", "sub/table.json", "weights.bin"], {"seconds": 1.5})
    return folder, ["weights.bin", "sub/table.json"]


def test_folder_is_named_by_stage_and_key_prefix(store, tmp_path):
    assert store.folder("predict", KEY) == tmp_path / "cache" / "predict-0123456789abcdef"


def test_commit_then_lookup_and_verify(store, progress):
    assert store.lookup("heads", KEY) is None  # nothing committed yet
    folder, files = _write_stage(store)
    assert store.lookup("heads", KEY) == folder
    assert store.verify(folder) is None
    manifest = read_json(folder / MANIFEST)
    assert manifest["stage"] == "heads" and manifest["key"] == KEY
    assert manifest["files"] == {name: file_sha256(folder / name) for name in sorted(files)}
    assert store.meta(folder) == {"seconds": 1.5}
    assert progress.logs == []


def test_an_uncommitted_folder_is_not_a_hit(store):
    folder = store.folder("heads", KEY)
    folder.mkdir(parents=True)
    (folder / "checkpoint.safetensors").write_bytes(b"partial")
    assert store.lookup("heads", KEY) is None
    assert folder.is_dir()  # an incomplete stage keeps its checkpoint to resume from


def test_another_key_misses(store):
    _write_stage(store)
    assert store.lookup("heads", "ffff" + KEY[4:]) is None
    assert store.lookup("predict", KEY) is None


@pytest.mark.parametrize("name", ["weights.bin", "sub/table.json"])
def test_a_flipped_byte_is_detected_logged_and_cleared(store, progress, name):
    folder, _ = _write_stage(store)
    path = folder / name
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert store.verify(folder) == f"{name} does not match its checksum"
    assert store.lookup("heads", KEY) is None
    assert not folder.exists()
    assert len(progress.logs) == 1
    assert progress.logs[0].startswith("heads: cached artifact is damaged")
    assert name in progress.logs[0] and "recomputing" in progress.logs[0]


def test_a_missing_file_is_detected_logged_and_cleared(store, progress):
    folder, _ = _write_stage(store)
    (folder / "weights.bin").unlink()
    assert store.lookup("heads", KEY) is None
    assert not folder.exists()
    assert progress.logs == [
        "heads: cached artifact is damaged (weights.bin is missing); recomputing"
    ]


def test_an_unreadable_manifest_is_damage_too(store, progress):
    folder, _ = _write_stage(store)
    (folder / MANIFEST).write_text("{not json")
    assert store.lookup("heads", KEY) is None
    assert not folder.exists()
    assert "manifest unreadable" in progress.logs[0]


def test_recommit_after_damage_is_a_hit_again(store):
    folder, _ = _write_stage(store)
    (folder / "weights.bin").write_bytes(b"changed")
    assert store.lookup("heads", KEY) is None
    folder2, _ = _write_stage(store)
    assert store.lookup("heads", KEY) == folder2


def test_discard_removes_only_that_stage(store):
    heads, _ = _write_stage(store, "heads")
    predict, _ = _write_stage(store, "predict")
    store.discard("heads", KEY)
    assert not heads.exists()
    assert store.lookup("predict", KEY) == predict
    store.discard("heads", KEY)  # discarding twice is harmless
