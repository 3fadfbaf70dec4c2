"""Backbones: timm Vision Transformers as stacks of blocks, their weights and training."""

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
