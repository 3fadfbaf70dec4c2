"""One registry type for every extension point: head types, exit criteria, search samplers,
fine-tuning strategies, data sources and PAUMER tasks.

A new extension is one module that registers itself::

    from exitsearch.heads import register_head

    @register_head("my_head")
    class MyHead(ExitHead): ...

A name is registered once: registering another object under a taken name is an error (the same
object again is not, so a module may be imported twice). A registry may name the modules that
hold its built-in entries; they are imported on the first lookup, so importing the registry costs
nothing.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Generic, TypeVar

from exitsearch.errors import ConfigError

__all__ = ["Registry"]

T = TypeVar("T")


class Registry(Generic[T]):
    """Names to objects of one kind, in registration order.

    Args:
        kind: what the entries are, for messages (``"head type"``: "unknown head type 'x'").
        builtins: modules whose import registers the built-in entries; imported on first lookup.
    """

    def __init__(self, kind: str, builtins: Sequence[str] = ()) -> None:
        self.kind = kind
        self._items: dict[str, T] = {}
        self._builtins = tuple(builtins)
        self._loaded = not self._builtins

    def register(self, name: str) -> Callable[[T], T]:
        """Decorator form of :meth:`add`."""

        def wrap(obj: T) -> T:
            self.add(name, obj)
            return obj

        return wrap

    def add(self, name: str, obj: T) -> None:
        """Register ``obj`` as ``name``.

        Raises:
            ValueError: ``name`` already holds another object.
        """
        old = self._items.get(name)
        if old is not None and old is not obj:
            raise ValueError(f"{self.kind} {name!r} is already registered")
        self._items[name] = obj

    def get(self, name: str) -> T:
        """The object registered as ``name``.

        Raises:
            ConfigError: no such name (the message lists the known ones).
        """
        self._load()
        try:
            return self._items[name]
        except KeyError:
            raise ConfigError(
                f"unknown {self.kind} {name!r}; known: {', '.join(self.names())}"
            ) from None

    def names(self) -> list[str]:
        """Every registered name, sorted."""
        self._load()
        return sorted(self._items)

    def items(self) -> list[tuple[str, T]]:
        """``(name, object)`` in registration order."""
        self._load()
        return list(self._items.items())

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    @contextmanager
    def scoped(self) -> Iterator[Registry[T]]:
        """Entries registered inside the block are gone after it (tests, trial plug-ins)."""
        self._load()
        saved = dict(self._items)
        try:
            yield self
        finally:
            self._items = saved

    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # first: a built-in module may look itself up while importing
            for module in self._builtins:
                importlib.import_module(module)
