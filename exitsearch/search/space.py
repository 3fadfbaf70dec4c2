"""Search spaces: which exits may be trained and searched, read from YAML.

A search space names the candidate exit locations, the head types (with their LGViT kernel and
window candidates), how exits are placed (``free``, ``uniform``, ``lgvit``), the exit criteria and
threshold ranges. Numeric ranges use Optuna's short form (``low``, ``high``, ``step``, ``log``) and
discrete sets ``choices``. A malformed file raises :class:`SearchSpaceError` naming the file, the
key and what is allowed.

An optional ``pause`` section adds PAUMER pause configurations (PAUMER) as a search dimension:
``layers`` where tokens may pause, ``taus`` the proportions of the tokens *still processed* at a
layer that pause there (``0``: none; the reading of the paper's Table 1), the pausing ``mode``
(``entropy`` or ``random``), ``max_layers`` pausing at once, and optionally ``trials`` to
sample that many configurations with an Optuna study instead of scoring the whole grid::

    pause: {layers: [3, 5, 7], taus: [0.0, 0.2, 0.4, 0.6], mode: entropy, max_layers: 2}

Example (``search_spaces/lgvit.yaml``)::

    name: lgvit
    placement: lgvit
    heads:
      lph: {half: shallow, k: [0, 3, 5, 7]}
      gah: {half: deep, s: [1, 2, 3]}
    criteria: [confidence]
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from exitsearch.core.task import CLASSIFICATION, Task
from exitsearch.errors import SearchSpaceError
from exitsearch.heads import HeadSpec, list_heads
from exitsearch.heads.mappings import MIN_WINDOW, KernelMapping, WindowMapping, candidate_values

__all__ = [
    "CRITERIA",
    "PAUSE_MODES",
    "FloatRange",
    "HeadOptions",
    "IntRange",
    "PauseOptions",
    "Placement",
    "SearchSpace",
    "builtin_spaces",
    "load_search_space",
]

CRITERIA = ("confidence", "entropy", "patience", "uncertainty")
THRESHOLD_MODES = ("shared", "per_exit")
HALVES = ("all", "shallow", "deep")
MAPPED_PARAM = {"lph": "k", "gah": "s"}
PAUSE_MODES = ("entropy", "random")
MAX_PAUSE_GRID = 512  # configurations scored one by one; larger spaces give `trials`


class Placement(str, enum.Enum):
    """How a configuration's exits are placed.

    ``free``: any subset of the candidate locations, any allowed head at each.
    ``uniform``: ``n`` evenly spaced exits sharing one head type (Multi-Exit ViT, LGViT's baseline).
    ``lgvit``: any subset of locations; local heads (``lph``) in the shallow half with k from a
    kernel mapping, global heads (``gah``) in the deep half with s from a window mapping.
    """

    FREE = "free"
    UNIFORM = "uniform"
    LGVIT = "lgvit"


@dataclass(frozen=True)
class FloatRange:
    low: float
    high: float
    log: bool = False

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.log and self.low <= 0:
            raise ValueError(f"`low > 0` must hold for log=true, but got low={self.low}")


@dataclass(frozen=True)
class IntRange:
    low: int
    high: int
    step: int = 1

    def __post_init__(self) -> None:
        if not self.low <= self.high:
            raise ValueError(f"`low <= high` must hold, but got (low={self.low}, high={self.high})")
        if self.step < 1:
            raise ValueError(f"`step >= 1` must hold, but got step={self.step}")

    def values(self) -> list[int]:
        return list(range(self.low, self.high + 1, self.step))


@dataclass(frozen=True)
class HeadOptions:
    """Where a head type may sit and which variants of it are trained.

    Attributes:
        half: ``all`` locations, the ``shallow`` half (m <= L/2) or the ``deep`` half (m > L/2).
        values: for ``lph`` the kernel sizes k, for ``gah`` the window sizes s, trained at every
            allowed location; empty for the other types.
        params: fixed constructor parameters passed to the head.
    """

    half: str = "all"
    values: tuple[int, ...] = ()
    params: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class PauseOptions:
    """The pause configurations of a space (its ``pause`` section).

    Attributes:
        layers: blocks after which tokens may pause (1-based; checked against the backbone by
            :meth:`check`).
        taus: proportions of the tokens still processed at a layer that pause there; ``0`` is
            no pausing at that layer (converted with ``PauseConfig.from_relative``).
        mode: ``entropy`` (PAUMER) or ``random`` (the random-pausing baseline).
        max_layers: at most this many layers pause in one configuration (None: any number).
        trials: sample this many configurations with an Optuna study instead of scoring the
            whole grid (None: the grid).
    """

    layers: tuple[int, ...]
    taus: tuple[float, ...] = (0.0, 0.2, 0.4, 0.6)
    mode: str = "entropy"
    max_layers: int | None = None
    trials: int | None = None

    def grid(self) -> list[Any]:
        """Every configuration (``PauseConfig``), no pausing first, then by number of pausing
        layers and key; duplicates (the same fractions reached twice) are dropped."""
        import itertools

        from exitsearch.core.pause import PauseConfig

        nonzero = [t for t in self.taus if t > 0]
        most = len(self.layers) if self.max_layers is None else self.max_layers
        out: dict[str, Any] = {"": PauseConfig()}
        for n in range(1, min(most, len(self.layers)) + 1):
            for layers in itertools.combinations(self.layers, n):
                for taus in itertools.product(nonzero, repeat=n):
                    cfg = PauseConfig.from_relative(dict(zip(layers, taus, strict=True)))
                    out.setdefault(cfg.key, cfg)
        return list(out.values())

    @property
    def grid_size(self) -> int:
        k = sum(1 for t in self.taus if t > 0)
        most = (
            len(self.layers) if self.max_layers is None else min(self.max_layers, len(self.layers))
        )
        return sum(math.comb(len(self.layers), n) * k**n for n in range(most + 1))

    def check(self, depth: int, source: str = "<memory>") -> None:
        """Raises SearchSpaceError when a layer lies outside ``1..depth - 1``."""
        bad = [m for m in self.layers if not 1 <= m <= depth - 1]
        if bad:
            raise SearchSpaceError(
                f"{source}: pause.layers: {bad} lie outside 1..{depth - 1} for a {depth}-block "
                "backbone (pausing after the last block saves nothing)"
            )

    def to_dict(self) -> dict[str, Any]:
        return {
            "layers": list(self.layers),
            "taus": list(self.taus),
            "mode": self.mode,
            "max_layers": self.max_layers,
            "trials": self.trials,
        }


@dataclass(frozen=True)
class SearchSpace:
    """A validated search space. Build with :func:`load_search_space`.

    ``locations`` may be ``None`` (every block but the last); :meth:`resolve` checks them
    against a backbone's depth.
    """

    name: str
    description: str
    heads: Mapping[str, HeadOptions]
    locations: tuple[int, ...] | None = None
    placement: Placement = Placement.FREE
    criteria: tuple[str, ...] = CRITERIA
    threshold_modes: tuple[str, ...] = THRESHOLD_MODES
    max_exits: int | None = None
    num_exits: IntRange = field(default_factory=lambda: IntRange(1, 6))
    uncertainty: bool = True
    confidence: FloatRange = field(default_factory=lambda: FloatRange(0.3, 1.0))
    entropy: FloatRange = field(default_factory=lambda: FloatRange(0.0, 1.0))
    patience: IntRange = field(default_factory=lambda: IntRange(1, 4))
    uncertainty_range: FloatRange = field(default_factory=lambda: FloatRange(0.0, 1.0))
    kernel_first: tuple[int, ...] = (3, 5)
    kernel_last: tuple[int, ...] = (0, 3)
    window_first: tuple[int, ...] = (2,)
    window_last: tuple[int, ...] = (2, 3)
    pause: PauseOptions | None = None
    source: str = "<memory>"
    native_uncertainty: bool = False
    """Every exit predicts its own uncertainty (a counting task): no MEViT predictors."""

    # ------------------------------------------------------------------ resolve
    def candidate_locations(self, depth: int) -> list[int]:
        """Locations checked against ``depth``: exits sit after blocks ``1..depth-1``."""
        locs = list(self.locations) if self.locations is not None else list(range(1, depth))
        bad = [m for m in locs if not 1 <= m < depth]
        if bad:
            raise SearchSpaceError(
                f"{self.source}: locations: {bad} lie beyond the backbone; allowed: 1..{depth - 1} "
                f"for a {depth}-block backbone (block {depth} is the backbone's own exit)"
            )
        return sorted(set(locs))

    def locations_for(self, head_type: str, depth: int) -> list[int]:
        locs = self.candidate_locations(depth)
        half = self.heads[head_type].half
        if half == "shallow":
            return [m for m in locs if m <= depth / 2]
        if half == "deep":
            return [m for m in locs if m > depth / 2]
        return locs

    def mappings(self) -> list[KernelMapping | WindowMapping]:
        """Every LGViT mapping the space's ``kernel_mapping``/``window_mapping`` choices give
        (ordered as the sampler orders a pair: ``k`` decreasing, ``s`` increasing)."""
        return [
            KernelMapping(max(a, b), min(a, b)) for a in self.kernel_first for b in self.kernel_last
        ] + [
            WindowMapping(min(a, b), max(a, b)) for a in self.window_first for b in self.window_last
        ]

    def mapped_values(self, depth: int) -> dict[int, tuple[int, ...]]:
        """For placement ``lgvit``: the ``k`` (shallow half) or ``s`` (deep half) values that
        any of the space's mappings can give each candidate location, over every choice of
        exits: exactly the head variants to train, so the search never swaps a mapped value for
        a neighbour."""
        return candidate_values(self.mappings(), self.candidate_locations(depth), depth)

    def candidate_heads(self, depth: int) -> list[HeadSpec]:
        """Every head the search may use: what the heads stage trains, in a stable order."""
        out: list[HeadSpec] = []
        mapped = self.mapped_values(depth) if self.placement is Placement.LGVIT else {}
        for m in self.candidate_locations(depth):
            for head_type, opts in self.heads.items():
                if m not in self.locations_for(head_type, depth):
                    continue
                param = MAPPED_PARAM.get(head_type)
                values = mapped.get(m, ()) if self.placement is Placement.LGVIT else opts.values
                variants = [{param: v} for v in values] if param and values else [{}]
                for v in variants:
                    out.append(HeadSpec(head_type, m, {**opts.params, **v}, self.uncertainty))
        if not out:
            raise SearchSpaceError(f"{self.source}: no candidate head at any location")
        return out

    def for_task(self, task: Task) -> SearchSpace:
        """This space for a task: without the criteria it does not support, and without MEViT
        predictors when its exits predict their own uncertainty (a counting task)."""
        if task.name == CLASSIFICATION:
            return self
        criteria = tuple(c for c in self.criteria if c not in task.unsupported_criteria)
        if not criteria:
            raise SearchSpaceError(
                f"{self.source}: none of the criteria {', '.join(self.criteria)} applies to "
                f"{task.name}"
            )
        return replace(
            self,
            criteria=criteria,
            uncertainty=self.uncertainty and not task.native_uncertainty,
            native_uncertainty=task.native_uncertainty,
        )

    def to_dict(self) -> dict[str, Any]:
        """A plain form that round-trips through :func:`parse_search_space` (used in hashes).

        ``pause`` appears only in spaces that have one, so the keys of the others stay as they
        were."""
        doc = {
            "name": self.name,
            "description": self.description,
            "locations": list(self.locations) if self.locations is not None else "all",
            "placement": self.placement.value,
            "heads": {
                k: {
                    "half": v.half,
                    **({MAPPED_PARAM[k]: list(v.values)} if v.values else {}),
                    **({"params": dict(v.params)} if v.params else {}),
                }
                for k, v in self.heads.items()
            },
            "criteria": list(self.criteria),
            "thresholds": list(self.threshold_modes),
            "max_exits": self.max_exits,
            "num_exits": {"low": self.num_exits.low, "high": self.num_exits.high},
            "uncertainty": self.uncertainty,
            "confidence": {"low": self.confidence.low, "high": self.confidence.high},
            "entropy": {"low": self.entropy.low, "high": self.entropy.high},
            "patience": {"low": self.patience.low, "high": self.patience.high},
            "uncertainty_threshold": {
                "low": self.uncertainty_range.low,
                "high": self.uncertainty_range.high,
            },
            "kernel_mapping": {
                "k_first": {"choices": list(self.kernel_first)},
                "k_last": {"choices": list(self.kernel_last)},
            },
            "window_mapping": {
                "s_first": {"choices": list(self.window_first)},
                "s_last": {"choices": list(self.window_last)},
            },
        }
        if self.native_uncertainty:
            doc["native_uncertainty"] = True
        if self.pause is not None:
            doc["pause"] = self.pause.to_dict()
        return doc


# ---------------------------------------------------------------------- loading
_TOP_KEYS = {
    "name",
    "description",
    "locations",
    "placement",
    "heads",
    "criteria",
    "thresholds",
    "max_exits",
    "num_exits",
    "uncertainty",
    "confidence",
    "entropy",
    "patience",
    "uncertainty_threshold",
    "kernel_mapping",
    "window_mapping",
    "pause",
    "native_uncertainty",
}
_HEAD_KEYS = {"half", "k", "s", "params"}
_PAUSE_KEYS = {"layers", "taus", "mode", "max_layers", "trials"}


def builtin_spaces() -> dict[str, Path]:
    """The YAML spaces shipped in ``search_spaces/`` by name."""
    root = Path(str(resources.files("exitsearch.search_spaces")))
    return {p.stem: p for p in sorted(root.glob("*.yaml"))}


def load_search_space(name_or_path: str | Path) -> SearchSpace:
    """Load a shipped space by name (``default``, ``lgvit``...) or a YAML file by path.

    Raises:
        SearchSpaceError: unknown name, unreadable file, or invalid content; the message names
            the file, the key and what is allowed.
    """
    text = str(name_or_path)
    spaces = builtin_spaces()
    if text in spaces:
        path = spaces[text]
    else:
        path = Path(text)
        if not path.is_file():
            raise SearchSpaceError(
                f"{text}: no such search-space file; shipped spaces: {', '.join(spaces)}"
            )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as exc:
        first = " ".join(str(exc).split())
        raise SearchSpaceError(f"{path}: not valid YAML ({first})") from None
    return parse_search_space(doc, source=str(path))


def parse_search_space(doc: Any, source: str = "<memory>") -> SearchSpace:
    """Validate a parsed YAML document into a :class:`SearchSpace`."""
    p = _Parser(source)
    if not isinstance(doc, dict):
        p.fail("", f"the file must hold a mapping of keys, got {type(doc).__name__}")
    unknown = sorted(set(doc) - _TOP_KEYS, key=str)
    if unknown:
        p.fail(unknown[0], f"unknown key; allowed: {', '.join(sorted(_TOP_KEYS))}")
    name = p.string(doc, "name", default=Path(source).stem)
    heads = p.heads(doc.get("heads"))
    placement = p.choice(doc, "placement", [e.value for e in Placement], default="free")
    criteria = p.choice_list(doc, "criteria", CRITERIA, default=list(CRITERIA))
    modes = p.choice_list(doc, "thresholds", THRESHOLD_MODES, default=list(THRESHOLD_MODES))
    if placement == "lgvit":
        missing = [h for h in ("lph", "gah") if h not in heads]
        extra = [h for h in heads if h not in ("lph", "gah")]
        if missing or extra:
            p.fail(
                "heads", f"placement lgvit takes exactly lph and gah heads; got {', '.join(heads)}"
            )
        raw = doc["heads"] if isinstance(doc["heads"], dict) else {}  # a list names types only
        for head_type, opts in raw.items():
            param = MAPPED_PARAM[head_type]
            if isinstance(opts, dict) and param in opts:
                mapping = "kernel_mapping" if param == "k" else "window_mapping"
                p.fail(
                    f"heads.{head_type}.{param}",
                    f"placement lgvit trains the values its mapping can produce; choose them "
                    f"with {mapping} ({param}_first, {param}_last) instead",
                )
        # LGViT places local heads in the shallow half and global ones in the deep half
        halves = {"lph": "shallow", "gah": "deep"}
        for h, o in heads.items():
            if o.half not in ("all", halves[h]):
                p.fail(f"heads.{h}.half", f"placement lgvit puts {h} in the {halves[h]} half")
        heads = {h: replace(o, values=(), half=halves[h]) for h, o in heads.items()}
    kernel = doc.get("kernel_mapping", {})
    window = doc.get("window_mapping", {})
    if not isinstance(kernel, dict) or not isinstance(window, dict):
        p.fail(
            "kernel_mapping" if not isinstance(kernel, dict) else "window_mapping",
            "must be a mapping with choices for k_first/k_last (or s_first/s_last)",
        )
    p.no_unknown(kernel, "kernel_mapping", {"k_first", "k_last"})
    p.no_unknown(window, "window_mapping", {"s_first", "s_last"})
    space = SearchSpace(
        name=name,
        description=p.string(doc, "description", default=""),
        heads=heads,
        locations=p.locations(doc.get("locations", "all")),
        placement=Placement(placement),
        criteria=tuple(criteria),
        threshold_modes=tuple(modes),
        max_exits=p.optional_int(doc, "max_exits", minimum=1),
        num_exits=p.int_range(doc, "num_exits", IntRange(1, 6), minimum=1),
        uncertainty=p.boolean(doc, "uncertainty", default=True),
        confidence=p.float_range(doc, "confidence", FloatRange(0.3, 1.0), 0.0, 1.0),
        entropy=p.float_range(doc, "entropy", FloatRange(0.0, 1.0), 0.0, 1.0),
        patience=p.int_range(doc, "patience", IntRange(1, 4), minimum=1),
        uncertainty_range=p.float_range(
            doc, "uncertainty_threshold", FloatRange(0.0, 1.0), 0.0, 1.0
        ),
        kernel_first=p.int_choices(
            kernel, "kernel_mapping.k_first", "k_first", (3, 5), odd_or_zero=True
        ),
        kernel_last=p.int_choices(
            kernel, "kernel_mapping.k_last", "k_last", (0, 3), odd_or_zero=True
        ),
        window_first=p.int_choices(
            window, "window_mapping.s_first", "s_first", (MIN_WINDOW,), minimum=MIN_WINDOW
        ),
        window_last=p.int_choices(
            window, "window_mapping.s_last", "s_last", (MIN_WINDOW, 3), minimum=MIN_WINDOW
        ),
        pause=p.pause(doc.get("pause")),
        source=source,
        native_uncertainty=p.boolean(doc, "native_uncertainty", default=False),
    )
    if "uncertainty" in space.criteria and not (space.uncertainty or space.native_uncertainty):
        p.fail(
            "criteria", "the uncertainty criterion needs `uncertainty: true` (trained predictors)"
        )
    return space


class _Parser:
    """Validation helpers that raise one-line errors naming the file and the key."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, what: str) -> None:
        where = f"{self.source}: {key}: " if key else f"{self.source}: "
        raise SearchSpaceError(where + what)

    def no_unknown(self, d: dict[str, Any], key: str, allowed: set[str]) -> None:
        unknown = sorted(set(d) - allowed, key=str)
        if unknown:
            self.fail(f"{key}.{unknown[0]}", f"unknown key; allowed: {', '.join(sorted(allowed))}")

    def string(self, d: dict[str, Any], key: str, default: str) -> str:
        v = d.get(key, default)
        if not isinstance(v, str):
            self.fail(key, f"must be a string, got {v!r}")
        return v

    def boolean(self, d: dict[str, Any], key: str, default: bool) -> bool:
        v = d.get(key, default)
        if not isinstance(v, bool):
            self.fail(key, f"must be true or false, got {v!r}")
        return v

    def choice(self, d: dict[str, Any], key: str, allowed: list[str], default: str) -> str:
        v = d.get(key, default)
        if v not in allowed:
            self.fail(key, f"got {v!r}; allowed: {', '.join(allowed)}")
        return v

    def choice_list(
        self, d: dict[str, Any], key: str, allowed: tuple[str, ...], default: list[str]
    ) -> list[str]:
        v = d.get(key, default)
        if isinstance(v, dict) and set(v) == {"choices"}:
            v = v["choices"]
        if isinstance(v, str):
            v = [v]
        if not isinstance(v, list):
            self.fail(
                key,
                f"must be a list (or {{choices: [...]}}), got {v!r}; allowed: {', '.join(allowed)}",
            )
        if not v:
            self.fail(key, f"empty choices; allowed: {', '.join(allowed)}")
        bad = [x for x in v if x not in allowed]
        if bad:
            self.fail(key, f"got {bad[0]!r}; allowed: {', '.join(allowed)}")
        return list(dict.fromkeys(v))

    def optional_int(self, d: dict[str, Any], key: str, minimum: int) -> int | None:
        v = d.get(key)
        if v is None:
            return None
        if not isinstance(v, int) or isinstance(v, bool) or v < minimum:
            self.fail(key, f"must be an integer >= {minimum}, got {v!r}")
        return v

    def _number(self, key: str, v: Any, integer: bool) -> float:
        ok = isinstance(v, int) if integer else isinstance(v, int | float)
        if ok and not isinstance(v, bool) and not integer:
            try:
                ok = math.isfinite(v)
            except OverflowError:  # an integer too large for a float
                ok = False
        if not ok or isinstance(v, bool):
            self.fail(key, f"must be {'an integer' if integer else 'a number'}, got {_short(v)}")
        return v

    def int_range(self, d: dict[str, Any], key: str, default: IntRange, minimum: int) -> IntRange:
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, dict):
            self.fail(
                key, f"must be a mapping with low and high (e.g. {{low: 1, high: 4}}), got {v!r}"
            )
        self.no_unknown(v, key, {"low", "high", "step"})
        low = int(self._number(f"{key}.low", v.get("low", default.low), True))
        high = int(self._number(f"{key}.high", v.get("high", default.high), True))
        step = int(self._number(f"{key}.step", v.get("step", 1), True))
        if low < minimum:
            self.fail(f"{key}.low", f"must be >= {minimum}, got {low}")
        try:
            return IntRange(low, high, step)
        except ValueError as exc:
            self.fail(key, str(exc))
        raise AssertionError  # unreachable

    def float_range(
        self, d: dict[str, Any], key: str, default: FloatRange, lo: float, hi: float
    ) -> FloatRange:
        v = d.get(key)
        if v is None:
            return default
        if not isinstance(v, dict):
            self.fail(
                key,
                f"must be a mapping with low and high (e.g. {{low: 0.5, high: 1.0}}), got {v!r}",
            )
        self.no_unknown(v, key, {"low", "high", "log"})
        low = float(self._number(f"{key}.low", v.get("low", default.low), False))
        high = float(self._number(f"{key}.high", v.get("high", default.high), False))
        if not (lo <= low <= hi and lo <= high <= hi):
            self.fail(key, f"low and high must lie in [{lo}, {hi}], got low={low}, high={high}")
        log = v.get("log", False)
        if not isinstance(log, bool):
            self.fail(f"{key}.log", f"must be true or false, got {log!r}")
        try:
            return FloatRange(low, high, log)
        except ValueError as exc:
            self.fail(key, str(exc))
        raise AssertionError  # unreachable

    def int_choices(
        self,
        d: dict[str, Any],
        key: str,
        name: str,
        default: tuple[int, ...],
        odd_or_zero: bool = False,
        minimum: int = 0,
    ) -> tuple[int, ...]:
        v = d.get(name)
        if v is None:
            return default
        if isinstance(v, dict):
            self.no_unknown(v, key, {"choices"})
            v = v.get("choices")
        if not isinstance(v, list):
            self.fail(key, f"must be a list of integers (or {{choices: [...]}}), got {v!r}")
        return self._ints(key, v, odd_or_zero, minimum)

    def _ints(self, key: str, v: list[Any], odd_or_zero: bool, minimum: int) -> tuple[int, ...]:
        if not v:
            self.fail(key, "empty choices; give at least one value")
        for x in v:
            if not isinstance(x, int) or isinstance(x, bool) or x < minimum:
                self.fail(key, f"got {x!r}; allowed: integers >= {minimum}")
            if odd_or_zero and x != 0 and x % 2 == 0:
                self.fail(
                    key, f"got {x}; allowed: 0 (no depth-wise convolution) or odd kernel sizes"
                )
        return tuple(sorted(set(v)))

    def locations(self, v: Any) -> tuple[int, ...] | None:
        if v == "all" or v is None:
            return None
        if isinstance(v, dict):
            self.no_unknown(v, "locations", {"low", "high", "step"})
            r = self.int_range({"locations": v}, "locations", IntRange(1, 1), minimum=1)
            return tuple(r.values())
        if isinstance(v, list):
            return self._ints("locations", v, False, 1)
        self.fail(
            "locations", f"got {v!r}; allowed: all, a list of block indices, or {{low, high}}"
        )
        raise AssertionError  # unreachable

    def pause(self, v: Any) -> PauseOptions | None:
        """The ``pause`` section: layers, taus, mode, max_layers, trials."""
        if v is None:
            return None
        if not isinstance(v, dict):
            self.fail(
                "pause",
                "must be a mapping, e.g. {layers: [3, 5, 7], taus: [0.0, 0.2, 0.4], "
                f"mode: entropy, max_layers: 2}}; allowed keys: {', '.join(sorted(_PAUSE_KEYS))}",
            )
        self.no_unknown(v, "pause", _PAUSE_KEYS)
        if "layers" not in v:
            self.fail("pause.layers", "missing; give the blocks after which tokens may pause")
        raw = v["layers"]
        if isinstance(raw, dict):
            self.no_unknown(raw, "pause.layers", {"low", "high", "step"})
            layers = tuple(
                self.int_range({"pause.layers": raw}, "pause.layers", IntRange(1, 1), 1).values()
            )
        elif isinstance(raw, list):
            layers = self._ints("pause.layers", raw, False, 1)
        else:
            self.fail(
                "pause.layers",
                f"got {_short(raw)}; allowed: a list of block indices or {{low, high}}",
            )
        taus_raw = v.get("taus", [0.0, 0.2, 0.4, 0.6])
        if not isinstance(taus_raw, list) or not taus_raw:
            self.fail(
                "pause.taus",
                f"must be a non-empty list of numbers in [0, 1), got {_short(taus_raw)}",
            )
        taus = []
        for t in taus_raw:
            t = float(self._number("pause.taus", t, False))
            if not 0.0 <= t < 1.0:
                self.fail(
                    "pause.taus", f"got {t:g}; allowed: numbers in [0, 1) (0: no pausing there)"
                )
            taus.append(round(t, 6))
        if not any(t > 0 for t in taus):
            self.fail("pause.taus", "holds no proportion above 0, so nothing would ever pause")
        mode = v.get("mode", "entropy")
        if mode not in PAUSE_MODES:
            self.fail("pause.mode", f"got {_short(mode)}; allowed: {', '.join(PAUSE_MODES)}")
        max_layers = self.optional_int(
            {"pause.max_layers": v.get("max_layers")}, "pause.max_layers", 1
        )
        trials = self.optional_int({"pause.trials": v.get("trials")}, "pause.trials", 1)
        opts = PauseOptions(tuple(layers), tuple(sorted(set(taus))), mode, max_layers, trials)
        if trials is None and opts.grid_size > MAX_PAUSE_GRID:
            self.fail(
                "pause",
                f"the grid holds {opts.grid_size} configurations, more than {MAX_PAUSE_GRID} to "
                "score one by one; lower max_layers, or give `trials: N` to sample N of them",
            )
        return opts

    def heads(self, v: Any) -> dict[str, HeadOptions]:
        known = list_heads()
        if v is None:
            self.fail(
                "heads",
                f"missing; give a mapping of head types to options; known types: {', '.join(known)}",
            )
        if isinstance(v, list):
            if not all(isinstance(name, str) for name in v):
                self.fail(
                    "heads",
                    f"a list of heads must hold head type names; known types: {', '.join(known)}",
                )
            v = {name: {} for name in v}
        if not isinstance(v, dict) or not v:
            self.fail(
                "heads",
                f"must be a non-empty mapping of head types; known types: {', '.join(known)}",
            )
        out: dict[str, HeadOptions] = {}
        for name, opts in v.items():
            if name not in known:
                self.fail(f"heads.{name}", f"unknown head type; known: {', '.join(known)}")
            opts = opts or {}
            if not isinstance(opts, dict):
                self.fail(f"heads.{name}", f"options must be a mapping, got {opts!r}")
            self.no_unknown(opts, f"heads.{name}", _HEAD_KEYS)
            half = opts.get("half", "all")
            if half not in HALVES:
                self.fail(f"heads.{name}.half", f"got {half!r}; allowed: {', '.join(HALVES)}")
            param = MAPPED_PARAM.get(name)
            for other in {"k", "s"} - ({param} if param else set()):
                if other in opts:
                    self.fail(f"heads.{name}.{other}", f"{name} heads take no {other!r}")
            values: tuple[int, ...] = ()
            if param:
                raw = opts.get(param, [0, 3, 5, 7] if param == "k" else [1, 2, 3])
                if isinstance(raw, dict):
                    self.no_unknown(raw, f"heads.{name}.{param}", {"choices"})
                    raw = raw.get("choices")
                if not isinstance(raw, list):
                    self.fail(f"heads.{name}.{param}", f"must be a list of integers, got {raw!r}")
                values = self._ints(
                    f"heads.{name}.{param}", raw, param == "k", 0 if param == "k" else 1
                )
            params = opts.get("params", {})
            if not isinstance(params, dict):
                self.fail(f"heads.{name}.params", f"must be a mapping, got {params!r}")
            out[name] = HeadOptions(half=half, values=values, params=dict(params))
        return out


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
