"""Exit heads: one registry, one factory, one module per head family."""

from exitsearch.heads import linear  # noqa: F401  (registers the head types)
from exitsearch.heads.base import ExitHead, HeadContext, HeadSpec, UncertaintyPredictor
from exitsearch.heads.registry import create_head, get_head_class, list_heads, register_head

__all__ = [
    "ExitHead",
    "HeadContext",
    "HeadSpec",
    "UncertaintyPredictor",
    "create_head",
    "get_head_class",
    "list_heads",
    "register_head",
]
