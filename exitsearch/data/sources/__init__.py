"""The registry of data sources: one module per format, each registering how it is opened.

A source turns the ``--data`` argument into a :class:`SourceData`: the training set and, when the
data bring them, their own validation and test sets. Array formats (Fashion-MNIST's IDX files,
``.npz``) are held in memory; file formats (a folder of class sub-folders, WebDataset tar shards)
are read lazily, one sample at a time.

Adding a format is one module that calls :func:`register_source`.

Example:
    >>> from exitsearch.data.sources import source_names
    >>> source_names()
    ['fashion-mnist', 'fashion-mnist-count', 'npz', 'webdataset', 'folder']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from exitsearch.data.samples import Samples
from exitsearch.errors import DataError
from exitsearch.registry import Registry

__all__ = ["SourceData", "open_source", "register_source", "resolve_source", "source_names"]


@dataclass(frozen=True)
class SourceData:
    """What a source holds: training samples, and its own validation / test sets if any."""

    train: Samples
    val: Samples | None = None
    test: Samples | None = None
    task: str = "classification"
    """What the labels are (:mod:`exitsearch.core.task`): class indices, or counts."""


@dataclass(frozen=True)
class _Entry:
    name: str
    matches: Callable[[str], bool]
    open: Callable[[Any], SourceData]
    description: str


REGISTRY: Registry[_Entry] = Registry("data source")


def register_source(
    name: str, matches: Callable[[str], bool], description: str
) -> Callable[[Callable[[Any], SourceData]], Callable[[Any], SourceData]]:
    """Register ``open(spec) -> SourceData`` for ``--data`` values that ``matches`` accepts.

    Sources are tried in registration order; the first that matches opens the data.
    """

    def deco(fn: Callable[[Any], SourceData]) -> Callable[[Any], SourceData]:
        REGISTRY.add(name, _Entry(name, matches, fn, description))
        return fn

    return deco


def source_names() -> list[str]:
    return [name for name, _ in REGISTRY.items()]


def resolve_source(source: str) -> str:
    """The name of the registered source that reads ``source``.

    Raises:
        DataError: no source reads it; the message lists what ``--data`` accepts.
    """
    for _, entry in REGISTRY.items():
        if entry.matches(source):
            return entry.name
    raise DataError(f"{source}: not a known data format; --data takes {describe_sources()}")


def describe_sources() -> str:
    """What ``--data`` accepts, in one line."""
    return "; ".join(e.description for _, e in REGISTRY.items())


def open_source(spec: Any) -> SourceData:
    """Open the data that ``spec.source`` names with its registered source."""
    return REGISTRY.get(resolve_source(spec.source)).open(spec)


# Registration order is matching order: named sources first, the folder catch-all last.
from exitsearch.data.sources import fashion_mnist, counting, npz, webdataset, folder  # noqa: E402, F401, I001
