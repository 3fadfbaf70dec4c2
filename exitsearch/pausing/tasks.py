"""The tasks a PAUMER model is trained for: what its heads predict, from which targets.

* ``classification`` (the embedded default): the main head is the backbone's own classifier;
  the auxiliary decoder predicts the image label from every patch token.
* ``segmentation`` (Fashion-MNIST pixels, see :mod:`exitsearch.pausing.segmentation`): a
  Segmenter mask transformer on the assembled patch tokens; the auxiliary decoder predicts the
  majority pixel label of each patch, as in the paper.

New tasks register with :func:`register_task` and are built by :func:`create_task`.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar, TypeVar

import torch
import torch.nn.functional as F
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.data.loader import iterate_batches
from exitsearch.data.samples import ArrayDataset
from exitsearch.data.transforms import augment as augment_images
from exitsearch.errors import ConfigError
from exitsearch.pausing.metrics import Accuracy, MeanIoU, Metric
from exitsearch.pausing.segmentation import (
    NUM_SEGMENTATION_CLASSES,
    MaskTransformer,
    patch_labels,
    segmentation_labels,
)
from exitsearch.registry import Registry

__all__ = [
    "ClassificationTask",
    "PauseTask",
    "SegmentationTask",
    "TaskBatch",
    "create_task",
    "list_tasks",
    "register_task",
]


@dataclass(frozen=True)
class TaskBatch:
    """One batch: sample indices, uint8 images, main-head targets, per-patch aux targets."""

    index: torch.Tensor
    images: torch.Tensor
    target: torch.Tensor
    aux_target: torch.Tensor


class PauseTask(abc.ABC):
    """A task for a backbone: its heads' outputs, targets, losses and metric.

    Built once per backbone by :func:`create_task`; ``batches`` is called once per pass over a
    split, ``loss`` and ``aux_loss`` once per training step, ``new_metric`` once per evaluation.
    """

    name: ClassVar[str]

    def __init__(self, backbone: Backbone, label_smoothing: float = 0.0) -> None:
        self.grid_size = backbone.grid_size
        self.img_size = backbone.img_size
        self.patch_size = self.img_size[0] // self.grid_size[0]
        self.label_smoothing = label_smoothing

    @property
    def num_patches(self) -> int:
        return self.grid_size[0] * self.grid_size[1]

    @property
    @abc.abstractmethod
    def aux_classes(self) -> int:
        """Classes of the auxiliary decoder's per-token prediction."""

    @abc.abstractmethod
    def build_decoder(self, backbone: Backbone, **params: Any) -> nn.Module | None:
        """The main decoder on assembled tokens, or None to use the backbone's own head."""

    @abc.abstractmethod
    def batches(
        self,
        data: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> Iterator[TaskBatch]:
        """Batches of ``data`` in order (or shuffled with ``generator``), augmented on request."""

    @abc.abstractmethod
    def new_metric(self) -> Metric:
        """An empty accumulator of the task's metric."""

    def loss(self, logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Eq. 1: cross-entropy of the main head."""
        return F.cross_entropy(logits, target, label_smoothing=self.label_smoothing)

    def aux_loss(
        self, logits: torch.Tensor, index: torch.Tensor, aux_target: torch.Tensor
    ) -> torch.Tensor:
        """Eq. 2: cross-entropy of the auxiliary decoder on the ``(B, n)`` tokens it saw
        (``index``: their original patch indices) against the per-patch targets ``(B, N)``."""
        target = aux_target.gather(1, index)
        return F.cross_entropy(logits.flatten(0, 1), target.flatten())


class ClassificationTask(PauseTask):
    name = "classification"

    def __init__(self, backbone: Backbone, label_smoothing: float = 0.0) -> None:
        super().__init__(backbone, label_smoothing)
        self.num_classes = backbone.num_classes

    @property
    def aux_classes(self) -> int:
        return self.num_classes

    def build_decoder(self, backbone: Backbone, **params: Any) -> nn.Module | None:
        if params:
            raise ConfigError(f"the classification task takes no decoder parameters, got {params}")
        return None

    def batches(
        self,
        data: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> Iterator[TaskBatch]:
        for idx, xb, yb in iterate_batches(data, batch_size, shuffle=shuffle, generator=generator):
            if augment:
                xb = augment_images(xb, _required(generator))
            yield TaskBatch(idx, xb, yb, yb[:, None].expand(-1, self.num_patches))

    def new_metric(self) -> Metric:
        return Accuracy()


class SegmentationTask(PauseTask):
    """Fashion-MNIST pixel labels (11 classes); masks are computed once per dataset."""

    name = "segmentation"

    def __init__(self, backbone: Backbone, label_smoothing: float = 0.0) -> None:
        super().__init__(backbone, label_smoothing)
        self._masks: dict[str, torch.Tensor] = {}

    @property
    def aux_classes(self) -> int:
        return NUM_SEGMENTATION_CLASSES

    def build_decoder(self, backbone: Backbone, **params: Any) -> nn.Module | None:
        allowed = {"depth", "num_heads", "d_model", "mlp_ratio"}
        unknown = sorted(set(params) - allowed)
        if unknown:
            raise ConfigError(
                f"unknown decoder parameter(s) {', '.join(unknown)}; allowed: {sorted(allowed)}"
            )
        params.setdefault("num_heads", backbone.num_heads)
        return MaskTransformer(
            backbone.embed_dim,
            NUM_SEGMENTATION_CLASSES,
            backbone.grid_size,
            backbone.img_size,
            **params,
        )

    def masks(self, data: ArrayDataset) -> torch.Tensor:
        """Pixel labels ``(N, 1, H, W)`` uint8 of ``data`` (cached by content)."""
        key = data.fingerprint()
        if key not in self._masks:
            if not isinstance(data, ArrayDataset):
                raise ConfigError(
                    "the segmentation task derives pixel labels from Fashion-MNIST images held "
                    f"in memory; {data.origin} is a file source"
                )
            if data.x.shape[1] != 1:
                raise ConfigError(
                    "the segmentation task derives labels from single-channel Fashion-MNIST "
                    f"images, got {data.x.shape[1]} channels"
                )
            self._masks[key] = torch.from_numpy(segmentation_labels(data.x, data.y)[:, None])
        return self._masks[key]

    def batches(
        self,
        data: ArrayDataset,
        batch_size: int,
        *,
        shuffle: bool = False,
        generator: torch.Generator | None = None,
        augment: bool = False,
    ) -> Iterator[TaskBatch]:
        n = len(data)
        order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
        x = torch.from_numpy(data.x)
        masks = self.masks(data)
        for start in range(0, n, batch_size):
            idx = order[start : start + batch_size]
            xb, mb = x[idx], masks[idx]
            if augment:
                generator = _required(generator)
                # one crop and flip for image and labels: augment them as two channels
                both = augment_images(torch.cat([xb, mb], dim=1), generator)
                xb, mb = both[:, :1], both[:, 1:]
            if tuple(mb.shape[-2:]) != self.img_size:
                mb = F.interpolate(mb.float(), size=self.img_size, mode="nearest").to(torch.uint8)
            target = mb[:, 0].long()
            aux = patch_labels(target, self.patch_size, NUM_SEGMENTATION_CLASSES)
            yield TaskBatch(idx, xb, target, aux)

    def new_metric(self) -> Metric:
        return MeanIoU(NUM_SEGMENTATION_CLASSES)


def _required(generator: torch.Generator | None) -> torch.Generator:
    if generator is None:
        raise ValueError("augmentation draws from the epoch's generator; pass one")
    return generator


REGISTRY: Registry[type[PauseTask]] = Registry("task")

T = TypeVar("T", bound=type[PauseTask])


def register_task(cls: T) -> T:
    """Class decorator: make a task available to :func:`create_task` under ``cls.name``."""
    REGISTRY.add(cls.name, cls)
    return cls


register_task(ClassificationTask)
register_task(SegmentationTask)


def list_tasks() -> list[str]:
    return REGISTRY.names()


def create_task(name: str, backbone: Backbone, label_smoothing: float = 0.0) -> PauseTask:
    """Build task ``name`` for ``backbone``.

    Raises:
        ConfigError: unknown task name (the message lists the known ones).
    """
    cls: Callable[..., PauseTask] = REGISTRY.get(name)
    return cls(backbone, label_smoothing)
