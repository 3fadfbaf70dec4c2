"""The head registry: names to head classes, and the factory that builds a :class:`HeadSpec`."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from exitsearch.errors import ConfigError
from exitsearch.heads.base import ExitHead, HeadContext, HeadSpec, UncertaintyPredictor
from exitsearch.registry import Registry

__all__ = ["REGISTRY", "create_head", "get_head_class", "list_heads", "register_head"]

REGISTRY: Registry[type[ExitHead]] = Registry("head type")

H = TypeVar("H", bound=type[ExitHead])


def register_head(name: str) -> Callable[[H], H]:
    """Class decorator: make a head type available to :func:`create_head` under ``name``."""

    def wrap(cls: H) -> H:
        REGISTRY.add(name, cls)
        cls.head_type = name  # type: ignore[attr-defined]
        return cls

    return wrap


def list_heads() -> list[str]:
    return REGISTRY.names()


def get_head_class(name: str) -> type[ExitHead]:
    return REGISTRY.get(name)


def create_head(spec: HeadSpec, ctx: HeadContext, **extra: Any) -> ExitHead:
    """Build the head that ``spec`` describes for a backbone described by ``ctx``, sized for the
    hidden state at the spec's location (:meth:`HeadContext.at`).

    Raises:
        ConfigError: unknown head type, or parameters the type does not take.
    """
    cls = get_head_class(spec.type)
    ctx = ctx.at(spec.location)
    try:
        head = cls(ctx, **dict(spec.params), **extra)
    except TypeError as exc:
        raise ConfigError(f"head {spec.key}: {exc}") from None
    if spec.uncertainty:
        head.uncertainty = UncertaintyPredictor(ctx.num_classes)
    return head
