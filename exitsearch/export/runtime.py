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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
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
        """The forward pass; ``tick(part)`` is called after each part when profiling."""
        if self._pause_counts:
            return self._run_paused(x, tick)
        bb = self.backbone
        n, dev = x.shape[0], x.device
        tokens = bb.embed(x)
        if tick:
            tick("stem")
        out = _Outputs(n, dev, self.num_outcomes)
        alive: torch.Tensor | None = None  # rows of the output still in flight; None: all
        history: torch.Tensor | None = None
        crit = self.criterion
        last = self.num_exits - 1
        segments = self._segments
        for k, head in enumerate(self.heads):
            start, stop = segments[k]
            tokens = bb.run_blocks(tokens, start, stop)
            if tick:
                tick(f"blocks {start + 1}-{stop}")
            logits = head(tokens)
            unc = (
                head.uncertainty(logits.float())
                if crit.needs_uncertainty and (head.uncertainty is not None)
                else None
            )
            if tick:
                tick(f"head {self.config.exits[k].key}")
            conf, ent, pred = exit_statistics(logits)
            if self.config.cut and k == last:
                out.emit(alive, None, logits, pred, conf, k)
                if tick:
                    tick(BOOKKEEPING)
                return out.result()
            pred_cpu = pred.cpu()
            ready = crit.runtime_readiness(
                conf.cpu(),
                ent.cpu(),
                pred_cpu,
                None if unc is None else unc.float().cpu(),
                history,
            )
            # Compared exactly as Evaluator.exit_index does: float32 readiness >= float bound.
            fire = ready.numpy() >= self._bounds[k]
            if fire.all():
                out.emit(alive, None, logits, pred, conf, k)
                if tick:
                    tick(BOOKKEEPING)
                return out.result()
            if fire.any():
                leave = torch.from_numpy(np.flatnonzero(fire))
                stay = torch.from_numpy(np.flatnonzero(~fire))
                out.emit(alive, leave.to(dev), logits, pred, conf, k)
                stay_dev = stay.to(dev)
                alive = stay_dev if alive is None else alive.index_select(0, stay_dev)
                tokens = tokens.index_select(0, stay_dev)
                if self._history:
                    history = _extend(history, pred_cpu).index_select(0, stay)
            elif self._history:
                history = _extend(history, pred_cpu)
            if tick:
                tick(BOOKKEEPING)
        start, stop = segments[-1]
        if stop > start:
            tokens = bb.run_blocks(tokens, start, stop)
            if tick:
                tick(f"blocks {start + 1}-{stop}")
        logits = bb.final_head(tokens)
        if tick:
            tick("final head")
        conf, _, pred = exit_statistics(logits)
        out.emit(alive, None, logits, pred, conf, self.num_exits)
        if tick:
            tick(BOOKKEEPING)
        return out.result()

    def describe(self) -> str:
        point = "" if self.point_index is None else f", operating point {self.point_index}"
        shown = self.config.with_thresholds(self._thresholds)
        pause = ",".join(f"{k}:{v:g}" for k, v in self.config.pause.items())
        return f"{shown.describe()}{f', pause {pause}' if pause else ''}{point}"

    # ------------------------------------------------------------------ pausing
    def _pause(self, state: _PauseState, layer: int, tick: Tick | None) -> None:
        """Pause the lowest-entropy tokens after block ``layer`` (as ``forward_states`` does)."""
        assert self.aux is not None
        tokens, index = state.tokens, state.index
        p = self.backbone.num_prefix_tokens
        patches = tokens[:, p:]
        chosen = lowest(token_entropy(self.aux(patches)), self._pause_counts[layer])
        keep = torch.ones(patches.shape[:2], dtype=torch.bool, device=tokens.device)
        keep.scatter_(1, chosen, False)
        # nonzero() walks rows in order, so the kept tokens keep their relative order
        kept = keep.nonzero()[:, 1].view(tokens.shape[0], -1)
        state.paused.append(PausedTokens(layer, index.gather(1, chosen), _take(patches, chosen)))
        state.tokens = torch.cat([tokens[:, :p], _take(patches, kept)], dim=1)
        state.index = index.gather(1, kept)
        if tick:
            tick(f"pause after block {layer}")

    def _advance(self, state: _PauseState, start: int, stop: int, tick: Tick | None) -> None:
        """Blocks ``start+1..stop``, pausing after each pause layer ``l`` with
        ``start <= l < stop`` (``l == start``: after the previous exit has decided)."""
        bb = self.backbone
        cur = start
        for layer in sorted(self._pause_counts):
            if not start <= layer < stop:
                continue
            if layer > cur:
                state.tokens = bb.run_blocks(state.tokens, cur, layer)
                if tick:
                    tick(f"blocks {cur + 1}-{layer}")
            self._pause(state, layer, tick)
            cur = layer
        if stop > cur:
            state.tokens = bb.run_blocks(state.tokens, cur, stop)
            if tick:
                tick(f"blocks {cur + 1}-{stop}")

    def _run_paused(self, x: torch.Tensor, tick: Tick | None) -> ExitOutput:
        """:meth:`run` with patch pausing (see the module docstring)."""
        bb = self.backbone
        n, dev = x.shape[0], x.device
        p = bb.num_prefix_tokens
        state = _PauseState(bb.embed(x), torch.arange(bb.num_patches, device=dev).expand(n, -1), [])
        if tick:
            tick("stem")
        out = _Outputs(n, dev, self.num_outcomes)
        alive: torch.Tensor | None = None
        history: torch.Tensor | None = None
        crit = self.criterion
        last = self.num_exits - 1
        segments = self._segments
        for k, head in enumerate(self.heads):
            start, stop = segments[k]
            self._advance(state, start, stop, tick)
            logits = head(assemble(state.tokens, state.index, state.paused, p))
            unc = (
                head.uncertainty(logits.float())
                if crit.needs_uncertainty and (head.uncertainty is not None)
                else None
            )
            if tick:
                tick(f"head {self.config.exits[k].key}")
            conf, ent, pred = exit_statistics(logits)
            if self.config.cut and k == last:
                out.emit(alive, None, logits, pred, conf, k)
                if tick:
                    tick(BOOKKEEPING)
                return out.result()
            pred_cpu = pred.cpu()
            ready = crit.runtime_readiness(
                conf.cpu(),
                ent.cpu(),
                pred_cpu,
                None if unc is None else unc.float().cpu(),
                history,
            )
            fire = ready.numpy() >= self._bounds[k]
            if fire.all():
                out.emit(alive, None, logits, pred, conf, k)
                if tick:
                    tick(BOOKKEEPING)
                return out.result()
            if fire.any():
                leave = torch.from_numpy(np.flatnonzero(fire))
                stay = torch.from_numpy(np.flatnonzero(~fire))
                out.emit(alive, leave.to(dev), logits, pred, conf, k)
                stay_dev = stay.to(dev)
                alive = stay_dev if alive is None else alive.index_select(0, stay_dev)
                state.keep(stay_dev)
                if self._history:
                    history = _extend(history, pred_cpu).index_select(0, stay)
            elif self._history:
                history = _extend(history, pred_cpu)
            if tick:
                tick(BOOKKEEPING)
        start, stop = segments[-1]
        self._advance(state, start, stop, tick)
        logits = bb.final_head(assemble(state.tokens, state.index, state.paused, p))
        if tick:
            tick("final head")
        conf, _, pred = exit_statistics(logits)
        out.emit(alive, None, logits, pred, conf, self.num_exits)
        if tick:
            tick(BOOKKEEPING)
        return out.result()


@dataclass
class _PauseState:
    """The samples in flight of a pausing forward pass: their active tokens (prefix first),
    the original patch index of each active patch token, and the tokens paused so far."""

    tokens: torch.Tensor
    index: torch.Tensor
    paused: list[PausedTokens]

    def keep(self, rows: torch.Tensor) -> None:
        """Keep only the samples ``rows`` (compaction after an exit)."""
        self.tokens = self.tokens.index_select(0, rows)
        self.index = self.index.index_select(0, rows)
        self.paused = [
            PausedTokens(t.layer, t.index.index_select(0, rows), t.tokens.index_select(0, rows))
            for t in self.paused
        ]


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, k) of ``tokens`` (B, n, D) -> (B, k, D)."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))


def _extend(history: torch.Tensor | None, pred: torch.Tensor) -> torch.Tensor:
    col = pred.to(torch.int64)[:, None]
    return col if history is None else torch.cat([history, col], dim=1)


class _Outputs:
    """The output rows, filled exit by exit in input order."""

    def __init__(self, n: int, device: torch.device, num_outcomes: int) -> None:
        self.n = n
        self.device = device
        self.num_outcomes = num_outcomes
        self.logits: torch.Tensor | None = None
        self.exit_index = torch.empty(n, dtype=torch.int64, device=device)
        self.prediction = torch.empty(n, dtype=torch.int64, device=device)
        self.confidence = torch.empty(n, dtype=torch.float32, device=device)

    def emit(
        self,
        alive: torch.Tensor | None,
        rows: torch.Tensor | None,
        logits: torch.Tensor,
        pred: torch.Tensor,
        conf: torch.Tensor,
        k: int,
    ) -> None:
        """Write the samples ``rows`` of the current (compacted) batch, or all of them."""
        if self.logits is None:
            if alive is None and rows is None:  # every sample leaves at the first exit
                self.logits = logits
                self.exit_index.fill_(k)
                self.prediction, self.confidence = pred, conf
                return
            self.logits = logits.new_empty(self.n, logits.shape[1])
        if rows is not None:
            logits, pred, conf = (t.index_select(0, rows) for t in (logits, pred, conf))
        dest = rows if alive is None else (alive if rows is None else alive.index_select(0, rows))
        if dest is None:
            self.logits.copy_(logits)
            self.exit_index.fill_(k)
            self.prediction.copy_(pred)
            self.confidence.copy_(conf)
            return
        self.logits.index_copy_(0, dest, logits.to(self.logits.dtype))
        self.exit_index.index_fill_(0, dest, k)
        self.prediction.index_copy_(0, dest, pred)
        self.confidence.index_copy_(0, dest, conf)

    def result(self) -> ExitOutput:
        assert self.logits is not None
        return ExitOutput(
            self.logits, self.exit_index, self.prediction, self.confidence, self.num_outcomes
        )
