"""Tasks: what an exit predicts, how it is trained, and how a prediction is scored.

Every exit (a head, or the backbone's own) returns ``outputs`` numbers per sample; the task turns
them into a loss for training, into the per-exit statistics the exit criteria read
(confidence, normalised entropy, prediction, uncertainty) and into a per-sample *score*, higher
is better, whose mean over samples is the run's quality.

* ``classification``: one logit per class; cross-entropy; score = 1 if the prediction is right,
  so quality = accuracy.
* ``counting``: a regression of how many objects an image holds (the crowd-counting experiments
  of Multi-Exit ViT). Each exit returns two numbers, a location ``mu`` and a log scale ``s`` of a
  Laplace distribution of the count, trained by its negative log-likelihood
  ``|y - mu| / b + log b`` with ``b = exp(s)``; the prediction is ``mu`` rounded to a whole count.
  The quality is the mean absolute error (MAE), reported as such; the score is its negative.
  There is no softmax, so the criteria read what the learned scale says (Multi-Exit ViT leaves the
  exit policy open beyond the anytime setting): ``uncertainty`` is ``exp(-0.5 / b)``, the
  probability that the count is off by more than half an object, and ``confidence`` is the
  probability mass of the predicted count's unit interval (for count 0, everything below half an
  object). Entropy has no meaning here.

Adding a task is one module that calls :func:`register_task`.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from exitsearch.core.criteria import exit_statistics
from exitsearch.errors import ConfigError
from exitsearch.registry import Registry

__all__ = [
    "CLASSIFICATION",
    "COUNTING",
    "REGISTRY",
    "Task",
    "get_task",
    "register_task",
    "task_names",
]

CLASSIFICATION = "classification"
COUNTING = "counting"

REGISTRY: Registry[Task] = Registry("task")


def register_task(name: str) -> Callable[[type[Task]], type[Task]]:
    def wrap(cls: type[Task]) -> type[Task]:
        cls.name = name
        REGISTRY.add(name, cls())
        return cls

    return wrap


def get_task(name: str | None) -> Task:
    """The task called ``name`` (classification for ``None``)."""
    return REGISTRY.get(name or CLASSIFICATION)


def task_names() -> list[str]:
    return REGISTRY.names()


Statistics = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]


class Task(abc.ABC):
    """One kind of prediction. Subclasses set the class attributes and implement the methods."""

    name: str = ""
    quality: str = "accuracy"
    """The name of the quality a run reports (``accuracy``, ``MAE``)."""
    higher_is_better: bool = True
    """Whether a larger *reported* quality is better (scores always are)."""
    native_uncertainty: bool = False
    """Every exit predicts an uncertainty itself (no MEViT predictor needed)."""
    unsupported_criteria: tuple[str, ...] = ()
    augment: str = "crop,flip"
    """The training augmentations that keep a sample's target."""
    version: int = 1
    """Changes when the loss or the head initialisation changes (caches keyed on it)."""

    @abc.abstractmethod
    def outputs(self, num_classes: int) -> int:
        """How many numbers an exit returns for data of ``num_classes`` labels."""

    @abc.abstractmethod
    def loss(
        self, out: torch.Tensor, y: torch.Tensor, label_smoothing: float = 0.0
    ) -> torch.Tensor:
        """Mean training loss of a batch of exit outputs against targets ``y``."""

    @abc.abstractmethod
    def statistics(self, out: torch.Tensor) -> Statistics:
        """``(confidence, entropy, prediction, uncertainty or None)`` per sample, float32 (the
        prediction int64). The exported runtime decides exits with this same method."""

    @abc.abstractmethod
    def scores(self, pred: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """Per-sample score of predictions ``pred`` (rows, n) against ``labels`` (n,)."""

    def init_head(self, head: torch.nn.Module, labels: np.ndarray) -> None:
        """Start a new exit head where training should (classification: as created)."""
        return None

    def ranked(self, out: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` most probable labels of each sample and their probabilities, most
        probable first: ``(labels (B, k) int64, probabilities (B, k) float32)``."""
        probs = torch.softmax(out.float(), dim=-1).cpu().numpy()
        order = np.argsort(-probs, axis=-1, kind="stable")[:, : min(k, probs.shape[-1])]
        return order.astype(np.int64), np.take_along_axis(probs, order, axis=-1)

    def shown(self, quality: float) -> float:
        """The quality as reported, from a mean score."""
        return float(quality)

    def score_of(self, shown: float) -> float:
        """Inverse of :meth:`shown`."""
        return float(shown)

    def chance(self, labels: np.ndarray) -> float:
        """Mean score of the best constant prediction on ``labels`` (no information)."""
        if labels.size == 0:
            return 0.0
        return float(np.bincount(labels).max() / labels.size)

    def check_outputs(self, num_classes: int, outputs: int) -> None:
        """Raise if a model returning ``outputs`` numbers cannot serve data of ``num_classes``.

        Raises:
            ConfigError: with the override that fixes it.
        """
        want = self.outputs(num_classes)
        if outputs != want:
            raise ConfigError(
                f"{self.mismatch(num_classes, outputs)}; pass --override num_classes={want}"
            )

    def mismatch(self, num_classes: int, outputs: int) -> str:
        return f"{self.name} needs {self.outputs(num_classes)} outputs per exit but the backbone returns {outputs}"

    def format(self, quality: float) -> str:
        """The reported quality for a table: ``0.8940``, ``0.412``."""
        return f"{self.shown(quality):.4f}"


@register_task(CLASSIFICATION)
class Classification(Task):
    quality = "accuracy"

    def outputs(self, num_classes: int) -> int:
        return num_classes

    def mismatch(self, num_classes: int, outputs: int) -> str:
        return f"the data has {num_classes} classes but the backbone predicts {outputs}"

    def loss(self, out, y, label_smoothing=0.0):  # type: ignore[no-untyped-def]
        return F.cross_entropy(out.float(), y, label_smoothing=label_smoothing)

    def statistics(self, out):  # type: ignore[no-untyped-def]
        conf, ent, pred = exit_statistics(out)
        return conf, ent, pred, None

    def scores(self, pred, labels):  # type: ignore[no-untyped-def]
        return pred == labels[None, :] if pred.ndim == 2 else pred == labels


MAX_LOG_SCALE = 6.0
"""The log scale is clamped to +-6 (b from 0.0025 to 403 objects) so the loss stays finite."""


def laplace_parts(out: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(mu, b)`` of a counting exit's outputs (B, 2)."""
    out = out.float()
    return out[:, 0], out[:, 1].clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE).exp()


def _laplace_cdf(x: torch.Tensor, mu: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    z = (x - mu) / b
    half = 0.5 * torch.exp(-z.abs())
    return torch.where(z < 0, half, 1.0 - half)


@register_task(COUNTING)
class Counting(Task):
    quality = "MAE"
    higher_is_better = False
    native_uncertainty = True
    unsupported_criteria = ("entropy",)
    augment = "flip"
    version = 2  # a crop could cut objects away and change the count

    def outputs(self, num_classes: int) -> int:
        return 2

    def mismatch(self, num_classes: int, outputs: int) -> str:
        return (
            f"counting needs 2 outputs per exit (a Laplace location and log scale) but the "
            f"backbone returns {outputs}"
        )

    def loss(self, out, y, label_smoothing=0.0):  # type: ignore[no-untyped-def]
        out = out.float()
        s = out[:, 1].clamp(-MAX_LOG_SCALE, MAX_LOG_SCALE)
        return ((y.float() - out[:, 0]).abs() * torch.exp(-s) + s).mean()

    def statistics(self, out):  # type: ignore[no-untyped-def]
        mu, b = laplace_parts(out)
        pred = mu.round().clamp_(min=0.0)
        # count 0 holds everything below half an object: no count is negative
        below = torch.where(pred > 0, _laplace_cdf(pred - 0.5, mu, b), 0.0)
        conf = _laplace_cdf(pred + 0.5, mu, b) - below
        unc = torch.exp(-0.5 / b)
        return conf, torch.full_like(mu, math.nan), pred.long(), unc

    def init_head(self, head: torch.nn.Module, labels: np.ndarray) -> None:
        """Start the head at the best constant prediction of the training counts: its output
        layer's bias at their median and the log of their mean distance to it. An exit head
        trains for few steps, and an output that must first drift from 0 to a typical count
        spends them on that."""
        layers = [m for m in head.modules() if isinstance(m, torch.nn.Linear)]
        out = next((m for m in reversed(layers) if m.out_features == 2), None)
        if out is None or out.bias is None or labels.size == 0:
            return
        centre = float(np.median(labels))
        spread = max(float(np.abs(labels - centre).mean()), 0.5)
        with torch.no_grad():
            out.bias[0] = centre
            out.bias[1] = math.log(spread)

    def ranked(self, out: torch.Tensor, k: int) -> tuple[np.ndarray, np.ndarray]:
        """The ``k`` counts with the most Laplace mass (a count ``c`` holds the interval
        ``[c - 0.5, c + 0.5)``, count 0 everything below 0.5): the whole counts nearest ``mu``."""
        mu, b = laplace_parts(out)
        centre = mu.round().clamp(min=0.0)
        # candidates nearest first (0, -1, +1, -2, ...), so a tie keeps the predicted count first
        steps = [0.0] + [float(sign * d) for d in range(1, k + 1) for sign in (-1, 1)]
        cand = (centre[:, None] + torch.tensor(steps)[None, :]).clamp(min=0.0)
        upper = _laplace_cdf(cand + 0.5, mu[:, None], b[:, None])
        lower = torch.where(cand > 0, _laplace_cdf(cand - 0.5, mu[:, None], b[:, None]), 0.0)
        mass = upper - lower
        # a count clamped to 0 twice is one candidate
        zero = cand == 0
        seen_zero = zero & (torch.cumsum(zero.int(), dim=1) > 1)
        mass = torch.where(seen_zero, -1.0, mass)
        values, order = torch.sort(mass, dim=1, descending=True, stable=True)
        labels = torch.gather(cand, 1, order[:, :k]).long()
        top = values[:, :k]
        return labels.cpu().numpy(), top.clamp(min=0.0).cpu().numpy()

    def scores(self, pred, labels):  # type: ignore[no-untyped-def]
        ref = labels[None, :] if pred.ndim == 2 else labels
        return -np.abs(pred.astype(np.float32) - ref.astype(np.float32))

    def shown(self, quality: float) -> float:
        return -float(quality)

    def score_of(self, shown: float) -> float:
        return -float(shown)

    def chance(self, labels: np.ndarray) -> float:
        if labels.size == 0:
            return 0.0
        return -float(np.abs(labels - np.median(labels)).mean())

    def format(self, quality: float) -> str:
        return f"{self.shown(quality):.3f}"
