"""train_backbone on a tiny real ViT and real Fashion-MNIST: files, exact resume, divergence."""

from __future__ import annotations

import math

import pytest
import torch

from exitsearch._io import file_sha256, load_safetensors, read_json
from exitsearch.errors import ConfigError, TrainingDivergedError
from exitsearch.progress import NullProgress
from exitsearch.training.backbone_trainer import (
    BackboneTrainConfig,
    evaluate_accuracy,
    train_backbone,
)

CONFIG = BackboneTrainConfig(epochs=2, batch_size=64, eval_batch_size=256, seed=3)
FILES = ("model.safetensors", "backbone.json", "checkpoint-epoch2.safetensors", "train_state.json")


class _InterruptAt(NullProgress):
    """Presses Ctrl-C after ``step`` batches of the epoch whose task name starts ``task``."""

    def __init__(self, task: str, step: int) -> None:
        self.task, self.step, self.seen = task, step, 0

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        if task.startswith(self.task):
            self.seen += steps
            if self.seen >= self.step:
                raise KeyboardInterrupt


class _PoisonAt(NullProgress):
    """Writes inf into the classifier when the epoch named ``task`` starts, after recording
    the checkpoint on disk at that moment."""

    def __init__(self, model: torch.nn.Module, task: str, ckpt) -> None:
        self.model, self.task, self.ckpt = model, task, ckpt
        self.hash_before: str | None = None

    def start(self, task: str, total: int | None) -> None:
        if task.startswith(self.task):
            self.hash_before = file_sha256(self.ckpt)
            with torch.no_grad():
                self.model.head.weight.fill_(math.inf)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_writes_every_artifact(tmp_path, make_tiny, tiny_splits):
    bb = make_tiny()
    meta = train_backbone(bb, tiny_splits, CONFIG, tmp_path, command="exitsearch backbone train")
    assert all((tmp_path / f).is_file() for f in FILES)
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert all(math.isfinite(h["train_loss"]) for h in meta["history"])
    assert meta["val_acc"] == meta["history"][-1]["val_acc"]
    assert meta["test_acc"] == pytest.approx(evaluate_accuracy(bb, tiny_splits.test))
    assert 0.0 <= meta["test_acc"] <= 1.0
    assert meta["weights_sha256"] == bb.weights_checksum()
    assert meta["command"] == "exitsearch backbone train"
    assert meta["data_fingerprint"] == tiny_splits.fingerprint()
    assert meta["classes"] == [str(c) for c in tiny_splits.classes]  # output i's name
    assert read_json(tmp_path / "backbone.json") == meta
    state = read_json(tmp_path / "train_state.json")
    assert state["epoch"] == 2
    # model.safetensors holds exactly the trained weights
    saved = load_safetensors(tmp_path / "model.safetensors")
    own = bb.model.state_dict()
    assert saved.keys() == own.keys() and all(torch.equal(saved[k], own[k]) for k in own)
    # and they moved away from the initialisation
    assert not _same_weights(bb.model, make_tiny().model)


def test_resume_is_exact(tmp_path, make_tiny, tiny_splits):
    straight = make_tiny()
    train_backbone(straight, tiny_splits, CONFIG, tmp_path / "straight")

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_backbone(make_tiny(), tiny_splits, CONFIG, out, progress=_InterruptAt("epoch 2/", 2))
    assert read_json(out / "train_state.json")["epoch"] == 1
    assert not (out / "model.safetensors").exists()

    # a backbone with another initialisation: everything must come from the checkpoint
    resumed = make_tiny(seed=99)
    meta = train_backbone(resumed, tiny_splits, CONFIG, out)
    assert _same_weights(resumed.model, straight.model)
    assert [h["epoch"] for h in meta["history"]] == [1, 2]
    assert meta["weights_sha256"] == straight.weights_checksum()


def test_rerun_of_a_finished_training_keeps_the_weights(tmp_path, make_tiny, tiny_splits):
    cfg = BackboneTrainConfig(epochs=1, batch_size=128, eval_batch_size=256)
    first = make_tiny()
    train_backbone(first, tiny_splits, cfg, tmp_path)
    again = make_tiny(seed=5)
    train_backbone(again, tiny_splits, cfg, tmp_path)
    assert _same_weights(first.model, again.model)


def test_folder_of_another_training_is_refused(tmp_path, make_tiny, tiny_splits):
    cfg = BackboneTrainConfig(epochs=1, batch_size=128, eval_batch_size=256)
    train_backbone(make_tiny(), tiny_splits, cfg, tmp_path)
    before = file_sha256(tmp_path / "checkpoint-epoch1.safetensors")
    other = BackboneTrainConfig(epochs=1, batch_size=128, eval_batch_size=256, lr=5e-4)
    with pytest.raises(ConfigError, match="another training"):
        train_backbone(make_tiny(), tiny_splits, other, tmp_path)
    with pytest.raises(ConfigError, match="another training"):
        train_backbone(make_tiny(embed_dim=16), tiny_splits, cfg, tmp_path)
    assert file_sha256(tmp_path / "checkpoint-epoch1.safetensors") == before


def test_non_finite_loss_keeps_the_last_good_checkpoint(tmp_path, make_tiny, tiny_splits):
    bb = make_tiny()
    poison = _PoisonAt(bb.model, "epoch 2/", tmp_path / "checkpoint-epoch1.safetensors")
    with pytest.raises(TrainingDivergedError, match="epoch 2") as info:
        train_backbone(bb, tiny_splits, CONFIG, tmp_path, progress=poison)
    assert "epoch 1" in str(info.value)  # the message says which checkpoint is kept
    assert poison.hash_before is not None
    assert file_sha256(tmp_path / "checkpoint-epoch1.safetensors") == poison.hash_before
    assert read_json(tmp_path / "train_state.json")["epoch"] == 1
    assert not (tmp_path / "model.safetensors").exists()
    kept = load_safetensors(tmp_path / "checkpoint-epoch1.safetensors")
    assert all(torch.isfinite(t).all() for t in kept.values())


def test_class_count_must_match(tmp_path, make_tiny, tiny_splits):
    with pytest.raises(ConfigError, match="num_classes=10"):
        train_backbone(make_tiny(num_classes=5), tiny_splits, CONFIG, tmp_path)


@pytest.mark.parametrize("kwargs", [{"epochs": 0}, {"batch_size": 0}, {"lr": 0.0}, {"lr": -1.0}])
def test_config_checks_itself(kwargs):
    with pytest.raises(ConfigError):
        BackboneTrainConfig(**kwargs)
