"""EpochCheckpoint on real files: round trip, identity check, damaged and old checkpoints."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exitsearch._io import atomic_write_json, save_safetensors
from exitsearch.errors import ConfigError
from exitsearch.progress import NullProgress
from exitsearch.training import EpochCheckpoint, Resumed
from exitsearch.training.checkpoint import flatten_training_state

IDENTITY = {"spec": "tiny", "config": {"lr": 0.001}, "data": "abc"}
TENSORS = {"model.w": torch.arange(6.0).reshape(2, 3), "opt.0.step": torch.tensor(3.0)}


class Log(NullProgress):
    """Keeps the messages a checkpoint logs."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def log(self, message: str) -> None:
        self.lines.append(message)


def _checkpoint(folder: Path, log: Log | None = None, **kw) -> EpochCheckpoint:  # type: ignore[no-untyped-def]
    return EpochCheckpoint(folder, "checkpoint.json", IDENTITY, progress=log or Log(), **kw)


def test_a_fresh_folder_gives_none(tmp_path: Path) -> None:
    log = Log()
    assert _checkpoint(tmp_path / "new", log).load() is None
    assert log.lines == []


def test_save_then_load_round_trips_tensors_and_state(tmp_path: Path) -> None:
    ckpt = _checkpoint(tmp_path)
    ckpt.save(1, {k: v + 1 for k, v in TENSORS.items()}, {"history": [{"loss": 1.0}]})
    ckpt.save(2, TENSORS, {"history": [{"loss": 1.0}, {"loss": 0.5}]})
    # the JSON names the newest weights file, the older one is gone
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint-epoch2.safetensors",
        "checkpoint.json",
    ]
    resumed = _checkpoint(tmp_path).load()
    assert isinstance(resumed, Resumed)
    assert resumed.epoch == 2
    assert resumed.state["history"] == [{"loss": 1.0}, {"loss": 0.5}]
    assert resumed.state["identity"] == IDENTITY
    assert resumed.tensors.keys() == TENSORS.keys()
    assert all(torch.equal(resumed.tensors[k], v) for k, v in TENSORS.items())
    assert resumed.module_state("model") == {"w": resumed.tensors["model.w"]}


def test_a_module_and_its_optimizer_come_back_exactly(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    opt = torch.optim.AdamW(model.parameters(), lr=0.1)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    tensors, meta = flatten_training_state(opt, model=model)
    _checkpoint(tmp_path).save(1, tensors, {"optimizer": meta})

    other = torch.nn.Linear(3, 2)
    other_opt = torch.optim.AdamW(other.parameters(), lr=0.1)

    def restore(saved: Resumed) -> int:
        saved.restore(other_opt, model=other)
        return saved.epoch

    assert _checkpoint(tmp_path).load(restore) == 1
    pairs = zip(model.parameters(), other.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)
    got, want = other_opt.state_dict()["state"], opt.state_dict()["state"]
    assert all(torch.equal(got[0][k], want[0][k]) for k in want[0])

    # weights that do not fit are damage, and nothing is loaded half-way
    wide = torch.nn.Linear(5, 2)
    before = {k: v.clone() for k, v in wide.state_dict().items()}
    log = Log()
    ckpt = _checkpoint(tmp_path, log)
    assert ckpt.load(lambda saved: saved.restore(None, model=wide)) is None
    assert ckpt.damaged is not None and "shape" in ckpt.damaged
    assert all(torch.equal(wide.state_dict()[k], v) for k, v in before.items())
    assert log.lines == [f"checkpoint in {tmp_path} is damaged ({ckpt.damaged}); starting afresh"]


def test_another_identity_is_refused_in_one_line(tmp_path: Path) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    other = EpochCheckpoint(
        tmp_path,
        "checkpoint.json",
        {**IDENTITY, "data": "xyz"},
        other="another training (model, data or settings differ)",
        remedy="choose another --out folder or delete it",
    )
    with pytest.raises(ConfigError) as err:
        other.load()
    assert str(err.value) == (
        f"{tmp_path} holds a checkpoint of another training (model, data or settings differ); "
        "choose another --out folder or delete it"
    )
    assert (tmp_path / "checkpoint-epoch1.safetensors").is_file()  # refused, not touched
    assert _checkpoint(tmp_path).load() is not None


def test_another_identity_restarts_with_a_message(tmp_path: Path) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    log = Log()
    other = EpochCheckpoint(
        tmp_path, "checkpoint.json", "other", on_mismatch="restart", who="heads", progress=log
    )
    assert other.load() is None
    assert other.damaged is None
    assert log.lines == [
        f"heads: checkpoint in {tmp_path} belongs to other inputs; discarding it and starting "
        "afresh"
    ]
    assert list(tmp_path.iterdir()) == []


def _damaged(folder: Path) -> str:
    log = Log()
    ckpt = _checkpoint(folder, log, who="heads")
    assert ckpt.load() is None
    assert ckpt.damaged is not None
    (line,) = log.lines
    assert line.startswith(f"heads: checkpoint in {folder} is damaged (")
    assert line.endswith("); starting afresh")
    return ckpt.damaged


def test_a_truncated_weights_file_gives_a_fresh_start(tmp_path: Path) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    weights = tmp_path / "checkpoint-epoch1.safetensors"
    weights.write_bytes(weights.read_bytes()[:40])
    assert "not a readable safetensors file" in _damaged(tmp_path)


@pytest.mark.parametrize("text", ['{"epoch": 1, "identity": {"spec', "[1, 2]", "\xff\xfe"])
def test_garbage_json_gives_a_fresh_start(tmp_path: Path, text: str) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    (tmp_path / "checkpoint.json").write_text(text, encoding="latin-1")
    assert "checkpoint.json" in _damaged(tmp_path)


def test_json_naming_a_missing_weights_file_gives_a_fresh_start(tmp_path: Path) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    (tmp_path / "checkpoint-epoch1.safetensors").unlink()
    assert "file is missing" in _damaged(tmp_path)


def test_a_missing_entry_is_damage_not_a_crash(tmp_path: Path) -> None:
    _checkpoint(tmp_path).save(1, TENSORS, {})
    log = Log()
    ckpt = _checkpoint(tmp_path, log)
    assert ckpt.load(lambda saved: saved.state["history"]) is None
    assert ckpt.damaged == "'history'"


def test_a_fixed_weights_name_newer_than_its_json_is_damage(tmp_path: Path) -> None:
    """A crash between replacing ``last.safetensors`` and its JSON leaves two epochs: refused."""
    ckpt = _checkpoint(tmp_path, weights="last.safetensors")
    ckpt.save(1, TENSORS, {})
    assert ckpt.load() is not None
    save_safetensors(tmp_path / "last.safetensors", TENSORS, {"epoch": "2"})  # save()'s 1st step
    assert "last.safetensors holds epoch 2, checkpoint.json epoch 1" in _damaged(tmp_path)


def test_an_old_checkpoint_without_a_weights_entry_still_loads(tmp_path: Path) -> None:
    """As the trainers wrote them before: no ``weights`` entry, no epoch in the weights file."""
    save_safetensors(tmp_path / "last.safetensors", TENSORS)
    atomic_write_json(tmp_path / "train_state.json", {"identity": IDENTITY, "epoch": 3})
    ckpt = EpochCheckpoint(
        tmp_path, "train_state.json", IDENTITY, legacy_weights="last.safetensors"
    )
    resumed = ckpt.load()
    assert resumed is not None and resumed.epoch == 3
    assert torch.equal(resumed.tensors["model.w"], TENSORS["model.w"])
