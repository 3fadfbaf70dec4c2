"""The training loop shared by every strategy: phases, checkpoints each epoch, exact resume.

Conventions of :mod:`exitsearch.training.backbone_trainer`: each epoch's shuffling, augmentation and random
draws come from a generator seeded with ``(seed, epoch)``, and torch's global generator (dropout)
is forked and seeded the same way, so a run resumed from an epoch checkpoint continues exactly
as the uninterrupted run would have. After every epoch the weights (backbone, heads, training-only
modules) and the optimiser state go to ``state-epoch<N>.safetensors`` and the rest to
``state.json`` (no pickles), which is written last and names the tensors file: it is the commit
point, so a crash while saving leaves the previous epoch's checkpoint intact. A non-finite loss, or weights that became non-finite, stop training with
:class:`~exitsearch.errors.TrainingDivergedError`; the last good checkpoint stays.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from exitsearch._io import load_safetensors, read_json, sha256_of
from exitsearch.data import Augment, DataSplits
from exitsearch.device import Runtime
from exitsearch.errors import CheckpointError, ConfigError, TrainingDivergedError
from exitsearch.finetune.base import Batch, FinetuneStrategy, Phase
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.settings import TrainSettings
from exitsearch.progress import NullProgress, Progress
from exitsearch.training.checkpoint import EpochCheckpoint, Resumed, flatten_training_state
from exitsearch.training.loop import EpochLoop

__all__ = ["TrainingLog", "load_checkpoint", "train_configuration"]

STATE_JSON = "state.json"
STATE_TENSORS = "state-epoch{epoch}.safetensors"
_NO_DECAY = ("pos_embed", "cls_token", "dist_token", "reg_token")

# The phase whose optimiser a checkpoint saved, and that optimiser's state_dict.
_SavedOptimizer = tuple[int, dict[str, Any]]


@dataclass
class TrainingLog:
    """What training did.

    Attributes:
        history: one entry per epoch: phase, mean loss terms, validation accuracy of every
            early exit and of the final exit, seconds.
        phases: name and epochs of each phase.
        seconds: training time, summed over interrupted and resumed runs.
        identity: hash of everything the training depends on (checkpoint key).
        notes: the strategy's notes on what applied to this configuration.
    """

    history: list[dict[str, Any]]
    phases: list[dict[str, Any]]
    seconds: float
    identity: str
    notes: list[str] = field(default_factory=list)

    @property
    def epochs(self) -> int:
        return len(self.history)


@contextmanager
def _seeded(seed: int) -> Iterator[None]:
    """Seed torch's global generator inside the block and restore it afterwards."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def _epoch_seed(seed: int, epoch: int) -> int:
    return seed * 100_003 + epoch


def _cosine(step: int, total: int) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * step / max(total, 1)))


def _kept(epoch: int, work: Path) -> str:
    kept = (
        f"the checkpoint of epoch {epoch} in {work} is kept"
        if epoch
        else "no epoch had finished yet, so no checkpoint is kept"
    )
    return kept + " (try a lower --lr or --head-lr)"


def load_checkpoint(work_dir: str | Path) -> dict[str, torch.Tensor]:
    """The network weights of the last checkpoint in ``work_dir`` (``MultiExitNet`` keys).

    Raises:
        CheckpointError: no checkpoint there.
    """
    state = Path(work_dir) / STATE_JSON
    if not state.is_file():
        raise CheckpointError(f"{work_dir}: no fine-tuning checkpoint here")
    path = Path(work_dir) / read_json(state)["tensors"]
    return {k[4:]: v for k, v in load_safetensors(path).items() if k.startswith("net.")}


def _drop_grads(params: Any) -> None:
    """Parameters a strategy keeps fixed this step lose their gradients before the update."""
    for q in params:
        q.grad = None


def _optimizer(
    net: MultiExitNet, phase: Phase, settings: TrainSettings
) -> tuple[torch.optim.Optimizer, list[float]]:
    names = {id(p): n for n, p in net.named_parameters()}
    in_backbone = {id(p) for p in net.backbone.parameters()}
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for p in phase.parameters:
        backbone = id(p) in in_backbone
        decay = p.ndim > 1 and not names.get(id(p), "").endswith(_NO_DECAY)
        groups.setdefault((backbone, decay), []).append(p)
    param_groups, base = [], []
    for (backbone, decay), params in sorted(groups.items(), reverse=True):
        lr = settings.lr if backbone else settings.head_lr
        param_groups.append(
            {"params": params, "lr": lr, "weight_decay": settings.weight_decay if decay else 0.0}
        )
        base.append(lr)
    return torch.optim.AdamW(param_groups), base


def _set_trainable(net: MultiExitNet, phase: Phase) -> None:
    net.requires_grad_(False)
    for p in phase.parameters:
        p.requires_grad_(True)
    net.eval()
    for m in phase.train_modules:
        m.train()


def train_configuration(
    net: MultiExitNet,
    strategy: FinetuneStrategy,
    settings: TrainSettings,
    splits: DataSplits,
    work_dir: str | Path,
    *,
    progress: Progress | None = None,
    discard_stale: bool = False,
    device: str | Runtime | None = None,
) -> TrainingLog:
    """Train ``net`` with ``strategy`` on ``splits.train``; resume from ``work_dir`` if it holds
    a checkpoint of the same training, skip training if that checkpoint is complete.

    A checkpoint of another training in ``work_dir`` is refused, or deleted and training
    started afresh with ``discard_stale``.

    Returns:
        The training log; ``net`` holds the trained weights (evaluation mode).

    Raises:
        ConfigError: the data's classes do not match, the strategy does not suit the
            configuration, no phase has epochs, or ``work_dir`` holds a checkpoint of another
            training.
        TrainingDivergedError: the loss or the weights became non-finite; the checkpoint of the
            last finished epoch stays in ``work_dir``.
    """
    progress = progress or NullProgress()
    work = Path(work_dir)
    if splits.num_classes != net.backbone.num_classes:
        raise ConfigError(
            f"the data has {splits.num_classes} classes but the backbone predicts "
            f"{net.backbone.num_classes}"
        )
    with _seeded(settings.seed):
        strategy.bind(net)
    phases = strategy.phases(net, settings.epochs)
    ends = [sum(p.epochs for p in phases[: i + 1]) for i in range(len(phases))]
    total = ends[-1] if ends else 0
    if total == 0:
        raise ConfigError(f"strategy {strategy.name!r} has no epochs to train")
    identity = sha256_of(
        "finetune-train-v1",
        strategy.name,
        strategy.hparams.to_dict(),
        settings.to_dict(),
        splits.fingerprint(),
        # reshape: sha256_of cannot hash 0-d tensors wider than a byte (num_batches_tracked)
        *[x for k, v in sorted(net.state_dict().items()) for x in (k, v.reshape(-1))],
    )
    checkpoint = EpochCheckpoint(
        work,
        STATE_JSON,
        identity,
        on_mismatch="restart" if discard_stale else "refuse",
        who=strategy.name,
        progress=progress,
        weights=STATE_TENSORS,
        weights_key="tensors",
        other="another fine-tuning (strategy, settings, data or starting weights differ)",
    )

    def restore(saved: Resumed) -> tuple[int, float, list[dict[str, Any]], _SavedOptimizer]:
        optimizer = (int(saved.state["optimizer_phase"]), saved.optimizer_state())
        seconds, history = float(saved.state["seconds"]), list(saved.state["history"])
        saved.restore(net=net)
        return saved.epoch, seconds, history, optimizer

    history: list[dict[str, Any]] = []
    start_epoch, seconds = 0, 0.0
    saved_opt: _SavedOptimizer | None = None
    resumed = checkpoint.load(restore)
    if resumed is not None:
        start_epoch, seconds, history, saved_opt = resumed
        if start_epoch < total:
            progress.log(
                f"{strategy.name}: resuming after epoch {start_epoch} of {total} from {work}"
            )
    work.mkdir(parents=True, exist_ok=True)
    loop = EpochLoop(device, progress, lambda epoch: _kept(epoch, work))
    loop.place(net)
    aug = Augment.parse(settings.augment)
    transform = net.backbone.input_transform()
    steps = math.ceil(len(splits.train) / settings.batch_size)
    opt: torch.optim.Optimizer | None = None
    base_lrs: list[float] = []
    opt_phase = -1
    for epoch in range(start_epoch, total):
        p = next(i for i, end in enumerate(ends) if epoch < end)
        phase = phases[p]
        local = epoch - (ends[p] - phase.epochs)
        if opt is None or opt_phase != p:
            opt, base_lrs = _optimizer(net, phase, settings)
            opt_phase = p
            if saved_opt is not None and saved_opt[0] == p:
                opt.load_state_dict(saved_opt[1])
            saved_opt = None
        _set_trainable(net, phase)
        gen = loop.generator(settings.seed, epoch)
        task = f"{strategy.name}: {phase.name} epoch {local + 1}/{phase.epochs}"
        t0 = time.perf_counter()
        sums: dict[str, float] = {}
        counts: dict[str, int] = {}
        with _seeded(_epoch_seed(settings.seed, epoch) + 1):
            batches = loop.batches(
                splits.train,
                settings.batch_size,
                generator=gen,
                transform=transform,
                task=task,
                augment=aug,
            )
            for b, x, y in batches:
                step = local * steps + b
                factor = _cosine(step, phase.epochs * steps)
                for group, lr in zip(opt.param_groups, base_lrs, strict=True):
                    group["lr"] = lr * factor
                batch = Batch(x, y, p, step, epoch, gen)
                with loop.autocast():
                    terms = strategy.loss(net, batch)
                loss = terms["loss"]
                loop.check(loss, epoch, b, who=strategy.name, phase=phase.name)
                loop.optimise(
                    loss,
                    opt,
                    before_step=lambda batch=batch: _drop_grads(strategy.skip_update(net, batch)),
                    clip=None
                    if settings.grad_clip is None
                    else (
                        lambda phase=phase: [q for q in phase.parameters if q.grad is not None],
                        settings.grad_clip,
                    ),
                )
                for k, v in terms.items():
                    sums[k] = sums.get(k, 0.0) + float(v.detach()) * len(y)
                    counts[k] = counts.get(k, 0) + len(y)
                loop.advance(task, loss=sums["loss"] / counts["loss"])
        bad = [n for n, q in net.named_parameters() if not torch.isfinite(q).all()]
        if bad:
            raise TrainingDivergedError(
                f"{strategy.name}: weights became non-finite ({bad[0]}) in {phase.name}, epoch "
                f"{epoch + 1}; {_kept(epoch, work)}"
            )
        accs = net.accuracies(splits.val, settings.eval_batch_size)
        took = time.perf_counter() - t0
        seconds += took
        history.append(
            {
                "epoch": epoch + 1,
                "phase": phase.name,
                "train": {k: sums[k] / counts[k] for k in sums},
                "val_exit_accuracy": accs[:-1],
                "val_final_accuracy": accs[-1],
                "seconds": took,
            }
        )
        progress.log(
            f"{strategy.name} epoch {epoch + 1}/{total} ({phase.name}): loss "
            f"{sums['loss'] / counts['loss']:.4f}, validation accuracy of the exits "
            + " ".join(f"{a:.3f}" for a in accs[:-1])
            + f", final {accs[-1]:.3f}"
        )
        tensors, opt_meta = flatten_training_state(opt, net=net)
        checkpoint.save(
            epoch + 1,
            tensors,
            {
                "strategy": strategy.name,
                "epochs": total,
                "optimizer_phase": p,
                "optimizer": opt_meta,
                "history": history,
                "seconds": seconds,
            },
        )
    net.requires_grad_(True)
    net.eval()
    loop.release(net)
    return TrainingLog(
        history,
        [{"name": ph.name, "epochs": ph.epochs} for ph in phases],
        seconds,
        identity,
        strategy.notes(net),
    )
