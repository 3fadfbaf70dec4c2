"""exitsearch: budget-aware search for early-exit placement in Vision Transformers."""

from typing import TYPE_CHECKING

from exitsearch._lazy import lazy_exports

__version__ = "0.1.0"

if TYPE_CHECKING:
    from exitsearch.backbone import Backbone, BackboneSpec, create_backbone
    from exitsearch.data import DataSpec, DataSplits, load_splits
    from exitsearch.errors import ExitSearchError
    from exitsearch.export import load

__all__ = [
    "Backbone",
    "BackboneSpec",
    "DataSpec",
    "DataSplits",
    "ExitSearchError",
    "__version__",
    "create_backbone",
    "load",
    "load_splits",
]

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "Backbone": "exitsearch.backbone",
        "BackboneSpec": "exitsearch.backbone",
        "DataSpec": "exitsearch.data",
        "DataSplits": "exitsearch.data",
        "ExitSearchError": "exitsearch.errors",
        "create_backbone": "exitsearch.backbone",
        "load": "exitsearch.export",
        "load_splits": "exitsearch.data",
    },
)
