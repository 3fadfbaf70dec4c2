"""The tiny but real setting the fine-tuning tests share: two exported bundles.

A 4-block ViT of width 32 on 28 px Fashion-MNIST (16 patches of 7 px), heads trained briefly
classifier-wise on 256 real training images, exported with ``export_bundle`` exactly as
``exitsearch export`` does:

* ``lgvit``: LGViT's heads, ``lph[k=3]@1, lph[k=0]@2, gah[s=2]@3, gah[s=1]@4`` (two of each, so
  that every term of eq. 15 applies), confidence criterion;
* ``mevit``: MEViT's single-layer exits with uncertainty predictors, ``linear@1+u, linear@2+u,
  linear@3+u``, uncertainty criterion.

Also a progress reporter that interrupts training as Ctrl-C would, and a registered strategy
that diverges.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch

from exitsearch.backbone import Backbone, create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.data import DataSpec, DataSplits, load_splits
from exitsearch.export import OperatingPoint, export_bundle
from exitsearch.finetune import ClassifierWise, TrainSettings, register_sampler
from exitsearch.finetune.base import Batch
from exitsearch.finetune.evaluate import cost_model
from exitsearch.finetune.net import MultiExitNet
from exitsearch.heads import HeadSpec
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import pareto_mask
from exitsearch.search.refine import shared_curve
from exitsearch.training import HeadTrainConfig, predict, train_heads

TINY = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
}
DATA = DataSpec(limit=256)
LGVIT_EXITS = (
    HeadSpec("lph", 1, {"k": 3}),
    HeadSpec("lph", 2, {"k": 0}),
    HeadSpec("gah", 3, {"s": 2}),
    HeadSpec("gah", 4, {"s": 1}),
)
MEVIT_EXITS = tuple(HeadSpec("linear", m, uncertainty=True) for m in (1, 2, 3))
HEAD_TRAINING = HeadTrainConfig(epochs=2, batch_size=64, lr=3e-3)
# One epoch per phase, small batches so that an epoch has several steps (alternation, draws).
FAST = TrainSettings(epochs=1, batch_size=64, lr=1e-3, head_lr=1e-3, eval_batch_size=256)


@dataclass
class FinetuneWorld:
    backbone: Backbone
    splits: DataSplits
    lgvit: Path
    mevit: Path


def _export(
    root: Path, name: str, backbone: Backbone, splits: DataSplits, exits, criterion: str
) -> Path:  # type: ignore[no-untyped-def]
    bank = train_heads(backbone, splits, list(exits), HEAD_TRAINING, root / f"{name}-heads").bank
    preds = predict(backbone, bank, splits)
    config = ExitConfig(exits, criterion, (0.5,) * len(exits), "shared")
    costs = cost_model(backbone, config)
    ev = Evaluator(preds, "val", costs)
    curve = shared_curve(ev, config)
    keep = pareto_mask([p.accuracy for p in curve], [p.mean_cost for p in curve])
    front = sorted((p for p, k in zip(curve, keep, strict=True) if k), key=lambda p: p.mean_cost)
    chosen = front[len(front) // 2]
    points = [OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy) for p in front]
    test = Evaluator(preds, "test", costs)
    predicted = {
        "val": ev.evaluate(chosen.config).to_dict(),
        "test": test.evaluate(chosen.config).to_dict(),
    }
    return export_bundle(
        root / name,
        backbone,
        bank,
        chosen.config,
        points,
        predicted,
        {"data": DATA.to_dict(), "head_training": HEAD_TRAINING.__dict__},
    )


def build_world(root: Path) -> FinetuneWorld:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_patch16_224", **TINY)
    splits = load_splits(DATA)
    lgvit = _export(root, "lgvit", backbone, splits, LGVIT_EXITS, "confidence")
    mevit = _export(root, "mevit", backbone, splits, MEVIT_EXITS, "uncertainty")
    return FinetuneWorld(backbone, splits, lgvit, mevit)


class Interrupt:
    """A Progress that raises KeyboardInterrupt, as Ctrl-C would, at the ``step``-th advance of
    the first task whose name contains ``task`` (``step = 0``: when that task starts)."""

    def __init__(self, task: str, step: int = 0) -> None:
        self.task, self.step, self.seen = task, step, 0
        self.tasks: list[str] = []
        self.messages: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        self.tasks.append(task)
        if self.task in task and self.step == 0:
            raise KeyboardInterrupt

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        if self.task in task:
            self.seen += steps
            if self.seen >= self.step > 0:
                raise KeyboardInterrupt

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        self.messages.append(message)


@register_sampler("test-diverges")
class Diverges(ClassifierWise):
    """Classifier-wise, whose loss becomes NaN in the second epoch (tests only)."""

    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        terms = super().loss(net, batch)
        if batch.epoch >= 1:
            terms["loss"] = terms["loss"] * float("nan")
        return terms
