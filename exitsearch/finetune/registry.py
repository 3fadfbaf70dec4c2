"""The strategy registry: names to strategy classes, and the factory that builds one."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from exitsearch.errors import ConfigError
from exitsearch.finetune.base import FinetuneStrategy, Hyperparameters

__all__ = ["create_strategy", "get_strategy_class", "list_strategies", "register_strategy"]

_REGISTRY: dict[str, type[FinetuneStrategy]] = {}

S = TypeVar("S", bound=type[FinetuneStrategy])


def register_strategy(name: str) -> Callable[[S], S]:
    """Class decorator: make a strategy available to :func:`create_strategy` under ``name``.

    Example:
        >>> @register_strategy("heads-twice")  # doctest: +SKIP
        ... class HeadsTwice(ClassifierWise): ...
    """

    def wrap(cls: S) -> S:
        if name in _REGISTRY and _REGISTRY[name] is not cls:
            raise ValueError(f"fine-tuning strategy {name!r} is already registered")
        _REGISTRY[name] = cls
        cls.name = name
        return cls

    return wrap


# The modules of the strategies exitsearch ships; importing one registers its strategy.
BUILTIN_MODULES = ("classifier_wise", "end_to_end", "layer_wise", "lgvit", "mevit")


def _load_builtins() -> None:
    for module in BUILTIN_MODULES:
        importlib.import_module(f"exitsearch.finetune.{module}")


def list_strategies() -> list[str]:
    _load_builtins()
    return sorted(_REGISTRY)


def get_strategy_class(name: str) -> type[FinetuneStrategy]:
    """The class registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    _load_builtins()
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown fine-tuning strategy {name!r}; known: {', '.join(list_strategies())}"
        ) from None


def create_strategy(
    name: str, hyperparameters: Hyperparameters | Mapping[str, Any] | None = None
) -> FinetuneStrategy:
    """Build strategy ``name`` with ``hyperparameters`` (a mapping is validated by the
    strategy's hyperparameter dataclass; missing keys take their defaults).

    Raises:
        ConfigError: unknown strategy, unknown or invalid hyperparameter.

    Example:
        >>> create_strategy("end-to-end", {"exit_weight": 0.5}).hparams.exit_weight
        0.5
    """
    return get_strategy_class(name)(hyperparameters)
