"""The core: plain configuration and rules that every other package builds on.

* :class:`HeadSpec`: one exit, a head type with its parameters at a block.
* :class:`ExitConfig`: a configuration of exits, criterion, thresholds, cut and pause.
* :mod:`~exitsearch.core.criteria`: exit criteria (one registry) and the per-exit statistics
  (:func:`exit_statistics`) that cached evaluation and the exported runtime both decide with.

The core imports nothing of exitsearch but ``errors``, ``units``, ``budget`` and ``registry``
(tests/test_layers.py checks it).
"""

from typing import TYPE_CHECKING

from exitsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from exitsearch.core.config import ExitConfig
    from exitsearch.core.criteria import (
        ExitCriterion,
        create_criterion,
        exit_statistics,
        list_criteria,
        register_criterion,
    )
    from exitsearch.core.spec import HeadSpec

__all__ = [
    "ExitConfig",
    "ExitCriterion",
    "HeadSpec",
    "create_criterion",
    "exit_statistics",
    "list_criteria",
    "register_criterion",
]

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "ExitConfig": "exitsearch.core.config",
        "ExitCriterion": "exitsearch.core.criteria",
        "create_criterion": "exitsearch.core.criteria",
        "exit_statistics": "exitsearch.core.criteria",
        "list_criteria": "exitsearch.core.criteria",
        "register_criterion": "exitsearch.core.criteria",
        "HeadSpec": "exitsearch.core.spec",
    },
)
