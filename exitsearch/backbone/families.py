"""Backbone families: which timm model classes exitsearch can attach exits to, and how.

A family names the timm model class it wraps, the adapter that exposes the model as a stack of
blocks (:class:`~exitsearch.backbone.adapter.Backbone` and its subclasses), and the timm modules
whose models it lists. A new family is one registration::

    FAMILIES.add("mine", BackboneFamily("mine", MyTimmModel, MyAdapter, ("my_timm_module",)))
"""

from __future__ import annotations

from dataclasses import dataclass

from timm.models.swin_transformer import SwinTransformer
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.backbone.swin import SwinBackbone
from exitsearch.registry import Registry

__all__ = ["FAMILIES", "BackboneFamily", "family_of", "family_of_name"]


@dataclass(frozen=True)
class BackboneFamily:
    """A timm model class, its adapter, and the timm modules that define its models."""

    name: str
    model_class: type[nn.Module]
    adapter: type[Backbone]
    timm_modules: tuple[str, ...]
    description: str = ""


FAMILIES: Registry[BackboneFamily] = Registry("backbone family")

FAMILIES.add(
    "vit",
    BackboneFamily(
        "vit",
        VisionTransformer,
        Backbone,
        ("vision_transformer", "deit"),
        "plain ViT/DeiT: one token sequence, global attention",
    ),
)
FAMILIES.add(
    "swin",
    BackboneFamily(
        "swin",
        SwinTransformer,
        SwinBackbone,
        ("swin_transformer",),
        "Swin: stages of shifted-window attention joined by patch merging",
    ),
)


def family_of(model: nn.Module) -> BackboneFamily | None:
    """The family whose model class ``model`` is exactly (subclasses of ViT count as ViT)."""
    for _, fam in FAMILIES.items():
        if type(model) is fam.model_class:
            return fam
    for _, fam in FAMILIES.items():
        if isinstance(model, fam.model_class):
            return fam
    return None


def family_of_name(model_name: str) -> BackboneFamily | None:
    """The family of the timm model ``model_name``, from the timm module that defines it,
    without building it (None: a model of no family here, or unknown to timm)."""
    import timm

    for _, fam in FAMILIES.items():
        if timm.models.is_model_in_modules(model_name, list(fam.timm_modules)):
            return fam
    return None
