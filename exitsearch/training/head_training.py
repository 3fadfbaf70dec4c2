"""Training every candidate head at every location at once, classifier-wise (Multi-Exit ViT).

The backbone is frozen (eval mode, no gradients) and runs once per batch; every head reads the
hidden state of its location from that one forward pass. Heads have their own optimiser (Adam),
learning-rate decay on plateau (factor 0.6, patience 2) and early stopping (patience 5) on their
validation loss, as Multi-Exit ViT trained them. Their losses are independent, so the result is
classifier-wise training done once instead of once per head.

With a ``states_from`` sampler the heads train on other hidden states than the plain
backbone's: PAUMER's randomised pausing (:class:`exitsearch.pausing.RandomPausing`) pauses a
random share of tokens at a random layer in every batch, so that heads which will read paused
token states learn on them, as PAUMER trains everything that reads paused states. Validation
(best epoch, early stopping) stays on the plain states.

A head whose loss becomes NaN or infinite is stopped, restored to its best weights and marked
``diverged``; the others train on. A checkpoint is written after each epoch; rerunning with the
same inputs resumes from it exactly.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
import torch.nn.functional as F

from exitsearch._io import atomic_write_json, derive_seed, sha256_of
from exitsearch._state import flatten_optimizer_state, unflatten_optimizer_state
from exitsearch.backbone.adapter import Backbone
from exitsearch.core.task import get_task
from exitsearch.data.loader import bounded_batch, iterate_batches
from exitsearch.data.splits import DataSplits
from exitsearch.device import Runtime
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.progress import NullProgress, Progress
from exitsearch.training.checkpoint import EpochCheckpoint, Resumed
from exitsearch.training.groups import HeadGroupPlan, plan_head_groups
from exitsearch.training.loop import EpochLoop

__all__ = ["HeadStatus", "HeadTrainConfig", "HeadTrainResult", "StateSampler", "train_heads"]

CKPT = "checkpoint.safetensors"
STATE = "checkpoint.json"
WEIGHTS = "heads.safetensors"
SUMMARY = "heads.json"


class StateSampler(Protocol):
    """Hidden states to train heads on other than the plain backbone's, drawn per batch."""

    def identity(self) -> Any:
        """What decides the states (for cache keys): plain JSON values."""
        ...

    def states(
        self, x: torch.Tensor, locations: Sequence[int], generator: torch.Generator
    ) -> dict[int, torch.Tensor]:
        """The hidden state after each block of ``locations`` (1-based) for the model input
        ``x``, drawing any randomness from ``generator``."""
        ...


@dataclass(frozen=True)
class HeadTrainConfig:
    """Settings of joint classifier-wise head training.

    Attributes:
        epochs: maximum epochs (early stopping may end a head sooner).
        batch_size: training batch size.
        lr: initial Adam learning rate of every head.
        plateau_factor, plateau_patience: multiply a head's learning rate by the factor after
            more than ``plateau_patience`` epochs without a lower validation loss.
        early_stop_patience: stop a head after that many epochs without improvement.
        train_limit: train on the first N samples of each epoch's shuffled training set.
        bf16: run the heads under bfloat16 autocast.
        uncertainty_weight: weight of the uncertainty predictor's MSE loss (MEViT, eq. 1).
        seed: seed of head initialisation and shuffling.
    """

    epochs: int = 8
    batch_size: int = 256
    lr: float = 1e-3
    plateau_factor: float = 0.6
    plateau_patience: int = 2
    early_stop_patience: int = 5
    train_limit: int | None = None
    bf16: bool = False
    uncertainty_weight: float = 1.0
    seed: int = 0
    eval_batch_size: int = 1000

    def __post_init__(self) -> None:
        for name in (
            "epochs",
            "batch_size",
            "eval_batch_size",
            "plateau_patience",
            "early_stop_patience",
        ):
            if getattr(self, name) < 1:
                raise ConfigError(f"`{name} >= 1` must hold, but got {name}={getattr(self, name)}")
        if not self.lr > 0:
            raise ConfigError(f"`lr > 0` must hold, but got lr={self.lr}")
        if not 0 < self.plateau_factor <= 1:
            raise ConfigError(f"`0 < plateau_factor <= 1` must hold, but got {self.plateau_factor}")
        if self.train_limit is not None and self.train_limit < 1:
            raise ConfigError(f"`train_limit >= 1` must hold, but got {self.train_limit}")


@dataclass
class HeadStatus:
    """Training state of one head (JSON-serialisable)."""

    key: str
    lr: float
    best_loss: float = math.inf
    best_acc: float = 0.0
    best_epoch: int = 0
    bad_epochs: int = 0
    since_decay: int = 0
    state: str = "training"  # training | stopped | finished | diverged
    epochs: int = 0
    history: list[dict[str, float]] = field(default_factory=list)


@dataclass(frozen=True)
class HeadTrainResult:
    bank: HeadBank
    statuses: list[HeadStatus]
    seconds: float
    backbone_passes: int

    def summary(self) -> dict[str, Any]:
        return {
            "heads": [
                {
                    **s.to_dict(),
                    "key": s.key,
                    "val_acc": st.best_acc,
                    "val_loss": st.best_loss,
                    "best_epoch": st.best_epoch,
                    "epochs": st.epochs,
                    "state": st.state,
                }
                for s, st in zip(self.bank.specs, self.statuses, strict=True)
            ],
            "seconds": self.seconds,
            "backbone_passes": self.backbone_passes,
        }


def train_heads(
    backbone: Backbone,
    splits: DataSplits,
    specs: list[HeadSpec],
    config: HeadTrainConfig,
    out_dir: str | Path,
    *,
    progress: Progress | None = None,
    device: str | Runtime | None = None,
    memory: int | None = None,
    states_from: StateSampler | None = None,
) -> HeadTrainResult:
    """Train every head of ``specs`` on ``splits.train`` with ``backbone`` frozen.

    The backbone runs once per batch; each head's loss is back-propagated on its own, so only
    one head's activations are held at a time next to the shared hidden states. ``device``
    (default: the CPU) decides where, and in which precision (:mod:`exitsearch.device`).
    Heads that do not fit in ``memory`` bytes together (default: half the memory available) train
    in groups, each on its own passes over the data (:mod:`exitsearch.training.groups`); a head
    trains the same in any group.

    Writes ``checkpoint.safetensors``/``checkpoint.json`` after each epoch (resume) and
    ``heads.safetensors`` (best weights of every head) plus ``heads.json`` (figures) at the end.

    ``states_from`` (its model already frozen, on the device) gives the training states
    instead of ``backbone``, with a generator seeded per epoch and batch, so groups, shards and
    resumed runs draw the same.

    Raises:
        ConfigError: a head location lies beyond the backbone, or the classes do not match.
    """
    progress = progress or NullProgress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    kind = get_task(splits.task)
    kind.check_outputs(splits.num_classes, backbone.num_classes)
    if kind.native_uncertainty and any(s.uncertainty for s in specs):
        raise ConfigError(
            f"{kind.name} exits predict their own uncertainty; heads take no MEViT predictor "
            "(uncertainty: false)"
        )
    bad = [s.key for s in specs if s.location >= backbone.depth + 1]
    if bad:
        raise ConfigError(
            f"head(s) {', '.join(bad)} lie beyond the {backbone.depth}-block backbone"
        )
    loop = EpochLoop(device, progress)
    rt = loop.rt
    ctx = HeadContext.from_backbone(backbone)
    bank = HeadBank(specs, ctx, seed=config.seed)
    labels = np.asarray(splits.train.y)
    for head in bank.heads:
        kind.init_head(head, labels)
    backbone.eval().requires_grad_(False).to(rt.device)
    transform = backbone.input_transform()
    statuses = [HeadStatus(key=s.key, lr=config.lr) for s in specs]
    best = _cpu(bank.state_dict())
    identity = sha256_of(
        "heads-train-v1",
        backbone.weights_checksum(),
        splits.fingerprint(),
        [s.to_dict() for s in specs],
        asdict(config),
        *([] if states_from is None else [states_from.identity()]),
        *([] if kind.name == "classification" else [kind.name, kind.version]),
    )
    plan = plan_head_groups(backbone, bank, config.batch_size, rt, memory)
    start_group, start_epoch, passes = 0, 0, 0
    checkpoint = EpochCheckpoint(
        out,
        STATE,
        identity,
        on_mismatch="restart",
        who="heads",
        progress=progress,
        legacy_weights=CKPT,
    )
    resumed = checkpoint.load(lambda saved: _resume(saved, bank, best, statuses))
    if checkpoint.damaged is not None:
        # A partly loaded checkpoint: back to the heads' initial state.
        bank = HeadBank(specs, ctx, seed=config.seed)
        statuses = [HeadStatus(key=s.key, lr=config.lr) for s in specs]
        best = _cpu(bank.state_dict())
    elif resumed is not None:
        if [list(g) for g in resumed["groups"]] != [list(g) for g in plan.groups]:
            # The heads do not depend on the grouping; the checkpoint's one is kept so
            # that its group resumes where it stopped.
            plan = plan_head_groups(
                backbone, bank, config.batch_size, rt, memory, fixed=resumed["groups"]
            )
        start_group, start_epoch = resumed["group"], resumed["epoch"]
        passes = resumed["backbone_passes"]
        group = f"group {start_group + 1} of {len(plan)} " if len(plan) > 1 else ""
        progress.log(f"heads: resuming {group}after epoch {start_epoch} of {config.epochs}")
    progress.log(plan.describe(specs))

    if rt.amp_dtype is not None:
        autocast: Any = rt.autocast()
    else:
        autocast = torch.autocast("cpu", dtype=torch.bfloat16) if config.bf16 else nullcontext()
    t_start = time.perf_counter()
    n_train = (
        len(splits.train)
        if config.train_limit is None
        else min(config.train_limit, len(splits.train))
    )
    steps = math.ceil(n_train / config.batch_size)
    for g in range(start_group, len(plan)):
        group = plan.groups[g]
        for i in group:
            bank.heads[i].to(rt.device)  # on CUDA only the group's heads wait on the GPU
        optimizers = {i: torch.optim.Adam(bank.heads[i].parameters(), lr=config.lr) for i in group}
        first = 0
        if resumed is not None and g == start_group:
            first = start_epoch
            for i, opt in optimizers.items():
                meta = resumed["optimizers"].get(i)
                if meta is not None:
                    opt.load_state_dict(
                        unflatten_optimizer_state(resumed["tensors"], meta, prefix=f"opt{i}")
                    )
            resumed = None  # its tensors are not needed any more
        upto = max(bank.specs[i].location for i in group)
        locations = sorted({bank.specs[i].location for i in group})
        label = f"heads group {g + 1}/{len(plan)} epoch" if len(plan) > 1 else "heads epoch"
        for epoch in range(first, config.epochs):
            active = [i for i in group if statuses[i].state == "training"]
            if not active:
                break
            bank.train()
            gen = loop.generator(config.seed, epoch)
            task = f"{label} {epoch + 1}/{config.epochs}"
            loss_sums = dict.fromkeys(active, 0.0)
            seen = 0
            states: dict[int, torch.Tensor] = {}
            batches = loop.batches(
                splits.train,
                config.batch_size,
                generator=gen,
                transform=transform,
                task=task,
                limit=steps,
            )
            for b, x, y in batches:
                with torch.no_grad(), loop.autocast():
                    if states_from is None:
                        plain = backbone.hidden_states(x, upto=upto)
                        states = {m: plain[m - 1] for m in locations}
                    else:
                        draws = torch.Generator().manual_seed(
                            derive_seed(config.seed, "states", epoch, b)
                        )
                        states = states_from.states(x, locations, draws)
                passes += 1
                for i in list(active):
                    head, spec = bank.heads[i], bank.specs[i]
                    # Dropout draws from the global generator: a seed per head, epoch and batch
                    # makes a head's training independent of the other heads (groups and shards
                    # equal the joint run) and a resumed run continue exactly as the
                    # uninterrupted one.
                    torch.manual_seed(derive_seed(config.seed, spec.key, epoch, b))
                    with autocast:
                        logits = head(states[spec.location])
                    loss = kind.loss(logits, y)
                    if head.uncertainty is not None:
                        u = head.uncertainty(logits.detach().float())
                        loss = loss + config.uncertainty_weight * F.mse_loss(
                            u, head.uncertainty.target(logits, y)
                        )
                    if not torch.isfinite(loss):
                        _diverge(bank, i, statuses[i], best, progress, epoch, b)
                        active.remove(i)
                        continue
                    loss_sums[i] += float(loss.detach()) * len(y)
                    # Heads share no parameters and read detached states: stepping each head
                    # right after its own backward gives what one backward of the summed loss
                    # gives, while holding one head's activations at a time.
                    loop.optimise(loss, optimizers[i])
                seen += len(y)
                loop.advance(task, heads=len(active))
            del states
            val_loss, val_acc = _validate(
                backbone, bank, splits, config, active, transform, upto, autocast, rt, kind
            )
            passes += math.ceil(len(splits.val) / bounded_batch(config.eval_batch_size, splits.val))
            for i in active:
                _after_epoch(
                    statuses[i],
                    bank,
                    i,
                    best,
                    optimizers[i],
                    config,
                    epoch,
                    loss_sums[i] / max(seen, 1),
                    val_loss[i],
                    val_acc[i],
                )
            _checkpoint(checkpoint, plan, g, epoch + 1, bank, best, optimizers, statuses, passes)
            done = sum(statuses[i].state != "training" for i in group)
            right = "accuracy" if kind.quality == "accuracy" else "share of exact counts"
            progress.log(
                f"{label} {epoch + 1}: best validation {right} "
                f"{max(statuses[i].best_acc for i in group):.4f}, "
                f"{len(group) - done} of {len(group)} heads still training"
            )
        for i in group:
            if statuses[i].state == "training":
                statuses[i].state = "finished"
            bank.heads[i].to("cpu")
        del optimizers  # the group's gradients and Adam state go with it
    for st in statuses:
        if st.state == "training":
            st.state = "finished"
    bank.to("cpu")
    backbone.to("cpu")
    bank.load_state_dict(best)
    bank.eval()
    result = HeadTrainResult(bank, statuses, time.perf_counter() - t_start, passes)
    bank.save(out / WEIGHTS, {"identity": identity})
    atomic_write_json(
        out / SUMMARY, {"identity": identity, "config": asdict(config), **result.summary()}
    )
    return result


def _resume(
    resumed: Resumed,
    bank: HeadBank,
    best: dict[str, torch.Tensor],
    statuses: list[HeadStatus],
) -> dict[str, Any]:
    """Load the epoch checkpoint into ``bank``, ``best`` and ``statuses``. Returns the group,
    epoch, passes, grouping and optimiser states to resume."""
    saved, tensors = resumed.state, resumed.tensors
    keys = [s.key for s in bank.specs]
    groups = [[keys.index(k) for k in g] for g in saved.get("groups") or [keys]]
    group = int(saved.get("group", 0))
    own = {k[5:]: v for k, v in tensors.items() if k.startswith("bank.")}
    wanted = {f"heads.{i}." for i in groups[group]}
    missing = [k for k in bank.state_dict() if k[: k.index(".", 6) + 1] in wanted and k not in own]
    if missing:
        raise KeyError(f"no weights for {missing[0]}")
    bank.load_state_dict(own, strict=False)
    saved_best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
    if saved_best.keys() != best.keys():
        raise KeyError("the best weights do not match the heads")
    best.update(saved_best)
    metas = saved["optimizers"]
    if isinstance(metas, list):  # one group: a state per head, in order
        metas = dict(enumerate(metas))
    statuses[:] = [_status(s) for s in saved["statuses"]]
    return {
        "group": group,
        "groups": groups,
        "epoch": int(saved["epoch"]),
        "backbone_passes": int(saved["backbone_passes"]),
        "optimizers": {int(i): m for i, m in metas.items()},
        "tensors": tensors,
    }


def _cpu(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {k: v.detach().to("cpu", copy=True) for k, v in tensors.items()}


def _status(saved: dict[str, Any]) -> HeadStatus:
    """A status read back from JSON, where an infinite best loss is stored as null."""
    best = saved.get("best_loss")
    return HeadStatus(**{**saved, "best_loss": math.inf if best is None else float(best)})


def _diverge(
    bank: HeadBank,
    i: int,
    st: HeadStatus,
    best: dict[str, torch.Tensor],
    progress: Progress,
    epoch: int,
    batch: int,
) -> None:
    st.state = "diverged"
    prefix = f"heads.{i}."
    bank.heads[i].load_state_dict(
        {k[len(prefix) :]: v for k, v in best.items() if k.startswith(prefix)}
    )  # load_state_dict copies onto the head's own device
    progress.log(
        f"head {st.key}: loss became non-finite at epoch {epoch + 1}, batch {batch + 1}; "
        "stopped and restored to its best weights, the others train on"
    )


@torch.no_grad()
def _validate(backbone, bank, splits, config, active, transform, upto, autocast, rt, kind):  # type: ignore[no-untyped-def]
    bank.eval()
    loss = dict.fromkeys(active, 0.0)
    correct = dict.fromkeys(active, 0)
    batch = bounded_batch(config.eval_batch_size, splits.val)
    for _, x, y in iterate_batches(splits.val, batch, pin_memory=rt.pin_memory):
        x, y = rt.to(x, y)
        with rt.autocast():
            states = backbone.hidden_states(transform(x), upto=upto)
        for i in active:
            with autocast:
                logits = bank.heads[i](states[bank.specs[i].location - 1]).float()
            loss[i] += float(kind.loss(logits, y)) * len(y)
            correct[i] += int((kind.statistics(logits)[2] == y).sum())
    n = max(len(splits.val), 1)
    return {i: v / n for i, v in loss.items()}, {i: v / n for i, v in correct.items()}


def _after_epoch(
    st: HeadStatus,
    bank: HeadBank,
    i: int,
    best: dict[str, torch.Tensor],
    opt: torch.optim.Optimizer,
    config: HeadTrainConfig,
    epoch: int,
    train_loss: float,
    val_loss: float,
    val_acc: float,
) -> None:
    st.epochs = epoch + 1
    st.history.append(
        {
            "epoch": epoch + 1,
            "train_loss": train_loss,
            "val_loss": val_loss,
            "val_acc": val_acc,
            "lr": st.lr,
        }
    )
    if not math.isfinite(val_loss):
        st.state = "diverged"
        return
    if val_loss < st.best_loss:
        st.best_loss, st.best_acc, st.best_epoch = val_loss, val_acc, epoch + 1
        st.bad_epochs = st.since_decay = 0
        prefix = f"heads.{i}."
        for k, v in bank.heads[i].state_dict().items():
            best[prefix + k] = v.detach().to("cpu", copy=True)
        return
    st.bad_epochs += 1
    st.since_decay += 1
    if st.bad_epochs >= config.early_stop_patience:
        st.state = "stopped"
    elif st.since_decay > config.plateau_patience:
        st.lr *= config.plateau_factor
        st.since_decay = 0
        for group in opt.param_groups:
            group["lr"] = st.lr


def _checkpoint(
    checkpoint: EpochCheckpoint,
    plan: HeadGroupPlan,
    group: int,
    epoch: int,
    bank: HeadBank,
    best: dict[str, torch.Tensor],
    optimizers: dict[int, torch.optim.Optimizer],
    statuses: list[HeadStatus],
    passes: int,
) -> None:
    """The group's current weights and Adam state, and every head's best weights and status."""
    tensors = {
        f"bank.heads.{i}.{k}": v
        for i in plan.groups[group]
        for k, v in bank.heads[i].state_dict().items()
    }
    tensors.update({f"best.{k}": v for k, v in best.items()})
    metas = {}
    for i, opt in optimizers.items():
        t, meta = flatten_optimizer_state(opt.state_dict(), prefix=f"opt{i}")
        tensors.update(t)
        metas[str(i)] = meta
    checkpoint.save(
        epoch,
        tensors,
        {
            "group": group,
            "groups": plan.keys(bank.specs),
            "backbone_passes": passes,
            "statuses": [asdict(s) for s in statuses],
            "optimizers": metas,
        },
    )
