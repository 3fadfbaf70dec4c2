"""An exit configuration: where the exits are, which heads, and when samples leave."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from exitsearch.core.criteria import create_criterion
from exitsearch.core.spec import HeadSpec
from exitsearch.errors import ConfigError

__all__ = ["ExitConfig"]


@dataclass(frozen=True)
class ExitConfig:
    """A multi-exit configuration.

    Attributes:
        exits: the early exits, ordered by location (one per location).
        criterion: exit criterion name (``confidence``, ``entropy``, ``patience``,
            ``uncertainty``).
        thresholds: one threshold per exit (a shared threshold repeats one value).
        threshold_mode: ``shared`` or ``per_exit``, as searched.
        cut: ``True`` when the model ends at the last early exit (worst-case budgets): every
            sample reaching it leaves there and the remaining blocks are never run.
        pause: PAUMER pause configuration ``{layer: fraction}`` (empty: no pausing), checked
            by the rules of :class:`~exitsearch.pausing.PauseConfig` (layers >= 1, fractions of
            the original patch count in (0, 1) summing to less than 1, kept to 6 decimals).
    """

    exits: tuple[HeadSpec, ...]
    criterion: str = "confidence"
    thresholds: tuple[float, ...] = ()
    threshold_mode: str = "per_exit"
    cut: bool = False
    pause: Mapping[int, float] = field(default_factory=dict)

    def __post_init__(self) -> None:
        exits = tuple(sorted(self.exits, key=lambda s: s.location))
        object.__setattr__(self, "exits", exits)
        locs = [s.location for s in exits]
        if len(set(locs)) != len(locs):
            raise ConfigError(f"one exit per location, got locations {locs}")
        if len(self.thresholds) != len(exits):
            raise ConfigError(
                f"{len(exits)} exits need {len(exits)} thresholds, got {len(self.thresholds)}"
            )
        if self.threshold_mode not in ("shared", "per_exit"):
            raise ConfigError(
                f"threshold_mode must be shared or per_exit, got {self.threshold_mode!r}"
            )
        if self.cut and not exits:
            raise ConfigError("a cut model needs at least one early exit")
        create_criterion(self.criterion)
        object.__setattr__(self, "thresholds", tuple(float(t) for t in self.thresholds))
        pause: dict[int, float] = {}
        if self.pause:  # only configurations that pause pay for the check
            from exitsearch.core.pause import PauseConfig

            pause = dict(
                self.pause.fractions
                if isinstance(self.pause, PauseConfig)
                else PauseConfig(dict(self.pause)).fractions
            )
        object.__setattr__(self, "pause", pause)

    @property
    def locations(self) -> tuple[int, ...]:
        return tuple(s.location for s in self.exits)

    @property
    def placement_key(self) -> str:
        """Exits, criterion, cut and pause without thresholds: what threshold refinement keeps."""
        pause = ",".join(f"{k}:{v:g}" for k, v in self.pause.items())
        return (
            " ".join(s.key for s in self.exits)
            + f" | {self.criterion}"
            + (" | cut" if self.cut else "")
            + (f" | pause {pause}" if pause else "")
        )

    def with_thresholds(self, thresholds: Sequence[float], mode: str | None = None) -> ExitConfig:
        return ExitConfig(
            self.exits,
            self.criterion,
            tuple(thresholds),
            mode or self.threshold_mode,
            self.cut,
            self.pause,
        )

    def describe(self) -> str:
        """``confidence: mlp@3 conf>=0.9, vit@6 always (cut)``: each exit with the comparison
        its threshold makes, ``always``/``never`` for thresholds outside the criterion's range."""
        crit = create_criterion(self.criterion)
        parts = [
            f"{s.variant}@{s.location}"
            + (f" {crit.describe_threshold(t)}" if not self.cut or i < len(self.exits) - 1 else "")
            for i, (s, t) in enumerate(zip(self.exits, self.thresholds, strict=True))
        ]
        # after an exit that always fires nobody goes on: the final head is never reached
        last = crit.describe_threshold(self.thresholds[-1]) if self.exits else ""
        tail = " (cut)" if self.cut else "" if last == "always" else " -> final"
        return f"{self.criterion}: " + ", ".join(parts) + tail

    def to_dict(self) -> dict[str, Any]:
        return {
            "exits": [s.to_dict() for s in self.exits],
            "criterion": self.criterion,
            "thresholds": list(self.thresholds),
            "threshold_mode": self.threshold_mode,
            "cut": self.cut,
            "pause": {str(k): v for k, v in self.pause.items()},
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> ExitConfig:
        return cls(
            exits=tuple(HeadSpec.from_dict(e) for e in d["exits"]),
            criterion=d.get("criterion", "confidence"),
            thresholds=tuple(d.get("thresholds", ())),
            threshold_mode=d.get("threshold_mode", "per_exit"),
            cut=bool(d.get("cut", False)),
            pause={int(k): float(v) for k, v in dict(d.get("pause", {})).items()},
        )
