"""Backbones: timm Vision Transformers as stacks of blocks, and their weights (training them is
:mod:`exitsearch.training.backbone_trainer`)."""

from typing import TYPE_CHECKING

from exitsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from exitsearch.backbone.adapter import Backbone
    from exitsearch.backbone.checkpoint import load_state_dict_file, load_weights
    from exitsearch.backbone.factory import create_backbone, list_backbones, resolve_spec
    from exitsearch.backbone.presets import DEFAULT_PRESET, PRESETS, Preset, preset_dir
    from exitsearch.backbone.spec import ALLOWED_OVERRIDES, BackboneSpec, parse_overrides

__all__ = [
    "ALLOWED_OVERRIDES",
    "DEFAULT_PRESET",
    "PRESETS",
    "Backbone",
    "BackboneSpec",
    "Preset",
    "create_backbone",
    "list_backbones",
    "load_state_dict_file",
    "load_weights",
    "parse_overrides",
    "preset_dir",
    "resolve_spec",
]

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "ALLOWED_OVERRIDES": "exitsearch.backbone.spec",
        "Backbone": "exitsearch.backbone.adapter",
        "BackboneSpec": "exitsearch.backbone.spec",
        "DEFAULT_PRESET": "exitsearch.backbone.presets",
        "PRESETS": "exitsearch.backbone.presets",
        "Preset": "exitsearch.backbone.presets",
        "create_backbone": "exitsearch.backbone.factory",
        "list_backbones": "exitsearch.backbone.factory",
        "load_state_dict_file": "exitsearch.backbone.checkpoint",
        "load_weights": "exitsearch.backbone.checkpoint",
        "parse_overrides": "exitsearch.backbone.spec",
        "preset_dir": "exitsearch.backbone.presets",
        "resolve_spec": "exitsearch.backbone.factory",
    },
)
