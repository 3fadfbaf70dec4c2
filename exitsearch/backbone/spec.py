"""What a backbone is: a timm model name, overrides, and where its weights come from."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["ALLOWED_OVERRIDES", "BackboneSpec", "parse_overrides"]

# Constructor arguments of timm's VisionTransformer that a user may override by name, with the
# type each takes. Width and depth are included: timm builds the model from them directly.
ALLOWED_OVERRIDES: dict[str, type] = {
    "img_size": int,
    "patch_size": int,
    "in_chans": int,
    "num_classes": int,
    "embed_dim": int,
    "depth": int,
    "num_heads": int,
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
            if kind is bool:
                if raw.lower() not in ("true", "false", "1", "0", "yes", "no"):
                    raise ValueError(raw)
                value: Any = raw.lower() in ("true", "1", "yes")
            else:
                value = kind(raw)
        except ValueError:
            raise ConfigError(f"override {key} takes a {kind.__name__}, got {raw!r}") from None
        out[key] = value
    return out
