"""A pause configuration (PAUMER §2.2): how many patch tokens stop after which layer.

Convention of exitsearch (fixed by the design, used by :attr:`ExitConfig.pause`):

* ``{l: f}`` pauses, after block ``l`` (1-based, ``1 <= l <= L - 1``: pausing after the last
  block saves nothing), a fraction ``f`` of the **original** number of patch tokens ``N``, in
  addition to the tokens paused at earlier layers.
* The number paused at layer ``l`` is ``round(f * N)`` with Python's :func:`round` (halves go to
  the even neighbour: ``0.5 * 49 = 24.5 -> 24``). It is the same for every image, so a batch
  stays rectangular (the paper's argument for fixed proportions).
* Prefix tokens (class, distillation, registers) are never paused.

The paper's Table 1 cannot mean fractions of the original count: its last column pauses
0.4 after layers 3, 5 and 7, which would be 120 % of the patches. It is feasible only when
``tau`` is the proportion of the tokens *still being processed* at that layer, so
:func:`paper_table1` converts the printed columns with :meth:`PauseConfig.from_relative`.
Single-layer columns (7 of the 13) are the same in both readings.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from exitsearch.errors import ConfigError

__all__ = ["PAPER_TABLE1", "PauseConfig", "paper_table1"]

# PAUMER, Table 1, column by column, as printed ({layer: tau}, tau relative to the tokens
# still processed at that layer).
PAPER_TABLE1: tuple[dict[int, float], ...] = (
    {3: 0.2},
    {3: 0.4},
    {3: 0.6},
    {5: 0.2},
    {5: 0.4},
    {5: 0.6},
    {5: 0.8},
    {3: 0.2, 5: 0.2},
    {3: 0.3, 5: 0.3},
    {3: 0.4, 5: 0.4},
    {3: 0.2, 5: 0.2, 7: 0.2},
    {3: 0.3, 5: 0.3, 7: 0.3},
    {3: 0.4, 5: 0.4, 7: 0.4},
)

_DIGITS = 6  # fractions are kept to 6 decimals so that converted values print and hash cleanly


@dataclass(frozen=True)
class PauseConfig:
    """A pause configuration ``{layer: fraction}``; empty means no pausing.

    What must hold (checked when built): layers are integers ``>= 1``, every fraction lies in
    ``(0, 1)``, and the fractions sum to less than 1 (some patch token is always processed).
    Bounds that need the backbone (``layer <= L - 1``, fewer paused tokens than patches after
    rounding) are checked by :meth:`check`.

    Example:
        >>> cfg = PauseConfig.parse("3:0.2,5:0.4")
        >>> cfg.counts(49)
        {3: 10, 5: 20}
        >>> cfg.key
        '3:0.2,5:0.4'
    """

    fractions: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        items: dict[int, float] = {}
        for layer, frac in dict(self.fractions).items():
            try:
                lay, f = int(layer), float(frac)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"a pause configuration maps layers to fractions, got {layer!r}: {frac!r}"
                ) from None
            if isinstance(layer, float) and not layer.is_integer():
                raise ConfigError(f"pause layers are integers, got {layer!r}")
            if lay < 1:
                raise ConfigError(f"`layer >= 1` must hold for a pause layer, but got {lay}")
            if not 0.0 < f < 1.0:
                raise ConfigError(
                    f"`0 < fraction < 1` must hold, but got fraction={f} at layer {lay}"
                )
            items[lay] = round(f, _DIGITS)
        total = sum(items.values())
        if total >= 1.0:
            raise ConfigError(
                f"the paused fractions must sum to less than 1 (they are fractions of the "
                f"original patch count), but {self._fmt(items)} sums to {total:g}"
            )
        object.__setattr__(self, "fractions", dict(sorted(items.items())))

    # ---------------------------------------------------------------- building
    @classmethod
    def parse(cls, text: str) -> PauseConfig:
        """``"3:0.2,5:0.4"`` (``"3:20%"`` works too); ``""`` or ``"none"`` is no pausing.

        Raises:
            ConfigError: the text is not a comma-separated list of ``layer:fraction``.
        """
        text = text.strip()
        if text.lower() in ("", "none", "-", "{}"):
            return cls()
        out: dict[int, float] = {}
        for item in text.split(","):
            layer, sep, raw = item.partition(":")
            raw = raw.strip()
            try:
                if not sep:
                    raise ValueError(item)
                frac = float(raw[:-1]) / 100 if raw.endswith("%") else float(raw)
                lay = int(layer.strip())
            except ValueError:
                raise ConfigError(
                    f"a pause configuration looks like '3:0.2,5:0.4' (layer:fraction, "
                    f"comma-separated), got {text!r}"
                ) from None
            if lay in out:
                raise ConfigError(f"layer {lay} appears twice in the pause configuration {text!r}")
            out[lay] = frac
        return cls(out)

    @classmethod
    def from_relative(cls, taus: Mapping[int, float]) -> PauseConfig:
        """Convert ``{layer: tau}`` with ``tau`` relative to the tokens still processed there
        (the reading under which every column of the paper's Table 1 is feasible)."""
        remaining, out = 1.0, {}
        for layer, tau in sorted((int(k), float(v)) for k, v in taus.items()):
            out[layer] = tau * remaining
            remaining -= out[layer]
        return cls(out)

    @classmethod
    def from_dict(cls, d: Mapping[Any, Any] | None) -> PauseConfig:
        """Inverse of :meth:`to_dict` (string or integer keys, as in ``ExitConfig.pause``)."""
        return cls({int(k): float(v) for k, v in dict(d or {}).items()})

    def to_dict(self) -> dict[str, float]:
        return {str(k): v for k, v in self.fractions.items()}

    # ------------------------------------------------------------------ access
    def __bool__(self) -> bool:
        return bool(self.fractions)

    def __iter__(self) -> Iterator[tuple[int, float]]:
        return iter(self.fractions.items())

    def __len__(self) -> int:
        return len(self.fractions)

    def __hash__(self) -> int:
        return hash(self.key)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PauseConfig) and self.key == other.key

    @property
    def layers(self) -> tuple[int, ...]:
        return tuple(self.fractions)

    @property
    def total_fraction(self) -> float:
        return sum(self.fractions.values())

    @property
    def key(self) -> str:
        """Canonical text, the same as in ``ExitConfig.placement_key`` (``""`` when empty)."""
        return self._fmt(self.fractions)

    @property
    def label(self) -> str:
        return self.key or "no pausing"

    @staticmethod
    def _fmt(items: Mapping[int, float]) -> str:
        return ",".join(f"{k}:{v:g}" for k, v in items.items())

    def counts(self, num_patches: int) -> dict[int, int]:
        """Tokens paused at each layer: ``round(fraction * num_patches)``."""
        return {k: round(v * num_patches) for k, v in self.fractions.items()}

    def check(self, depth: int, num_patches: int) -> None:
        """Check the bounds that depend on the backbone.

        Raises:
            ConfigError: a layer outside ``1..depth - 1``, or every patch token paused after
                rounding.
        """
        for layer in self.fractions:
            if not 1 <= layer <= depth - 1:
                raise ConfigError(
                    f"pause layer {layer} is outside 1..{depth - 1} (pause after block l of "
                    f"{depth}; pausing after the last block saves nothing)"
                )
        paused = sum(self.counts(num_patches).values())
        if paused >= num_patches:
            raise ConfigError(
                f"pause configuration {self.key} pauses {paused} of {num_patches} patch tokens "
                "after rounding; at least one must stay"
            )


def paper_table1() -> list[PauseConfig]:
    """The 13 configurations of PAUMER's Table 1 in exitsearch's convention (see module)."""
    return [PauseConfig.from_relative(c) for c in PAPER_TABLE1]
