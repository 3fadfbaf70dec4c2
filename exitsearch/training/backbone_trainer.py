"""Training or fine-tuning a backbone, with a checkpoint each epoch and exact resume.

Each epoch's shuffling and augmentation draw from a generator seeded with ``(seed, epoch)``, so
a run resumed from an epoch checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from exitsearch._io import atomic_write_json, save_safetensors
from exitsearch.backbone.adapter import Backbone
from exitsearch.core.task import CLASSIFICATION, get_task
from exitsearch.data.loader import bounded_batch, iterate_batches
from exitsearch.data.splits import DataSplits
from exitsearch.data.transforms import Augment
from exitsearch.device import Runtime, resolve_device
from exitsearch.errors import ConfigError
from exitsearch.optim import adamw, warmup_cosine
from exitsearch.progress import NullProgress, Progress
from exitsearch.training.checkpoint import EpochCheckpoint, Resumed, flatten_training_state
from exitsearch.training.loop import EpochLoop, epoch_seed, kept_in

__all__ = ["BackboneTrainConfig", "evaluate_accuracy", "evaluate_backbone", "train_backbone"]

STATE_FILE = "train_state.json"
CKPT_FILE = "last.safetensors"
MODEL_FILE = "model.safetensors"
META_FILE = "backbone.json"


@dataclass(frozen=True)
class BackboneTrainConfig:
    """Hyperparameters of backbone training (AdamW, linear warm-up then cosine decay)."""

    epochs: int = 20
    batch_size: int = 128
    lr: float = 1e-3
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    label_smoothing: float = 0.1
    # True/False, or which light augmentations: "crop,flip", "crop", "flip", "none"
    augment: bool | str = True
    seed: int = 0
    eval_batch_size: int = 512

    def __post_init__(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"`epochs >= 1` must hold, but got epochs={self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"`lr > 0` must hold, but got lr={self.lr}")
        Augment.parse(self.augment)  # raises on an unknown augmentation


def evaluate_accuracy(
    backbone: Backbone, data: Any, batch_size: int = 512, device: str | Runtime | None = None
) -> float:
    """Top-1 accuracy of the backbone's own exit on a dataset (on ``device``, default CPU);
    for counting, the share of exact counts."""
    return evaluate_backbone(backbone, data, batch_size=batch_size, device=device)["acc"]


@torch.no_grad()
def evaluate_backbone(
    backbone: Backbone,
    data: Any,
    task: str | None = None,
    batch_size: int = 512,
    device: str | Runtime | None = None,
) -> dict[str, float]:
    """The backbone's own exit on a dataset: ``acc`` (right predictions) and ``quality`` (the
    task's reported quality: accuracy, or the MAE of a count)."""
    kind = get_task(task)
    rt = resolve_device(device or "cpu")
    backbone.eval().to(rt.device)
    transform = backbone.input_transform()
    right, score = 0, 0.0
    batch_size = bounded_batch(batch_size, data)
    for _, x, y in iterate_batches(data, batch_size, pin_memory=rt.pin_memory):
        x = rt.to(x)
        with rt.autocast():
            out = backbone(transform(x))
        pred = kind.statistics(out.float())[2].cpu().numpy()
        labels = y.numpy()
        right += int((pred == labels).sum())
        score += float(kind.scores(pred, labels).sum())
    n = max(len(data), 1)
    return {"acc": right / n, "quality": kind.shown(score / n)}


def train_backbone(
    backbone: Backbone,
    splits: DataSplits,
    config: BackboneTrainConfig,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    command: str | None = None,
    device: str | Runtime | None = None,
) -> dict[str, Any]:
    """Train ``backbone`` on ``splits.train``; resume from ``out_dir`` if a checkpoint is there.

    Writes ``checkpoint-epoch<N>.safetensors`` + ``train_state.json`` after each epoch and, at the end,
    ``model.safetensors`` (weights only) and ``backbone.json`` (spec, figures, command).

    Returns:
        The final metadata (validation and test accuracy per epoch and at the end).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite; the last epoch's checkpoint stays.
        ConfigError: ``out_dir`` holds a checkpoint from a different configuration.
    """
    progress = progress or NullProgress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = get_task(splits.task)
    kind.check_outputs(splits.num_classes, backbone.num_classes)
    augment_parts = str(Augment.parse(config.augment))
    if "crop" in augment_parts and "crop" not in kind.augment:
        raise ConfigError(
            f"a {kind.name} target does not survive a random crop; use --augment {kind.augment}"
        )
    loop = EpochLoop(device, progress, kept_in(out))
    rt = loop.rt
    loop.place(backbone.model)
    model = backbone.model
    transform = backbone.input_transform()
    augment = Augment.parse(config.augment)
    steps_per_epoch = math.ceil(len(splits.train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    opt = adamw(model, config.lr, config.weight_decay)
    lr_at = warmup_cosine(config.lr, warmup, total_steps)

    identity = {
        "spec": backbone.spec.to_dict(),
        "config": asdict(config),
        "data": splits.fingerprint(),
    }
    checkpoint = EpochCheckpoint(
        out,
        STATE_FILE,
        identity,
        progress=progress,
        legacy_weights=CKPT_FILE,
        other="another training (model, data or settings differ)",
        remedy="choose another --out folder or delete it",
    )

    def restore(saved: Resumed) -> tuple[int, list[dict[str, float]]]:
        saved.restore(opt, model=model)
        return saved.epoch, list(saved.state["history"])

    start_epoch, history = checkpoint.load(restore) or (0, [])
    if start_epoch:
        progress.log(f"resuming from epoch {start_epoch} of {config.epochs} in {out}")

    for epoch in range(start_epoch, config.epochs):
        model.train()
        gen = loop.generator(config.seed, epoch)
        torch.manual_seed(epoch_seed(config.seed, epoch) + 1)  # dropout / drop-path, if enabled
        task = f"epoch {epoch + 1}/{config.epochs}"
        t0 = time.perf_counter()
        loss_sum, seen = 0.0, 0
        for b, x, y in loop.batches(
            splits.train,
            config.batch_size,
            generator=gen,
            transform=transform,
            task=task,
            augment=augment,
        ):
            step = epoch * steps_per_epoch + b
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            with loop.autocast():
                logits = model(x)
            loss = kind.loss(logits, y, label_smoothing=config.label_smoothing)
            loop.check(loss, epoch, b)
            loop.optimise(loss, opt, clip=(model.parameters(), 1.0))
            loss_sum += loss.item() * len(y)
            seen += len(y)
            loop.advance(task, loss=loss_sum / seen)
        val = evaluate_backbone(backbone, splits.val, kind.name, config.eval_batch_size, rt)
        history.append(
            {
                "epoch": epoch + 1,
                "train_loss": loss_sum / seen,
                "val_acc": val["acc"],
                **({} if kind.name == CLASSIFICATION else {f"val_{kind.quality}": val["quality"]}),
                "seconds": time.perf_counter() - t0,
            }
        )
        progress.log(
            f"epoch {epoch + 1}: loss {loss_sum / seen:.4f}, validation {kind.quality} "
            f"{val['quality']:.4f}"
        )
        tensors, opt_meta = flatten_training_state(opt, model=model)
        checkpoint.save(epoch + 1, tensors, {"history": history, "optimizer": opt_meta})

    model.eval()
    test = evaluate_backbone(backbone, splits.test, kind.name, config.eval_batch_size, rt)
    model.to("cpu")
    save_safetensors(out / MODEL_FILE, model.state_dict())
    meta = {
        "spec": {**backbone.spec.to_dict(), "checkpoint": None},
        "describe": backbone.describe(),
        "config": asdict(config),
        # the split decides which samples later runs may validate on (exitsearch run refuses
        # validation samples this training used); the preprocessing is what the weights expect
        "data": {
            **splits.spec.to_dict(),
            "source": _absolute(splits.spec),
            "split": splits.spec.split,
        },
        "preprocess": backbone.preprocess().to_dict(),
        "data_fingerprint": splits.fingerprint(),
        # output i means classes[i]: a run on data naming them in another order is refused
        "classes": [str(c) for c in splits.classes],
        "task": kind.name,
        "quality": kind.quality,
        "val_acc": history[-1]["val_acc"] if history else None,
        "test_acc": test["acc"],
        "val_quality": history[-1].get(f"val_{kind.quality}", history[-1]["val_acc"])
        if history
        else None,
        "test_quality": test["quality"],
        "history": history,
        "weights_sha256": backbone.weights_checksum(),
        "command": command,
    }
    atomic_write_json(out / META_FILE, meta)
    return meta


def _absolute(spec: Any) -> str:
    """The data source as an absolute path (names such as ``fashion-mnist`` stay)."""
    p = Path(spec.source)
    return str(p.resolve()) if p.exists() else spec.source
