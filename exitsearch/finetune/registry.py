"""The strategy registry: names to strategy classes, and the factory that builds one."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from exitsearch.finetune.base import FinetuneStrategy, Hyperparameters
from exitsearch.registry import Registry

__all__ = [
    "REGISTRY",
    "create_strategy",
    "get_strategy_class",
    "list_strategies",
    "register_sampler",
]

# The modules of the strategies exitsearch ships; importing one registers its strategy.
BUILTIN_MODULES = tuple(
    f"exitsearch.finetune.{m}"
    for m in ("classifier_wise", "end_to_end", "layer_wise", "lgvit", "mevit")
)
REGISTRY: Registry[type[FinetuneStrategy]] = Registry("fine-tuning strategy", BUILTIN_MODULES)

S = TypeVar("S", bound=type[FinetuneStrategy])


def register_sampler(name: str) -> Callable[[S], S]:
    """Class decorator: make a strategy available to :func:`create_strategy` under ``name``.

    Example:
        >>> @register_sampler("heads-twice")  # doctest: +SKIP
        ... class HeadsTwice(ClassifierWise): ...
    """

    def wrap(cls: S) -> S:
        REGISTRY.add(name, cls)
        cls.name = name
        return cls

    return wrap


def list_strategies() -> list[str]:
    return REGISTRY.names()


def get_strategy_class(name: str) -> type[FinetuneStrategy]:
    """The class registered as ``name``.

    Raises:
        ConfigError: unknown name (the message lists the known ones).
    """
    return REGISTRY.get(name)


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
