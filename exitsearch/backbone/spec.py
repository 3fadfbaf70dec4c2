"""What a backbone is: a timm model name, overrides, and where its weights come from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["ALLOWED_OVERRIDES", "BackboneSpec", "parse_overrides"]


class IntOrInts:
    """Override type of a number that may also be one per stage: ``3`` or ``2,4,8`` (Swin)."""


class Ints:
    """Override type of one number per stage, comma-separated: ``depths=2,2,6,2`` (Swin)."""


# Constructor arguments of timm's VisionTransformer and SwinTransformer that a user may override
# by name, with the type each takes. Width and depth are included: timm builds the model from them
# directly. ``depth`` is the ViT's, ``depths`` (one per stage) and ``window_size`` are Swin's;
# ``num_heads`` is one number for a ViT and may be one per stage for Swin.
ALLOWED_OVERRIDES: dict[str, type] = {
    "img_size": int,
    "patch_size": int,
    "in_chans": int,
    "num_classes": int,
    "embed_dim": int,
    "depth": int,
    "depths": Ints,
    "window_size": int,
    "num_heads": IntOrInts,
    "mlp_ratio": float,
    "class_token": bool,
    "global_pool": str,
    "reg_tokens": int,
    "drop_path_rate": float,
    "drop_rate": float,
}


@dataclass(frozen=True)
class BackboneSpec:
    """A backbone by timm name with constructor overrides and a weight source.

    Attributes:
        model: timm model name (``vit_small_patch16_224``, ``deit_tiny_distilled_patch16_224``...).
        overrides: constructor arguments passed to ``timm.create_model``.
        checkpoint: path of a safetensors file or torch state dict to load after creation.
        pretrained: load timm's pretrained weights (needs the network or a local cache).
        preprocess: overrides of timm's data config (``crop_pct``, ``interpolation``, ``mean``,
            ``std``...), see :class:`exitsearch.data.Preprocess`.
    """

    model: str
    overrides: dict[str, Any] = field(default_factory=dict)
    checkpoint: str | None = None
    pretrained: bool = False
    preprocess: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = sorted(set(self.overrides) - set(ALLOWED_OVERRIDES))
        if unknown:
            raise ConfigError(
                f"unknown override(s) {', '.join(unknown)}; allowed: {', '.join(ALLOWED_OVERRIDES)}"
            )
        # Per-stage values read back from JSON are lists: one spelling, so specs compare equal
        ov = {k: tuple(v) if isinstance(v, list) else v for k, v in self.overrides.items()}
        object.__setattr__(self, "overrides", ov)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if not self.preprocess:  # keys of artifacts written before the field existed stay
            d.pop("preprocess")
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> BackboneSpec:
        return cls(
            model=d["model"],
            overrides=dict(d.get("overrides", {})),
            checkpoint=d.get("checkpoint"),
            pretrained=bool(d.get("pretrained", False)),
            preprocess=dict(d.get("preprocess") or {}),
        )


def parse_overrides(items: list[str] | None) -> dict[str, Any]:
    """Parse ``key=value`` strings into typed overrides (``img_size=28``, ``class_token=false``).

    Raises:
        ConfigError: an item is not ``key=value``, the key is not overridable, or the value has
            the wrong type.
    """
    out: dict[str, Any] = {}
    for item in items or []:
        key, sep, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if not sep or not raw.strip():
            raise ConfigError(f"override {item!r} must look like key=value (e.g. img_size=28)")
        kind = ALLOWED_OVERRIDES.get(key)
        if kind is None:
            raise ConfigError(f"unknown override {key!r}; allowed: {', '.join(ALLOWED_OVERRIDES)}")
        raw = raw.strip()
        try:
            if kind in (Ints, IntOrInts):
                parts = [int(v) for v in raw.replace(" ", "").strip("()[]").split(",") if v]
                if not parts:
                    raise ValueError(raw)
                value: Any = (
                    parts[0]
                    if kind is IntOrInts and len(parts) == 1 and "," not in raw
                    else tuple(parts)
                )
            elif kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value = raw.lower() in ("true", "1", "yes")
            else:
                value = kind(raw)
        except ValueError:
            what = {Ints: "comma-separated ints", IntOrInts: "an int or comma-separated ints"}
            raise ConfigError(
                f"override {key} takes {what.get(kind, 'a ' + kind.__name__)}, got {raw!r}"
            ) from None
        out[key] = value
    return out
