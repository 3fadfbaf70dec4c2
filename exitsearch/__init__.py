"""exitsearch: budget-aware search for early-exit placement in Vision Transformers."""

from exitsearch.backbone import Backbone, BackboneSpec, create_backbone
from exitsearch.data import DataSpec, DataSplits, load_splits
from exitsearch.errors import ExitSearchError
from exitsearch.export import load

__version__ = "0.1.0"

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
