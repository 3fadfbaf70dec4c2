"""Where an exit goes and what it is: a head type with its parameters at a block."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["HeadSpec"]


@dataclass(frozen=True)
class HeadSpec:
    """One candidate exit: a head type with its parameters at a location.

    Attributes:
        type: registered head name (``linear``, ``lph``, ...).
        location: 1-based block index; the head reads the hidden state after this block.
        params: type-specific parameters, e.g. ``{"k": 3}`` for ``lph``, ``{"s": 2}`` for ``gah``.
        uncertainty: attach MEViT's uncertainty predictor (eq. 3).
    """

    type: str
    location: int
    params: Mapping[str, Any] = field(default_factory=dict)
    uncertainty: bool = False

    def __post_init__(self) -> None:
        if self.location < 1:
            raise ConfigError(f"`location >= 1` must hold, but got location={self.location}")
        object.__setattr__(self, "params", dict(sorted(dict(self.params).items())))
        # The key is the spec's identity in caches and hashes: computed once.
        p = ",".join(f"{k}={v}" for k, v in self.params.items())
        suffix = "+u" if self.uncertainty else ""
        object.__setattr__(
            self, "_key", f"{self.type}{f'[{p}]' if p else ''}@{self.location}{suffix}"
        )

    @property
    def key(self) -> str:
        """Canonical id, e.g. ``lph[k=3]@4`` or ``linear@6+u``."""
        return self._key  # type: ignore[attr-defined]

    @property
    def variant(self) -> str:
        """The head without its location, e.g. ``lph[k=3]``."""
        p = ",".join(f"{k}={v}" for k, v in self.params.items())
        return f"{self.type}{f'[{p}]' if p else ''}"

    def to_dict(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "location": self.location,
            "params": dict(self.params),
            "uncertainty": self.uncertainty,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> HeadSpec:
        return cls(
            d["type"],
            int(d["location"]),
            dict(d.get("params", {})),
            bool(d.get("uncertainty", False)),
        )

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, HeadSpec) and self.key == other.key
