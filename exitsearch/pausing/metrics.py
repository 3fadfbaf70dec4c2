"""Task metrics accumulated over a split: top-1 accuracy, and mIoU from a confusion matrix."""

from __future__ import annotations

import abc

import numpy as np
import torch

__all__ = ["Accuracy", "MeanIoU", "Metric", "confusion_matrix", "iou_per_class", "mean_iou"]


def confusion_matrix(pred: np.ndarray, target: np.ndarray, num_classes: int) -> np.ndarray:
    """``(C, C)`` int64 counts: row = true label, column = predicted label."""
    t = np.asarray(target, dtype=np.int64).ravel()
    p = np.asarray(pred, dtype=np.int64).ravel()
    return np.bincount(t * num_classes + p, minlength=num_classes * num_classes).reshape(
        num_classes, num_classes
    )


def iou_per_class(cm: np.ndarray) -> np.ndarray:
    """IoU of each class, ``TP / (TP + FP + FN)``; NaN for a class neither in the labels nor in
    the predictions."""
    cm = np.asarray(cm, dtype=np.float64)
    inter = np.diag(cm)
    union = cm.sum(0) + cm.sum(1) - inter
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(union > 0, inter / union, np.nan)


def mean_iou(cm: np.ndarray) -> float:
    """Mean IoU over the classes present in the labels or the predictions of the split
    (mmsegmentation's ``nanmean``): a class predicted but never true counts as 0."""
    iou = iou_per_class(cm)
    return float(np.nanmean(iou)) if np.isfinite(iou).any() else float("nan")


class Metric(abc.ABC):
    """A metric accumulated batch by batch; higher is better."""

    name: str

    @abc.abstractmethod
    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        """Called once per batch with the main head's logits and the batch's targets."""

    @abc.abstractmethod
    def value(self) -> float:
        """The metric over every batch seen so far."""


class Accuracy(Metric):
    name = "accuracy"

    def __init__(self) -> None:
        self.correct = 0
        self.total = 0

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        self.correct += int((logits.argmax(1) == target).sum())
        self.total += int(target.numel())

    def value(self) -> float:
        return self.correct / self.total if self.total else float("nan")


class MeanIoU(Metric):
    """mIoU from a confusion matrix accumulated over the whole split (not averaged per image)."""

    name = "mIoU"

    def __init__(self, num_classes: int) -> None:
        self.num_classes = num_classes
        self.cm = np.zeros((num_classes, num_classes), dtype=np.int64)

    def update(self, logits: torch.Tensor, target: torch.Tensor) -> None:
        pred = logits.argmax(1).cpu().numpy()
        self.cm += confusion_matrix(pred, target.cpu().numpy(), self.num_classes)

    def value(self) -> float:
        return mean_iou(self.cm)
