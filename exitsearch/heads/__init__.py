"""Exit heads: one registry, one factory, one module per head family, and banks of heads."""

# Importing the head modules registers their types.
from exitsearch.heads import cnn, gah, linear, lph, mixer, mlp, resmlp, tokenmap, vit  # noqa: F401
from exitsearch.heads.bank import HeadBank
from exitsearch.heads.base import (
    ExitHead,
    HeadContext,
    HeadSpec,
    StateShape,
    UncertaintyPredictor,
)
from exitsearch.heads.common import MLPClassifier, NormLinearClassifier
from exitsearch.heads.mappings import (
    KernelMapping,
    LocationMapping,
    WindowMapping,
    candidate_values,
    lgvit_heads,
)
from exitsearch.heads.profile import HeadCost, head_cost, measure_heads_latency, profile_heads
from exitsearch.heads.registry import create_head, get_head_class, list_heads, register_head

__all__ = [
    "ExitHead",
    "HeadBank",
    "HeadContext",
    "HeadCost",
    "HeadSpec",
    "KernelMapping",
    "LocationMapping",
    "MLPClassifier",
    "NormLinearClassifier",
    "StateShape",
    "UncertaintyPredictor",
    "WindowMapping",
    "candidate_values",
    "create_head",
    "get_head_class",
    "head_cost",
    "lgvit_heads",
    "list_heads",
    "measure_heads_latency",
    "profile_heads",
    "register_head",
]
