"""Exit criteria: when a sample leaves at an exit.

Every criterion turns cached head outputs into a *readiness* score per exit and sample, and a
user-facing threshold into a score bound: a sample leaves at the first exit whose readiness is
``>= bound``. The same criterion objects decide exits in the exported runtime, so cached
evaluation and run-time behaviour agree.

* ``confidence``: max-softmax probability >= t (LGViT eq. 16; Multi-Exit ViT, Ryu).
* ``entropy``: normalised entropy H(p)/log C <= t (BranchyNet; PAUMER's criterion per sample).
* ``patience``: the prediction is unchanged over the last t exits (PABEE); integer t.
* ``uncertainty``: MEViT's predicted uncertainty u <= t (eq. 3).
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Sequence

import numpy as np
import torch

from exitsearch.registry import Registry

__all__ = [
    "REGISTRY",
    "ExitCriterion",
    "create_criterion",
    "exit_statistics",
    "list_criteria",
    "register_criterion",
]

REGISTRY: Registry[type[ExitCriterion]] = Registry("exit criterion")


def register_criterion(name: str) -> Callable[[type[ExitCriterion]], type[ExitCriterion]]:
    def wrap(cls: type[ExitCriterion]) -> type[ExitCriterion]:
        REGISTRY.add(name, cls)
        cls.name = name
        return cls

    return wrap


def list_criteria() -> list[str]:
    return REGISTRY.names()


def create_criterion(name: str) -> ExitCriterion:
    return REGISTRY.get(name)()


class ExitCriterion(abc.ABC):
    """Base class. ``integer`` criteria take whole-number thresholds."""

    name: str = ""
    integer: bool = False
    needs_uncertainty: bool = False
    # Readiness at an exit reads the earlier exits of the same configuration (their
    # predictions), so it is computed per configuration, not cached per head, and every exit
    # of a configuration matters even if no sample leaves there.
    reads_history: bool = False
    # What a threshold is compared with, how (">=" or "<="), and the range that quantity can take.
    quantity: str = ""
    comparison: str = ">="
    value_range: tuple[float, float] = (-np.inf, np.inf)

    def describe_threshold(self, threshold: float) -> str:
        """``conf>=0.9``, ``entropy<=0.2``; ``always``/``never`` outside the quantity's range."""
        low, high = self.value_range
        t = float(threshold)
        if self.comparison == ">=":
            always, never = t <= low, t > high
        else:
            always, never = t >= high, t < low
        if always or never:
            return "always" if always else "never"
        return f"{self.quantity}{self.comparison}{t:.4g}"

    @abc.abstractmethod
    def readiness(
        self, confidence: np.ndarray, entropy: np.ndarray, pred: np.ndarray, uncertainty: np.ndarray
    ) -> np.ndarray:
        """Readiness (E, n) of each of the E exits (rows, in exit order) for n samples."""

    @abc.abstractmethod
    def bound(self, threshold: float) -> float:
        """The readiness a sample needs to leave, for a user threshold."""

    @abc.abstractmethod
    def threshold(self, bound: float) -> float:
        """Inverse of :meth:`bound`."""

    def fires(self, readiness: np.ndarray, thresholds: Sequence[float]) -> np.ndarray:
        bounds = np.asarray([self.bound(t) for t in thresholds], dtype=np.float64)[:, None]
        return readiness >= bounds

    def runtime_readiness(
        self,
        conf: torch.Tensor,
        ent: torch.Tensor,
        pred: torch.Tensor,
        unc: torch.Tensor | None,
        history: torch.Tensor | None,
    ) -> torch.Tensor:
        """Readiness at one exit in the runtime; ``history`` holds earlier exits' predictions
        (samples x exits so far) for criteria that need them."""
        r = self.readiness(
            conf.numpy()[None],
            ent.numpy()[None],
            pred.numpy()[None],
            (unc.numpy() if unc is not None else np.full(conf.shape, np.nan, np.float32))[None],
        )
        return torch.from_numpy(r[0])


@register_criterion("confidence")
class Confidence(ExitCriterion):
    quantity = "conf"
    comparison = ">="
    value_range = (0.0, 1.0)

    def readiness(self, confidence, entropy, pred, uncertainty):  # type: ignore[no-untyped-def]
        return confidence

    def bound(self, threshold: float) -> float:
        return float(threshold)

    def threshold(self, bound: float) -> float:
        return float(bound)


@register_criterion("entropy")
class Entropy(ExitCriterion):
    quantity = "entropy"
    comparison = "<="
    value_range = (0.0, 1.0)

    def readiness(self, confidence, entropy, pred, uncertainty):  # type: ignore[no-untyped-def]
        return -entropy

    def bound(self, threshold: float) -> float:
        return -float(threshold)

    def threshold(self, bound: float) -> float:
        return -float(bound)


@register_criterion("uncertainty")
class Uncertainty(ExitCriterion):
    quantity = "u"
    comparison = "<="
    value_range = (0.0, 1.0)

    needs_uncertainty = True

    def readiness(self, confidence, entropy, pred, uncertainty):  # type: ignore[no-untyped-def]
        # Rows without a predictor hold NaN, which never reaches a bound: such an exit never fires.
        # Configurations are checked for predictors before they are scored (Evaluator).
        return -uncertainty

    def bound(self, threshold: float) -> float:
        return -float(threshold)

    def threshold(self, bound: float) -> float:
        return -float(bound)


@register_criterion("patience")
class Patience(ExitCriterion):
    """Readiness at exit k = how many exits directly before k predicted the same label as k."""

    quantity = "same"
    comparison = ">="
    value_range = (0.0, np.inf)

    integer = True
    reads_history = True

    def readiness(self, confidence, entropy, pred, uncertainty):  # type: ignore[no-untyped-def]
        same = pred[1:] == pred[:-1]
        out = np.zeros(pred.shape, dtype=np.uint8)
        for k in range(1, pred.shape[0]):
            np.multiply(out[k - 1] + 1, same[k - 1], out=out[k])
        return out

    def bound(self, threshold: float) -> float:
        return float(round(threshold))

    def threshold(self, bound: float) -> float:
        return float(round(bound))

    def runtime_readiness(self, conf, ent, pred, unc, history):  # type: ignore[no-untyped-def]
        if history is None or history.shape[1] == 0:
            return torch.zeros(pred.shape, dtype=torch.float32)
        full = torch.cat([history, pred[:, None]], dim=1).T.numpy()
        return torch.from_numpy(self.readiness(None, None, full, None)[-1])


def exit_statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """``(confidence, normalised entropy, prediction)`` of a batch of logits, in float32.

    The exported runtime decides exits with this same function, so cached values and run-time
    values agree.
    """
    logits = logits.float()
    logp = torch.log_softmax(logits, dim=-1)
    p = logp.exp()
    conf, pred = p.max(dim=-1)
    ent = -(p * logp).sum(-1) / math.log(logits.shape[-1])
    return conf, ent.clamp_(0.0, 1.0), pred
