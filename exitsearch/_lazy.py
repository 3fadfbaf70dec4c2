"""Packages whose public names are imported on first use (PEP 562).

A package ``__init__`` that imports its submodules eagerly makes every ``import exitsearch.x``
pay for torch, timm and Optuna, including the command line's ``--help``. A lazy package names
where each public name lives and imports that module when the name is first read::

    __getattr__, __dir__ = lazy_exports(globals(), {"Backbone": "exitsearch.backbone.adapter"})

Static tools see the names through an ``if TYPE_CHECKING:`` block of ordinary imports.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], exports: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for the package whose globals are ``namespace``.

    Args:
        namespace: the package's ``globals()``; a name, once imported, is stored there, so later
            reads do not come back here.
        exports: public name -> the module that defines it.
    """
    package = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = exports.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(module), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return sorted(set(namespace) | set(exports))

    return __getattr__, __dir__
