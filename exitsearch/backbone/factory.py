"""Turning a name (timm model or exitsearch preset) into a :class:`Backbone`."""

from __future__ import annotations

import difflib
import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import timm
import torch

from exitsearch.backbone.adapter import Backbone
from exitsearch.backbone.checkpoint import load_weights
from exitsearch.backbone.families import FAMILIES, family_of
from exitsearch.backbone.presets import PRESETS
from exitsearch.backbone.spec import BackboneSpec
from exitsearch.errors import BackboneError, CheckpointError

__all__ = ["create_backbone", "list_backbones", "resolve_spec"]


def list_backbones(pattern: str = "*") -> list[str]:
    """Preset names and timm models of the supported families (ViT/DeiT, Swin) that match
    ``pattern``."""
    names = [p for p in PRESETS if pattern == "*" or pattern.strip("*") in p]
    modules = [m for _, fam in FAMILIES.items() for m in fam.timm_modules]
    found = sorted({n for module in modules for n in timm.list_models(pattern, module=module)})
    return names + found


def resolve_spec(spec: BackboneSpec) -> BackboneSpec:
    """Expand a preset name into its timm model, overrides and shipped checkpoint."""
    preset = PRESETS.get(spec.model)
    if preset is None:
        return spec
    base = preset.resolved()
    return replace(
        base,
        overrides={**base.overrides, **spec.overrides},
        checkpoint=spec.checkpoint or base.checkpoint,
        pretrained=spec.pretrained,
        preprocess={**base.preprocess, **spec.preprocess},
    )


def create_backbone(spec: BackboneSpec | str, **overrides: Any) -> Backbone:
    """Build the backbone that ``spec`` names, with its weights loaded.

    Args:
        spec: a :class:`BackboneSpec`, or a model name (timm name or exitsearch preset).
        **overrides: constructor overrides when ``spec`` is a name.

    Raises:
        BackboneError: unknown name (with close matches), an override timm cannot build, a
            model of a family without an adapter (see :data:`~exitsearch.backbone.families.FAMILIES`),
            or pretrained weights that cannot be fetched.
        CheckpointError: the checkpoint is unreadable or does not fit.
    """
    if isinstance(spec, str):
        spec = BackboneSpec(model=spec, overrides=dict(overrides))
    requested = spec.model
    spec = resolve_spec(spec)
    name = spec.model
    if not timm.is_model(name):
        known = list(PRESETS) + timm.list_models()
        close = difflib.get_close_matches(requested, known, n=3, cutoff=0.6)
        hint = (
            f"; did you mean {', '.join(close)}?"
            if close
            else "; `exitsearch backbone list` shows the known ones"
        )
        raise BackboneError(f"unknown model {requested!r}{hint}")
    _check_overrides(spec.overrides)
    try:
        # Weights that no checkpoint or pretrained file replaces come from a fixed seed, so the
        # same spec always gives the same backbone (and the same cache keys downstream).
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            model = timm.create_model(name, pretrained=spec.pretrained, **spec.overrides)
    except (TypeError, ValueError, AssertionError, RuntimeError, KeyError) as exc:
        if spec.pretrained and _looks_like_download_failure(exc):
            raise BackboneError(_download_message(name, exc)) from None
        detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise BackboneError(
            f"cannot build {name} with overrides {spec.overrides}: {detail}"
        ) from None
    except OSError as exc:  # hub downloads fail with OSError subclasses when offline
        raise BackboneError(_download_message(name, exc)) from None
    family = family_of(model)
    if family is None:
        known = ", ".join(f.description.split(":")[0] for _, f in FAMILIES.items())
        raise BackboneError(
            f"{name} is a {type(model).__name__}, a family exitsearch cannot attach exits to; "
            f"supported: {known}"
        )
    if hasattr(model.patch_embed, "backbone"):
        raise BackboneError(
            f"{name} has a convolutional stem (a hybrid ViT); exitsearch supports plain patch "
            "embeddings (ViT and DeiT families)"
        )
    grid_img = model.patch_embed.img_size
    patch = model.patch_embed.patch_size
    if grid_img is not None and any(i % p for i, p in zip(grid_img, patch, strict=True)):
        raise BackboneError(
            f"img_size={tuple(grid_img)} is not a multiple of the patch size {tuple(patch)} of {name}; "
            "pixels would be dropped"
        )
    if spec.checkpoint:
        preset = PRESETS.get(requested)
        try:
            load_weights(model, spec.checkpoint)
        except CheckpointError as exc:
            if preset is None or spec.checkpoint != preset.resolved().checkpoint:
                raise CheckpointError(f"{exc}{_trained_as(spec, name)}") from None
            # the shipped weights with the user's overrides: they fit the preset's own shape
            changed = {k: v for k, v in spec.overrides.items() if preset.spec.overrides.get(k) != v}
            if not changed:
                raise
            raise CheckpointError(
                f"the shipped {requested} weights do not fit {requested} with "
                f"{', '.join(f'{k}={v}' for k, v in changed.items())}; "
                + preset.train_first(changed)
            ) from None
    record = checkpoint_record(spec.checkpoint)
    preprocess = dict(spec.preprocess)
    if record is not None and isinstance(record.get("preprocess"), dict):
        preprocess = {**record["preprocess"], **preprocess}
    preprocess.pop("input_size", None)  # the model's own size and channels decide
    return family.adapter(model.eval(), spec, preprocess, record)


def _trained_as(spec: BackboneSpec, name: str) -> str:
    """For a checkpoint that does not fit: how ``exitsearch backbone train`` built it (its
    ``backbone.json``), as the options that rebuild it; empty without a record."""
    record = checkpoint_record(spec.checkpoint) or {}
    trained = record.get("spec") or {}
    model, overrides = trained.get("model"), dict(trained.get("overrides") or {})
    if not model:
        return ""
    # what the user overrode and the record left at the model's default (its image size...)
    built = record.get("describe") or {}
    for key in spec.overrides.keys() - overrides.keys():
        value = built.get(key)
        if isinstance(value, list) and len(set(value)) == 1:
            value = value[0]  # img_size [224, 224] as the 224 it was given
        if value is not None:
            overrides[key] = value
    diff = {k: v for k, v in overrides.items() if spec.overrides.get(k) != v}
    flags = " ".join(f"-o {k}={v}" for k, v in diff.items())
    if model == name:
        if set(diff) <= {"num_classes"}:
            return ""  # nothing, or the classifier's size: the shape error says it already
        return f"; it was trained with {flags} (its backbone.json): pass the same"
    return f"; it was trained as {model} (its backbone.json): pass --model {model} {flags}"


def checkpoint_record(checkpoint: str | None) -> dict[str, Any] | None:
    """The ``backbone.json`` that ``exitsearch backbone train`` wrote beside ``checkpoint``."""
    if not checkpoint:
        return None
    path = Path(checkpoint).parent / "backbone.json"
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    return doc if isinstance(doc, dict) and "spec" in doc else None


def _check_overrides(ov: dict[str, Any]) -> None:
    for key in (
        "img_size",
        "patch_size",
        "in_chans",
        "num_classes",
        "embed_dim",
        "depth",
        "num_heads",
        "depths",
        "window_size",
    ):
        values = ov[key] if isinstance(ov.get(key), tuple) else (ov.get(key),)
        if key in ov and (not values or min(values) < (0 if key == "num_classes" else 1)):
            raise BackboneError(f"override {key}={ov[key]} is impossible: it must be positive")
    if "img_size" in ov and "patch_size" in ov and ov["img_size"] % ov["patch_size"]:
        raise BackboneError(
            f"img_size={ov['img_size']} is not a multiple of patch_size={ov['patch_size']}"
        )
    if (
        isinstance(ov.get("num_heads"), int)
        and "embed_dim" in ov
        and ov["embed_dim"] % ov["num_heads"]
    ):
        raise BackboneError(
            f"embed_dim={ov['embed_dim']} is not divisible by num_heads={ov['num_heads']}"
        )


def _looks_like_download_failure(exc: BaseException) -> bool:
    text = f"{type(exc).__name__} {exc}".lower()
    return any(w in text for w in ("connection", "offline", "hub", "download", "resolve", "url"))


def _download_message(name: str, exc: BaseException) -> str:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return (
        f"cannot load pretrained weights for {name} (no network or no local copy?): {detail}; "
        "use --checkpoint PATH for local weights"
    )
