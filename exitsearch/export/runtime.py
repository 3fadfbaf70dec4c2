"""The runnable multi-exit model: per-sample early exits that really skip computation.

Paper 002 attached exits to a ViT but decided per *batch*: a batch left early only when every
sample in it was confident, which almost never happened, and the measured speed-up was 1.00x.
Here every sample decides for itself. After each exit the samples that are ready leave with
their logits; the others are compacted (``index_select``) and only they run the next blocks,
continuing from the same hidden state. The work a batch does therefore shrinks with every exit,
and the cost of a sample is what the cost model charges (DESIGN.md): the blocks up to its exit
plus every head evaluated on the way.

Decisions use the same functions as the cached evaluation (:func:`exit_statistics` and the
criterion objects, compared with the same bounds), so a sample leaves at the exit
:meth:`Evaluator.exit_index <exitsearch.search.evaluator.Evaluator.exit_index>` predicts.

**Patch pausing** (PAUMER, paper 003; a configuration with ``pause``): after block ``l`` of the
pause configuration the auxiliary decoder gives every patch token still processed the entropy of
its prediction, and the ``round(fraction * N)`` lowest-entropy ones stop (prefix tokens never
do); later blocks run on the remaining tokens only. Before each exit head and the final head the
patch assembler puts every token back in its place, paused ones as they were when paused. The
exit at block ``l`` decides before the tokens pause there, so a sample leaving at ``l`` never
pays for the auxiliary decoder (the cost model charges it to the later exits). Per-sample exits
still compact the batch: the rows of the paused tokens and their indices leave with their
samples. The operations are those of :meth:`PausingViT.forward_states
<exitsearch.pausing.PausingViT.forward_states>`, which produced the predictions the search
scored.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.errors import ConfigError
from exitsearch.export.points import Anytime, ExitCosts, OperatingPoint
from exitsearch.heads import HeadContext
from exitsearch.pausing.pause import PausedTokens, PausingViT, assemble, lowest, token_entropy
from exitsearch.search.config import ExitConfig
from exitsearch.search.criteria import ExitCriterion, create_criterion
from exitsearch.training.predict import exit_statistics

__all__ = ["ExitCosts", "ExitOutput", "MultiExitModel", "exit_costs", "needs_history"]

Tick = Callable[[str], None]
"""Called after each part of a forward pass with the part's name (profiling only)."""

BOOKKEEPING = "exit bookkeeping"


@dataclass(frozen=True)
class ExitOutput:
    """What a multi-exit forward pass returns, one row per input sample in input order.

    Attributes:
        logits: (B, C) logits of the exit each sample left at.
        exit_index: (B,) int64: ``k`` for early exit ``k`` (0-based, in location order), ``E``
            (the number of early exits) for the backbone's final exit. A cut model has no final
            exit: its samples leave at ``0..E-1``.
        prediction: (B,) int64 predicted labels.
        confidence: (B,) float32 max-softmax probability at the exit taken.
        num_outcomes: how many exits a sample can take (``E + 1``, or ``E`` when cut).
    """

    logits: torch.Tensor
    exit_index: torch.Tensor
    prediction: torch.Tensor
    confidence: torch.Tensor
    num_outcomes: int

    def exit_counts(self) -> np.ndarray:
        """Samples per exit (the exit histogram), length :attr:`num_outcomes`."""
        idx = self.exit_index.cpu().numpy()
        return np.bincount(idx, minlength=self.num_outcomes)


def exit_costs(
    backbone: Backbone, config: ExitConfig, aux_decoder: nn.Module | None = None
) -> ExitCosts:
    """Count the FLOPs of ``config``'s exits on ``backbone`` with the search's cost model (a
    pause configuration needs the auxiliary decoder, whose cost it includes)."""
    from exitsearch.heads import profile_heads
    from exitsearch.profile import profile_backbone
    from exitsearch.search.costs import CostModel

    heads = profile_heads(config.exits, HeadContext.from_backbone(backbone))
    model = CostModel(profile_backbone(backbone), {k: c.flops for k, c in heads.items()})
    if config.pause:
        if aux_decoder is None:
            raise ConfigError("the cost of a pause configuration needs the auxiliary decoder")
        model = model.with_pauses(PausingViT(backbone, aux_decoder), [config.pause])
    return ExitCosts(float(model.backbone_flops), tuple(float(v) for v in model.exit_flops(config)))


def needs_history(criterion: ExitCriterion) -> bool:
    """Whether ``criterion`` reads earlier exits' predictions (it overrides the runtime hook)."""
    return type(criterion).runtime_readiness is not ExitCriterion.runtime_readiness


class MultiExitModel(Anytime, nn.Module):
    """A backbone with early exits that leave per sample.

    Args:
        backbone: the backbone the heads were trained on.
        heads: one head per early exit of ``config``, in exit (location) order.
        config: the exit configuration; its thresholds are the initial setting.
        operating_points: threshold settings of the same placement to switch between.
        costs: FLOPs per exit, if known (otherwise counted with fvcore when first needed).
        aux_decoder: PAUMER's auxiliary decoder (:class:`~exitsearch.pausing.AuxDecoder`),
            needed when ``config.pause`` is set (entropy pausing).

    Raises:
        ConfigError: heads and exits do not match, an exit lies beyond the backbone, the
            criterion needs uncertainty predictors the heads lack, or a pause configuration
            without an auxiliary decoder or that does not fit the backbone.

    Example:
        >>> model = MultiExitModel(backbone, heads, config)  # doctest: +SKIP
        >>> out = model(images)  # doctest: +SKIP
        >>> out.logits.shape, out.exit_counts()  # doctest: +SKIP
        (torch.Size([64, 10]), array([41, 12,  8,  3]))
    """

    def __init__(
        self,
        backbone: Backbone,
        heads: Sequence[nn.Module],
        config: ExitConfig,
        operating_points: Sequence[OperatingPoint] = (),
        costs: ExitCosts | None = None,
        aux_decoder: nn.Module | None = None,
    ) -> None:
        super().__init__()
        heads = list(heads)
        if len(heads) != len(config.exits):
            raise ConfigError(
                f"{len(config.exits)} exits need {len(config.exits)} heads, got {len(heads)}"
            )
        self.aux: nn.Module | None = None
        self._pause_counts: dict[int, int] = {}
        if config.pause:
            if aux_decoder is None:
                raise ConfigError(
                    "a pause configuration needs PAUMER's auxiliary decoder (aux_decoder), which "
                    "chooses the tokens to pause"
                )
            cfg = PausingViT(backbone, aux_decoder).resolve(dict(config.pause))
            self.aux = aux_decoder
            # tokens paused after each layer; a layer pausing none is skipped (no decoder run)
            self._pause_counts = {k: v for k, v in cfg.counts(backbone.num_patches).items() if v}
        beyond = [s.key for s in config.exits if s.location > backbone.depth]
        if beyond:
            raise ConfigError(
                f"exit(s) {', '.join(beyond)} lie beyond the {backbone.depth}-block backbone"
            )
        self.backbone = backbone
        self.heads = nn.ModuleList(heads)
        self.config = config
        self.criterion = create_criterion(config.criterion)
        if self.criterion.needs_uncertainty:
            missing = [
                s.key
                for s, h in zip(config.exits, heads, strict=True)
                if getattr(h, "uncertainty", None) is None
            ]
            if missing and not (config.cut and missing == [config.exits[-1].key]):
                raise ConfigError(
                    f"the uncertainty criterion needs an uncertainty predictor on every exit; "
                    f"{', '.join(missing)} have none"
                )
        self._history = needs_history(self.criterion)
        for p in operating_points:
            if len(p.thresholds) != len(config.exits):
                raise ConfigError(
                    f"operating point {list(p.thresholds)} has {len(p.thresholds)} thresholds for "
                    f"{len(config.exits)} exits"
                )
        self.operating_points: list[OperatingPoint] = list(operating_points)
        self._costs = costs
        self.point_index: int | None = None
        self.manifest: dict[str, Any] | None = None  # set when loaded from a bundle
        self.source: Path | None = None
        locs = list(config.locations)
        starts = [0, *locs]
        self._segments = list(zip(starts[:-1], locs, strict=True))
        if not config.cut:
            self._segments.append((starts[-1], backbone.depth))
        self.set_thresholds(config.thresholds)
        self.eval()

    # -------------------------------------------------------------------- structure
    @property
    def num_exits(self) -> int:
        """Early exits E (the final exit, when there is one, is number E)."""
        return len(self.config.exits)

    @property
    def num_outcomes(self) -> int:
        return self.num_exits if self.config.cut else self.num_exits + 1

    @property
    def segments(self) -> list[tuple[int, int]]:
        """0-based half-open block ranges run before each early exit, then before the final
        exit (absent when cut; empty when the last exit sits after the last block)."""
        return list(self._segments)

    @property
    def costs(self) -> ExitCosts:
        """FLOPs per exit; counted with fvcore on first use when the bundle did not carry them."""
        if self._costs is None:
            self._costs = exit_costs(self.backbone, self.config, self.aux)
        return self._costs

    @property
    def pausing(self) -> bool:
        """Whether tokens pause (the configuration has a pause configuration)."""
        return bool(self._pause_counts)

    def token_counts(self) -> list[int]:
        """Tokens (prefix included) each block processes for a sample that reaches it."""
        n = self.backbone.num_tokens
        out = []
        for block in range(1, self.backbone.depth + 1):
            out.append(n)
            n -= self._pause_counts.get(block, 0)
        return out

    # ----------------------------------------------------------------------- forward
    def forward(self, x: torch.Tensor) -> ExitOutput:
        """Run ``x`` (B, C, H, W), already transformed to the backbone's input, with
        per-sample exits. Runs under ``torch.inference_mode``."""
        with torch.inference_mode():
            return self.run(x)

    def run(self, x: torch.Tensor, tick: Tick | None = None) -> ExitOutput:
        """The forward pass of one batch; ``tick(part)`` is called after each part when
        profiling. The batch shrinks at every exit: later blocks run on the samples left."""
        out = _Outputs(x.device, self.num_outcomes)
        flight: _Flight | None = self._enter(x, 0, tick)
        for k in range(self.num_outcomes):
            assert flight is not None
            flight = self._stage(k, flight, out, tick)
            if flight is None:
                break
        return out.result(x.shape[0])

    def predict(
        self,
        inputs: torch.Tensor | Iterable[torch.Tensor],
        batch_size: int = 64,
        tick: Tick | None = None,
    ) -> ExitOutput:
        """Stream mode: many inputs, every stage run on full batches.

        In :meth:`run` a batch of 64 reaches the later blocks as a handful of samples, and on
        small batches every operation's fixed cost outweighs its arithmetic. Here the samples
        that go on past exit ``k`` wait in a queue in front of stage ``k + 1``; whenever a queue
        holds ``batch_size`` samples that stage runs on exactly that many (the deepest full
        queue first, which keeps at most about ``batch_size`` samples waiting per stage), and
        otherwise the next ``batch_size`` inputs enter. When the inputs run out the queues are
        drained from the first stage to the last. Every sample still decides for itself, at the
        same exit as in :meth:`run`; only the company it travels in changes.

        Args:
            inputs: (N, C, H, W) inputs already transformed to the backbone's input, or an
                iterable of such batches (a data loader's images); any batch larger than
                ``batch_size`` is split.
            batch_size: samples per stage run (and per input chunk).
            tick: profiling hook, as in :meth:`run`.

        Returns:
            One row per input, in input order.

        Raises:
            ConfigError: ``batch_size < 1``, or an input that is not a 4-D tensor.
        """
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size}")
        with torch.inference_mode():
            return self._stream(inputs, batch_size, tick)

    def _stream(
        self, inputs: torch.Tensor | Iterable[torch.Tensor], b: int, tick: Tick | None
    ) -> ExitOutput:
        stages = self.num_outcomes
        queues: list[list[_Flight]] = [[] for _ in range(stages)]
        waiting = [0] * stages
        out: _Outputs | None = None
        source = _chunks(inputs, b)
        seen = 0
        exhausted = False
        while True:
            full = [k for k in range(1, stages) if waiting[k] >= b]
            if full:
                k = full[-1]
            elif not exhausted:
                x = next(source, None)
                if x is None:
                    exhausted = True
                    continue
                if out is None:
                    out = _Outputs(x.device, self.num_outcomes)
                flight = self._enter(x, seen, tick)
                seen += x.shape[0]
                self._queue(queues, waiting, 0, self._stage(0, flight, out, tick))
                continue
            else:
                pending = [k for k in range(1, stages) if waiting[k]]
                if not pending:
                    break
                k = pending[0]
            assert out is not None
            flight = _pop(queues, waiting, k, b)
            self._queue(queues, waiting, k, self._stage(k, flight, out, tick))
        if out is None:
            raise ConfigError("predict() got no inputs")
        return out.result(seen)

    @staticmethod
    def _queue(
        queues: list[list[_Flight]], waiting: list[int], k: int, survivors: _Flight | None
    ) -> None:
        """Put the samples that went on past exit ``k`` in front of stage ``k + 1``."""
        if survivors is not None:
            queues[k + 1].append(survivors)
            waiting[k + 1] += len(survivors)

    def _enter(self, x: torch.Tensor, first_row: int, tick: Tick | None) -> _Flight:
        """The stem on a batch whose samples are output rows ``first_row, first_row + 1, ...``."""
        bb = self.backbone
        n, dev = x.shape[0], x.device
        rows = torch.arange(first_row, first_row + n, device=dev)
        index = (
            torch.arange(bb.num_patches, device=dev).expand(n, -1) if self._pause_counts else None
        )
        flight = _Flight(rows, bb.embed(x), index)
        if tick:
            tick("stem")
        return flight

    def _stage(self, k: int, flight: _Flight, out: _Outputs, tick: Tick | None) -> _Flight | None:
        """Stage ``k``: the blocks of segment ``k``, then exit ``k`` (the final exit when ``k``
        is the number of early exits). Emits the samples that leave; returns the others, or
        None when none go on."""
        bb = self.backbone
        start, stop = self._segments[k]
        if self._pause_counts:
            self._advance(flight, start, stop, tick)
            hidden = assemble(flight.tokens, flight.index, flight.paused, bb.num_prefix_tokens)
        else:
            if stop > start:
                flight.tokens = bb.run_blocks(flight.tokens, start, stop)
                if tick:
                    tick(f"blocks {start + 1}-{stop}")
            hidden = flight.tokens
        if k == self.num_exits:
            logits = bb.final_head(hidden)
            if tick:
                tick("final head")
            conf, _, pred = exit_statistics(logits)
            out.emit(flight.rows, logits, pred, conf, k)
            if tick:
                tick(BOOKKEEPING)
            return None
        head = self.heads[k]
        crit = self.criterion
        logits = head(hidden)
        unc = (
            head.uncertainty(logits.float())
            if crit.needs_uncertainty and (head.uncertainty is not None)
            else None
        )
        if tick:
            tick(f"head {self.config.exits[k].key}")
        conf, ent, pred = exit_statistics(logits)
        if self.config.cut and k == self.num_exits - 1:
            out.emit(flight.rows, logits, pred, conf, k)
            if tick:
                tick(BOOKKEEPING)
            return None
        pred_cpu = pred.cpu()
        ready = crit.runtime_readiness(
            conf.cpu(),
            ent.cpu(),
            pred_cpu,
            None if unc is None else unc.float().cpu(),
            flight.history,
        )
        # Compared exactly as Evaluator.exit_index does: float32 readiness >= float bound.
        fire = ready.numpy() >= self._bounds[k]
        survivors: _Flight | None = flight
        if fire.all():
            out.emit(flight.rows, logits, pred, conf, k)
            survivors = None
        else:
            if self._history:
                flight.history = _extend(flight.history, pred_cpu)
            if fire.any():
                dev = logits.device
                leave = torch.from_numpy(np.flatnonzero(fire)).to(dev)
                out.emit(
                    flight.rows.index_select(0, leave),
                    logits.index_select(0, leave),
                    pred.index_select(0, leave),
                    conf.index_select(0, leave),
                    k,
                )
                survivors = flight.take(torch.from_numpy(np.flatnonzero(~fire)))
        if tick:
            tick(BOOKKEEPING)
        return survivors

    def describe(self) -> str:
        point = "" if self.point_index is None else f", operating point {self.point_index}"
        shown = self.config.with_thresholds(self._thresholds)
        pause = ",".join(f"{k}:{v:g}" for k, v in self.config.pause.items())
        return f"{shown.describe()}{f', pause {pause}' if pause else ''}{point}"

    # ------------------------------------------------------------------ pausing
    def _pause(self, flight: _Flight, layer: int, tick: Tick | None) -> None:
        """Pause the lowest-entropy tokens after block ``layer`` (as ``forward_states`` does)."""
        assert self.aux is not None and flight.index is not None
        tokens, index = flight.tokens, flight.index
        p = self.backbone.num_prefix_tokens
        patches = tokens[:, p:]
        chosen = lowest(token_entropy(self.aux(patches)), self._pause_counts[layer])
        keep = torch.ones(patches.shape[:2], dtype=torch.bool, device=tokens.device)
        keep.scatter_(1, chosen, False)
        # nonzero() walks rows in order, so the kept tokens keep their relative order
        kept = keep.nonzero()[:, 1].view(tokens.shape[0], -1)
        flight.paused.append(PausedTokens(layer, index.gather(1, chosen), _take(patches, chosen)))
        flight.tokens = torch.cat([tokens[:, :p], _take(patches, kept)], dim=1)
        flight.index = index.gather(1, kept)
        if tick:
            tick(f"pause after block {layer}")

    def _advance(self, flight: _Flight, start: int, stop: int, tick: Tick | None) -> None:
        """Blocks ``start+1..stop``, pausing after each pause layer ``l`` with
        ``start <= l < stop`` (``l == start``: after the previous exit has decided)."""
        bb = self.backbone
        cur = start
        for layer in sorted(self._pause_counts):
            if not start <= layer < stop:
                continue
            if layer > cur:
                flight.tokens = bb.run_blocks(flight.tokens, cur, layer)
                if tick:
                    tick(f"blocks {cur + 1}-{layer}")
            self._pause(flight, layer, tick)
            cur = layer
        if stop > cur:
            flight.tokens = bb.run_blocks(flight.tokens, cur, stop)
            if tick:
                tick(f"blocks {cur + 1}-{stop}")


@dataclass
class _Flight:
    """Samples in flight between two stages: the output row of each, its active tokens
    (prefix first), and, when tokens pause, the original patch index of each active patch
    token and the tokens paused so far; with a criterion that reads earlier exits, their
    predictions (samples x exits passed)."""

    rows: torch.Tensor
    tokens: torch.Tensor
    index: torch.Tensor | None = None
    paused: list[PausedTokens] = field(default_factory=list)
    history: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, sel: torch.Tensor) -> _Flight:
        """The samples at positions ``sel`` (a CPU index tensor), in that order."""
        dev = sel.to(self.tokens.device)
        return _Flight(
            self.rows.index_select(0, dev),
            self.tokens.index_select(0, dev),
            None if self.index is None else self.index.index_select(0, dev),
            [
                PausedTokens(t.layer, t.index.index_select(0, dev), t.tokens.index_select(0, dev))
                for t in self.paused
            ],
            None if self.history is None else self.history.index_select(0, sel),
        )

    def head(self, n: int) -> _Flight:
        """The first ``n`` samples (views)."""
        return self._slice(slice(0, n))

    def tail(self, n: int) -> _Flight:
        """The samples from position ``n`` on (views)."""
        return self._slice(slice(n, None))

    def _slice(self, s: slice) -> _Flight:
        return _Flight(
            self.rows[s],
            self.tokens[s],
            None if self.index is None else self.index[s],
            [PausedTokens(t.layer, t.index[s], t.tokens[s]) for t in self.paused],
            None if self.history is None else self.history[s],
        )

    @staticmethod
    def cat(flights: Sequence[_Flight]) -> _Flight:
        """The samples of ``flights`` one after the other (all at the same stage)."""
        if len(flights) == 1:
            return flights[0]
        first = flights[0]
        return _Flight(
            torch.cat([f.rows for f in flights]),
            torch.cat([f.tokens for f in flights]),
            None if first.index is None else torch.cat([f.index for f in flights]),  # type: ignore[misc]
            [
                PausedTokens(
                    t.layer,
                    torch.cat([f.paused[i].index for f in flights]),
                    torch.cat([f.paused[i].tokens for f in flights]),
                )
                for i, t in enumerate(first.paused)
            ],
            None if first.history is None else torch.cat([f.history for f in flights]),  # type: ignore[misc]
        )


def _pop(queues: list[list[_Flight]], waiting: list[int], k: int, b: int) -> _Flight:
    """Up to ``b`` samples from the front of stage ``k``'s queue."""
    flight = _Flight.cat(queues[k])
    if len(flight) > b:
        queues[k] = [flight.tail(b)]
        flight = flight.head(b)
    else:
        queues[k] = []
    waiting[k] -= len(flight)
    return flight


def _chunks(inputs: torch.Tensor | Iterable[torch.Tensor], b: int) -> Iterator[torch.Tensor]:
    """``inputs`` in chunks of at most ``b`` samples."""
    batches = [inputs] if isinstance(inputs, torch.Tensor) else inputs
    for x in batches:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            raise ConfigError(
                "predict() takes (N, C, H, W) image tensors or an iterable of them, got "
                f"{type(x).__name__}{'' if not isinstance(x, torch.Tensor) else tuple(x.shape)}"
            )
        for i in range(0, x.shape[0], b):
            yield x[i : i + b]


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, k) of ``tokens`` (B, n, D) -> (B, k, D)."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _extend(history: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor:
    col = pred.to(torch.int64)[:, None]
    return col if history is None else torch.cat([history, col], dim=1)


class _Outputs:
    """The output rows, gathered exit by exit and put in input order at the end."""

    def __init__(self, device: torch.device, num_outcomes: int) -> None:
        self.device = device
        self.num_outcomes = num_outcomes
        self.parts: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]] = []

    def emit(
        self,
        rows: torch.Tensor,
        logits: torch.Tensor,
        pred: torch.Tensor,
        conf: torch.Tensor,
        k: int,
    ) -> None:
        """The samples ``rows`` (output rows) leave at exit ``k`` with these outputs."""
        self.parts.append((rows, logits, pred, conf, k))

    def result(self, n: int) -> ExitOutput:
        """The ``n`` output rows in input order (every row has been emitted once)."""
        assert self.parts
        if len(self.parts) == 1:  # one batch, every sample left at the same exit, in order
            rows, logits, pred, conf, k = self.parts[0]
            exit_index = torch.full((n,), k, dtype=torch.int64, device=self.device)
            return ExitOutput(logits, exit_index, pred, conf, self.num_outcomes)
        first = self.parts[0][1]
        logits = first.new_empty(n, first.shape[1])
        exit_index = torch.empty(n, dtype=torch.int64, device=self.device)
        prediction = torch.empty(n, dtype=torch.int64, device=self.device)
        confidence = torch.empty(n, dtype=torch.float32, device=self.device)
        for rows, lg, pred, conf, k in self.parts:
            logits.index_copy_(0, rows, lg.to(logits.dtype))
            exit_index.index_fill_(0, rows, k)
            prediction.index_copy_(0, rows, pred)
            confidence.index_copy_(0, rows, conf)
        return ExitOutput(logits, exit_index, prediction, confidence, self.num_outcomes)
