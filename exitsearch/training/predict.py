"""Every trained head's per-sample outputs on validation and test, cached as arrays.

For each split: one row per head (in the bank's order) plus a last row for the backbone's own
final exit, one column per sample. The search reads only this.

* ``confidence``: max-softmax probability (LGViT eq. 16).
* ``entropy``: entropy of the softmax divided by ``log(num_classes)``, in [0, 1].
* ``pred``: predicted label; ``correct = pred == labels``.
* ``uncertainty``: MEViT's predicted uncertainty (eq. 3); NaN for heads without one.

For a counting task (:mod:`exitsearch.core.task`) the prediction is the rounded count, the
confidence and uncertainty come from each exit's predicted Laplace scale, entropy is NaN, and a
sample's score is minus its absolute error.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from exitsearch._io import atomic_path, atomic_write_json, read_json
from exitsearch.backbone.adapter import Backbone
from exitsearch.core.task import CLASSIFICATION, get_task
from exitsearch.data.loader import bounded_batch, iterate_batches
from exitsearch.data.splits import DataSplits
from exitsearch.device import Runtime, resolve_device
from exitsearch.errors import CacheError
from exitsearch.heads import HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.progress import NullProgress, Progress

__all__ = ["Predictions", "SplitPredictions", "StatesFn", "predict", "predict_states"]

FINAL = "final"


@dataclass(frozen=True)
class SplitPredictions:
    labels: np.ndarray  # (n,) int64
    confidence: np.ndarray  # (H + 1, n) float32
    entropy: np.ndarray  # (H + 1, n) float32
    pred: np.ndarray  # (H + 1, n) int32
    uncertainty: np.ndarray  # (H + 1, n) float32, NaN without a predictor

    @property
    def correct(self) -> np.ndarray:
        return self.pred == self.labels[None, :]

    def scores(self, task: str | None = None) -> np.ndarray:
        """Per-sample score of every row (higher is better): right/wrong, or minus the error."""
        return get_task(task).scores(self.pred, self.labels)

    @property
    def num_samples(self) -> int:
        return int(self.labels.shape[0])

    def accuracy(self) -> np.ndarray:
        """Accuracy of every row (heads, then the final exit)."""
        return self.correct.mean(axis=1)


@dataclass(frozen=True)
class Predictions:
    """Cached outputs of the heads in ``heads`` (row i) and the final exit (last row)."""

    heads: list[HeadSpec]
    splits: dict[str, SplitPredictions]
    num_classes: int
    task: str = CLASSIFICATION

    def row(self, key: str) -> int:
        if key == FINAL:
            return len(self.heads)
        for i, s in enumerate(self.heads):
            if s.key == key:
                return i
        raise KeyError(f"no cached predictions for head {key!r}")

    def subset(self, keys: list[str]) -> Predictions:
        """The rows of the heads named by ``keys`` (in that order) and the final exit's."""
        return Predictions.gather(keys, [self])

    @classmethod
    def gather(cls, keys: list[str], parts: list[Predictions]) -> Predictions:
        """The rows of the heads named by ``keys`` (in that order), each from the first of
        ``parts`` that holds it, and the final exit's row of the first part. The parts are
        predictions of the same backbone on the same samples."""
        first = parts[0]
        where = []
        for k in keys:
            part = next((p for p in parts if any(s.key == k for s in p.heads)), None)
            if part is None:
                raise KeyError(f"no cached predictions for head {k!r}")
            where.append((part, part.row(k)))
        splits = {}
        for name, sp in first.splits.items():
            fields = {}
            for field in ("confidence", "entropy", "pred", "uncertainty"):
                rows = [getattr(p.splits[name], field)[r] for p, r in where]
                rows.append(getattr(sp, field)[-1])
                fields[field] = np.stack(rows)
            splits[name] = SplitPredictions(sp.labels, **fields)
        heads = [p.heads[r] for p, r in where]
        return cls(heads, splits, first.num_classes, first.task)

    def save(self, folder: str | Path) -> None:
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        for name, sp in self.splits.items():
            with atomic_path(out / f"{name}.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    labels=sp.labels,
                    confidence=sp.confidence,
                    entropy=sp.entropy,
                    pred=sp.pred,
                    uncertainty=sp.uncertainty,
                )
        atomic_write_json(
            out / "predictions.json",
            {
                "heads": [s.to_dict() | {"key": s.key} for s in self.heads],
                "splits": list(self.splits),
                "num_classes": self.num_classes,
                **({} if self.task == CLASSIFICATION else {"task": self.task}),
            },
        )

    @classmethod
    def load(cls, folder: str | Path) -> Predictions:
        root = Path(folder)
        meta = read_json(root / "predictions.json")
        splits = {}
        for name in meta["splits"]:
            try:
                with np.load(root / f"{name}.npz", allow_pickle=False) as z:
                    splits[name] = SplitPredictions(**{k: z[k] for k in z.files})
            except (OSError, ValueError, KeyError, TypeError) as exc:
                raise CacheError(
                    f"{root / (name + '.npz')}: unreadable predictions ({exc})"
                ) from None
        return cls(
            [HeadSpec.from_dict(h) for h in meta["heads"]],
            splits,
            int(meta["num_classes"]),
            meta.get("task", CLASSIFICATION),
        )


# A model's forward for the prediction loop: a transformed batch on the device in, the state
# after every block the heads read ({block: tokens}, blocks numbered 1..L) and the final
# exit's outputs out.
StatesFn = Callable[[torch.Tensor], tuple[Mapping[int, torch.Tensor], torch.Tensor]]


@torch.no_grad()
def predict_states(
    states_of: StatesFn,
    bank: HeadBank,
    splits: DataSplits,
    transform: Callable[[torch.Tensor], torch.Tensor],
    rt: Runtime,
    *,
    task: str = CLASSIFICATION,
    names: tuple[str, ...] = ("val", "test"),
    batch_size: int = 1000,
    progress: Progress | None = None,
    label: str = "",
    num_classes: int,
) -> Predictions:
    """The prediction loop: ``states_of`` once per batch, every head of ``bank`` on the state
    after its block, the task's statistics of every exit written into preallocated arrays per
    split (memory grows with the samples only by a few numbers per sample and head).

    :func:`predict` runs it on a backbone, :func:`exitsearch.pausing.predict_under_pause` on a
    backbone under a pause configuration.
    """
    progress = progress or NullProgress()
    kind = get_task(task)
    out: dict[str, SplitPredictions] = {}
    rows = len(bank) + 1
    for name in names:
        data = splits.get(name)
        n = len(data)
        batch = bounded_batch(batch_size, data)
        conf = np.empty((rows, n), np.float32)
        ent = np.empty((rows, n), np.float32)
        pred = np.empty((rows, n), np.int32)
        unc = np.full((rows, n), np.nan, np.float32)
        what = f"predict {name}{label}"
        progress.start(what, math.ceil(n / batch))
        for idx, x, _ in iterate_batches(data, batch, pin_memory=rt.pin_memory):
            with rt.autocast():
                states, final = states_of(transform(rt.to(x)))
            cols = idx.numpy()
            for i, (spec, head) in enumerate(bank):
                with rt.autocast():
                    logits = head(states[spec.location]).float()
                c, e, p, u = kind.statistics(logits)
                conf[i, cols], ent[i, cols], pred[i, cols] = (t.cpu().numpy() for t in (c, e, p))
                if u is not None:
                    unc[i, cols] = u.cpu().numpy()
                elif head.uncertainty is not None:
                    unc[i, cols] = head.uncertainty(logits).float().cpu().numpy()
            c, e, p, u = kind.statistics(final.float())
            conf[-1, cols], ent[-1, cols], pred[-1, cols] = (t.cpu().numpy() for t in (c, e, p))
            if u is not None:
                unc[-1, cols] = u.cpu().numpy()
            progress.advance(what)
        progress.finish(what)
        out[name] = SplitPredictions(np.asarray(data.y, np.int64), conf, ent, pred, unc)
    return Predictions(list(bank.specs), out, num_classes, kind.name)


def predict(
    backbone: Backbone,
    bank: HeadBank,
    splits: DataSplits,
    names: tuple[str, ...] = ("val", "test"),
    batch_size: int = 1000,
    progress: Progress | None = None,
    device: str | Runtime | None = None,
) -> Predictions:
    """Run the backbone once per batch and every head of ``bank`` on its location's state
    (:func:`predict_states`). ``device`` defaults to the CPU.
    """
    rt = resolve_device(device or "cpu")
    rt.place(backbone.eval(), bank.eval())
    upto = max((s.location for s in bank.specs), default=0)

    def states_of(x: torch.Tensor) -> tuple[dict[int, torch.Tensor], torch.Tensor]:
        states = backbone.hidden_states(x)
        return dict(enumerate(states[:upto], start=1)), backbone.final_head(states[-1])

    try:
        return predict_states(
            states_of,
            bank,
            splits,
            backbone.input_transform(),
            rt,
            task=splits.task,
            names=names,
            batch_size=batch_size,
            progress=progress,
            num_classes=backbone.num_classes,
        )
    finally:
        backbone.to("cpu")
        bank.to("cpu")
