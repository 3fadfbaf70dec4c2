"""One training for many pause configurations (PAUMER §2.2).

Every batch samples one pause layer ``l`` uniformly from ``{layer_low..layer_high}`` and a
proportion ``tau ~ U[fraction_low, fraction_high]`` (the paper: ``{3..L}`` and ``U[0.2, 0.8]``;
here the default upper layer is ``L - 1``, since pausing after the last block is moot), pauses
``round(tau * N)`` patch tokens there (the lowest-entropy ones, or random ones for the
random-pausing baseline, trained the same way) and minimises eq. 3,
``L_main + lambda * L_aux^l`` with ``lambda = 0.1``. Backbone, auxiliary decoder and main
decoder are all trained. Mode ``none`` trains without pausing (the Segmenter baseline).

Checkpoints and resume follow :mod:`exitsearch.training.backbone_trainer`: each epoch's shuffling,
augmentation, pause sampling and random pausing draw from a generator seeded with
``(seed, epoch)``, and ``last.safetensors`` + ``train_state.json`` are written after every
epoch, so a resumed run continues exactly as the uninterrupted one would have.
"""

from __future__ import annotations

import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from exitsearch._io import sha256_of
from exitsearch.core.pause import PauseConfig
from exitsearch.data.splits import DataSplits
from exitsearch.device import Runtime
from exitsearch.errors import ConfigError
from exitsearch.pausing.evaluate import evaluate_metric
from exitsearch.pausing.model import PaumerModel
from exitsearch.pausing.pause import PauseMode
from exitsearch.progress import NullProgress, Progress
from exitsearch.training.checkpoint import EpochCheckpoint, Resumed, flatten_training_state
from exitsearch.training.loop import EpochLoop, kept_in

__all__ = ["TRAIN_MODES", "PauseTrainConfig", "train_paumer"]

STATE_FILE = "train_state.json"
CKPT_FILE = "last.safetensors"
TRAIN_MODES = ("entropy", "random", "none")


@dataclass(frozen=True)
class PauseTrainConfig:
    """Hyperparameters of PAUMER training (AdamW, linear warm-up then cosine decay).

    Attributes:
        mode: ``entropy`` (PAUMER), ``random`` (random-pausing baseline) or ``none``.
        layer_low, layer_high: range of the sampled pause layer (``None``: ``L - 1``).
        fraction_low, fraction_high: range of the sampled pause proportion ``tau``.
        aux_weight: ``lambda`` of eq. 3.
    """

    mode: str = "entropy"
    epochs: int = 10
    batch_size: int = 128
    lr: float = 5e-4
    weight_decay: float = 0.05
    warmup_epochs: float = 1.0
    augment: bool = True
    seed: int = 0
    layer_low: int = 3
    layer_high: int | None = None
    fraction_low: float = 0.2
    fraction_high: float = 0.8
    aux_weight: float = 0.1
    eval_batch_size: int = 256

    def __post_init__(self) -> None:
        if self.mode not in TRAIN_MODES:
            raise ConfigError(
                f"unknown training mode {self.mode!r}; known: {', '.join(TRAIN_MODES)}"
            )
        if self.epochs < 1:
            raise ConfigError(f"`epochs >= 1` must hold, but got epochs={self.epochs}")
        if self.batch_size < 1:
            raise ConfigError(f"`batch_size >= 1` must hold, but got batch_size={self.batch_size}")
        if not self.lr > 0:
            raise ConfigError(f"`lr > 0` must hold, but got lr={self.lr}")
        if not 0.0 < self.fraction_low <= self.fraction_high < 1.0:
            raise ConfigError(
                "`0 < fraction_low <= fraction_high < 1` must hold, but got "
                f"({self.fraction_low=}, {self.fraction_high=})"
            )
        if self.aux_weight < 0:
            raise ConfigError(f"`aux_weight >= 0` must hold, but got {self.aux_weight}")

    def layer_range(self, depth: int) -> tuple[int, int]:
        """The sampled layers ``(low, high)`` for a backbone of ``depth`` blocks.

        Raises:
            ConfigError: the range is empty or leaves ``1..depth - 1``.
        """
        high = depth - 1 if self.layer_high is None else self.layer_high
        if not 1 <= self.layer_low <= high <= depth - 1:
            raise ConfigError(
                f"`1 <= layer_low <= layer_high <= {depth - 1}` must hold for {depth} blocks, "
                f"but got ({self.layer_low}, {high})"
            )
        return self.layer_low, high


def _checksum(module: torch.nn.Module) -> str:
    return sha256_of(*(t for _, t in sorted(module.state_dict().items())))


def train_paumer(
    model: PaumerModel,
    splits: DataSplits,
    config: PauseTrainConfig,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    command: str | None = None,
    init: dict[str, Any] | None = None,
    device: str | Runtime | None = None,
) -> dict[str, Any]:
    """Train ``model`` on ``splits.train``; resume from ``out_dir`` if a checkpoint is there.

    Writes ``last.safetensors`` + ``train_state.json`` after each epoch and, at the end, the
    model folder (``model.safetensors`` + ``paumer.json``, loadable with ``load_paumer``).

    Args:
        init: where the starting weights came from (recorded, and part of the run's identity).

    Returns:
        The metadata written to ``paumer.json`` (history, validation metric, settings).

    Raises:
        TrainingDivergedError: the loss became NaN or infinite; the last epoch's checkpoint stays.
        ConfigError: ``out_dir`` holds a checkpoint of a different training, or the layer range
            does not fit the backbone.
    """
    progress = progress or NullProgress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    loop = EpochLoop(device, progress, kept_in(out))
    loop.place(model)
    task = model.task
    bb = model.backbone
    low, high = config.layer_range(bb.depth)
    pausing = config.mode != "none"
    mode = PauseMode.parse(config.mode) if pausing else PauseMode.ENTROPY
    transform = bb.input_transform()
    steps_per_epoch = math.ceil(len(splits.train) / config.batch_size)
    total_steps = config.epochs * steps_per_epoch
    warmup = max(1, int(config.warmup_epochs * steps_per_epoch))
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        flat = p.ndim <= 1 or name.endswith(("pos_embed", "cls_token", "dist_token", "cls_emb"))
        (no_decay if flat else decay).append(p)
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": config.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=config.lr,
    )

    def lr_at(step: int) -> float:
        if step < warmup:
            return config.lr * (step + 1) / warmup
        t = (step - warmup) / max(1, total_steps - warmup)
        return config.lr * 0.5 * (1 + math.cos(math.pi * t))

    identity = {
        "spec": model.spec.to_dict(),
        "config": asdict(config),
        "data": splits.fingerprint(),
        "initial_weights": _checksum(model),
        "init": init,
    }
    checkpoint = EpochCheckpoint(
        out,
        STATE_FILE,
        identity,
        progress=progress,
        weights=CKPT_FILE,
        legacy_weights=CKPT_FILE,
        other="another training (model, data, start weights or settings differ)",
        remedy="choose another --out folder or delete it",
    )

    def restore(saved: Resumed) -> tuple[int, list[dict[str, Any]]]:
        saved.restore(opt, model=model)
        return saved.epoch, list(saved.state["history"])

    start_epoch, history = checkpoint.load(restore) or (0, [])
    if start_epoch:
        progress.log(f"resuming from epoch {start_epoch} of {config.epochs} in {out}")

    probe = PauseConfig({(low + high) // 2: 0.5})
    for epoch in range(start_epoch, config.epochs):
        model.train()
        gen = loop.generator(config.seed, epoch)
        name = f"epoch {epoch + 1}/{config.epochs}"
        progress.start(name, steps_per_epoch)
        t0 = time.perf_counter()
        sums = {"loss": 0.0, "main": 0.0, "aux": 0.0}
        seen = 0
        batches = task.batches(
            splits.train, config.batch_size, shuffle=True, generator=gen, augment=config.augment
        )
        for b, batch in enumerate(batches):
            step = epoch * steps_per_epoch + b
            for group in opt.param_groups:
                group["lr"] = lr_at(step)
            x = transform(loop.rt.to(batch.images))
            target = loop.rt.to(batch.target)
            with loop.autocast():
                if pausing:
                    layer = int(torch.randint(low, high + 1, (1,), generator=gen))
                    u = float(torch.rand((), generator=gen))
                    tau = config.fraction_low + (config.fraction_high - config.fraction_low) * u
                    res = model(x, PauseConfig({layer: tau}), mode, generator=gen, return_aux=True)
                    main = task.loss(res.logits.float(), target)
                    aux = task.aux_loss(
                        res.states.aux_logits[layer].float(),
                        res.states.aux_index[layer],
                        loop.rt.to(batch.aux_target),
                    )
                    loss = main + config.aux_weight * aux
                else:
                    main = task.loss(model.predict(x).float(), target)
                    aux = torch.zeros((), device=main.device)
                    loss = main
            if not torch.isfinite(loss):
                progress.finish(name)
            loop.check(loss, epoch, b)
            loop.optimise(loss, opt, clip=(model.parameters(), 1.0))
            n = len(batch.index)
            for key, value in (("loss", loss), ("main", main), ("aux", aux)):
                sums[key] += float(value.detach()) * n
            seen += n
            progress.advance(name, 1, loss=sums["loss"] / seen)
        progress.finish(name)
        record: dict[str, Any] = {
            "epoch": epoch + 1,
            "train_loss": sums["loss"] / seen,
            "train_main_loss": sums["main"] / seen,
            "train_aux_loss": sums["aux"] / seen,
            "val_metric": evaluate_metric(model, splits.val, None, mode, config.eval_batch_size),
            "seconds": time.perf_counter() - t0,
        }
        if pausing:
            record["probe"] = probe.key
            record["val_metric_probe"] = evaluate_metric(
                model, splits.val, probe, mode, config.eval_batch_size
            )
        history.append(record)
        metric = task.new_metric().name
        probe_text = (
            f", under pause {probe.key}: {record['val_metric_probe']:.4f}" if pausing else ""
        )
        progress.log(
            f"epoch {epoch + 1}: loss {record['train_loss']:.4f}, validation {metric} "
            f"{record['val_metric']:.4f}{probe_text}"
        )
        tensors, opt_meta = flatten_training_state(opt, model=model)
        checkpoint.save(epoch + 1, tensors, {"history": history, "optimizer": opt_meta})

    model.eval()
    loop.release(model)
    meta = {
        "task": model.spec.task,
        "metric": model.task.new_metric().name,
        "mode": config.mode,
        "config": asdict(config),
        "layer_range": [low, high],
        "data": splits.spec.to_dict(),
        "data_fingerprint": splits.fingerprint(),
        "val_metric": history[-1]["val_metric"] if history else None,
        "history": history,
        "train_seconds": sum(h["seconds"] for h in history),
        "init": init,
        "weights_sha256": _checksum(model),
        "command": command,
    }
    model.save(out, meta)
    return meta
