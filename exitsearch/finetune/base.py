"""What a fine-tuning strategy is: phases of training, each with its own trainable parameters,
and a loss per batch.

The training loop (:func:`exitsearch.finetune.trainer.train_configuration`) calls a strategy in
this order:

1. :meth:`FinetuneStrategy.bind` once, before any checkpoint is loaded: check that the
   configuration suits the strategy and add training-only modules to ``net.aux`` (their
   weights are then checkpointed with the rest).
2. :meth:`FinetuneStrategy.phases` once: the phases in order, each with its epochs, the
   parameters it trains and the modules that run in training mode. Everything else is frozen
   (no gradients, evaluation mode).
3. :meth:`FinetuneStrategy.loss` for every training batch; then
   :meth:`FinetuneStrategy.skip_update` names parameters that must not move in this step
   (their gradients are dropped, so the optimiser leaves them and their state untouched).
"""

from __future__ import annotations

import abc
import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from exitsearch.errors import ConfigError
from exitsearch.finetune.losses import uncertainty_loss
from exitsearch.finetune.net import MultiExitNet

__all__ = ["Batch", "FinetuneStrategy", "Hyperparameters", "Phase"]


@dataclass(frozen=True)
class Hyperparameters:
    """Base class of every strategy's hyperparameters: a frozen dataclass that checks itself.

    Subclasses validate in ``__post_init__`` and raise :class:`ConfigError` saying what must
    hold. :meth:`from_dict` turns a mapping (a recipe's YAML, ``--set`` options) into one and
    rejects keys it does not know, listing the ones it does.
    """

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None, strategy: str = "") -> Hyperparameters:
        values = dict(values or {})
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = sorted(set(values) - set(known))
        if unknown:
            what = f"strategy {strategy!r}" if strategy else cls.__name__
            raise ConfigError(
                f"{what} has no hyperparameter {', '.join(map(repr, unknown))}; "
                f"known: {', '.join(known) or 'none'}"
            )
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return {
            k: list(v) if isinstance(v, tuple) else v for k, v in dataclasses.asdict(self).items()
        }


def number(name: str, value: Any, *, positive: bool = False, lo: float | None = None) -> float:
    """``value`` as a float; booleans, other strings and out-of-range values are a ConfigError.

    A string holding a number is accepted: YAML 1.1 (PyYAML) reads ``1e-4`` as a string.
    """
    if isinstance(value, str):
        try:
            value = float(value)
        except ValueError:
            raise ConfigError(f"`{name}` must be a number, but got {name}={value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"`{name}` must be a number, but got {name}={value!r}")
    v = float(value)
    if v != v or v in (float("inf"), float("-inf")):
        raise ConfigError(f"`{name}` must be finite, but got {name}={value!r}")
    if positive and not v > 0:
        raise ConfigError(f"`{name} > 0` must hold, but got {name}={value!r}")
    if lo is not None and v < lo:
        raise ConfigError(f"`{name} >= {lo:g}` must hold, but got {name}={value!r}")
    return v


def integer(name: str, value: Any, *, lo: int | None = None, optional: bool = False) -> int | None:
    """``value`` as an int (``3.0`` and ``True`` are refused); ``None`` when ``optional``."""
    if value is None and optional:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"`{name}` must be an integer, but got {name}={value!r}")
    if lo is not None and value < lo:
        raise ConfigError(f"`{name} >= {lo}` must hold, but got {name}={value!r}")
    return value


@dataclass(frozen=True, eq=False)
class Phase:
    """A stretch of training with one set of trainable parameters.

    Attributes:
        name: shown in progress bars and the history (``stage 2``, ``segment 3/4``).
        epochs: epochs of this phase (0: skipped).
        parameters: what this phase trains; a fresh optimiser is built for each phase.
        train_modules: modules run in training mode (BatchNorm statistics, dropout); every
            other module runs in evaluation mode.
    """

    name: str
    epochs: int
    parameters: tuple[nn.Parameter, ...]
    train_modules: tuple[nn.Module, ...] = ()

    def __post_init__(self) -> None:
        if self.epochs < 0:
            raise ConfigError(f"`epochs >= 0` must hold for phase {self.name!r}")
        seen: set[int] = set()
        unique = []
        for p in self.parameters:
            if id(p) not in seen:
                seen.add(id(p))
                unique.append(p)
        object.__setattr__(self, "parameters", tuple(unique))


@dataclass(frozen=True, eq=False)
class Batch:
    """One training batch and where it falls in training.

    Attributes:
        x: (B, C, H, W) input, already transformed for the backbone.
        y: (B,) labels.
        phase: index of the current phase.
        step: 0-based step within the phase.
        epoch: 0-based global epoch.
        generator: the epoch's generator (seeded by seed and epoch): draw any randomness
            from it so that a resumed run repeats the same draws.
    """

    x: torch.Tensor
    y: torch.Tensor
    phase: int
    step: int
    epoch: int
    generator: torch.Generator


class FinetuneStrategy(abc.ABC):
    """Base class of training strategies for a fixed exit configuration.

    Subclasses set ``Hyperparameters`` (a :class:`Hyperparameters` dataclass) and are made
    known with :func:`~exitsearch.finetune.registry.register_sampler`; ``name`` is set by the
    registry.
    """

    name: ClassVar[str] = ""
    Hyperparameters: ClassVar[type[Hyperparameters]] = Hyperparameters

    def __init__(self, hparams: Hyperparameters | Mapping[str, Any] | None = None) -> None:
        if hparams is None or isinstance(hparams, Mapping):
            hparams = self.Hyperparameters.from_dict(hparams, self.name)
        if not isinstance(hparams, self.Hyperparameters):
            raise ConfigError(
                f"strategy {self.name!r} takes {self.Hyperparameters.__name__}, "
                f"got {type(hparams).__name__}"
            )
        self.hparams = hparams

    def check(self, net: MultiExitNet) -> None:  # noqa: B027 (optional hook)
        """Refuse a ``net`` this strategy cannot train, before any data is read or anything
        written (:meth:`bind` checks again).

        Raises:
            ConfigError: the backbone or configuration does not suit this strategy.
        """

    def bind(self, net: MultiExitNet) -> None:  # noqa: B027 (optional hook)
        """Check ``net``'s configuration and add training-only modules to ``net.aux``.

        Called once before training, before a checkpoint is loaded, with torch's random
        generator seeded from the training seed (so new modules start the same every time).

        Raises:
            ConfigError: the configuration does not suit this strategy.
        """

    @abc.abstractmethod
    def phases(self, net: MultiExitNet, epochs: int) -> list[Phase]:
        """The phases of training, in order; ``epochs`` is the requested epochs per phase."""

    @abc.abstractmethod
    def loss(self, net: MultiExitNet, batch: Batch) -> dict[str, torch.Tensor]:
        """The loss of one batch: ``{"loss": total, <term>: value, ...}``; the terms other
        than ``loss`` are only logged."""

    def skip_update(self, net: MultiExitNet, batch: Batch) -> Sequence[nn.Parameter]:
        """Parameters of the current phase that must not move in this step (default: none)."""
        return ()

    def notes(self, net: MultiExitNet) -> list[str]:
        """What the strategy did to this configuration, worth a line in the report (e.g.
        which loss terms applied to it)."""
        return []

    # ------------------------------------------------------------------- helpers
    @staticmethod
    def exit_loss(
        net: MultiExitNet, k: int, logits: torch.Tensor, y: torch.Tensor, uncertainty_weight: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Cross-entropy of exit ``k`` and, if its head has one, its uncertainty predictor's
        loss (MEViT, eq. 1) times ``uncertainty_weight``; ``(ce, uncertainty or None)``."""
        ce = torch.nn.functional.cross_entropy(logits.float(), y)
        head = net.heads[k]
        if getattr(head, "uncertainty", None) is None:
            return ce, None
        return ce, uncertainty_weight * uncertainty_loss(head.uncertainty, logits, y)
