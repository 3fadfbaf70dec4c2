"""The runnable multi-exit model: per-sample early exits that really skip computation.

Ryu attached exits to a ViT but decided per *batch*: a batch left early only when every
sample in it was confident, which almost never happened, and the measured speed-up was 1.00x.
Here every sample decides for itself. After each exit the samples that are ready leave with
their logits; the others are compacted (``index_select``) and only they run the next blocks,
continuing from the same hidden state. The work a batch does therefore shrinks with every exit,
and the cost of a sample is what the cost model charges (DESIGN.md): the blocks up to its exit
plus every head evaluated on the way. Batch mode (``model(x)``, :meth:`~MultiExitModel.run`) and
stream mode (:meth:`~MultiExitModel.predict`, every stage on full batches) are scheduled by
:class:`~exitsearch.export.staged.Staged`; this module says how a stage computes.

Decisions use the same functions as the cached evaluation (:func:`exit_statistics` and the
criterion objects, compared with the same bounds), so a sample leaves at the exit
:meth:`Evaluator.exit_index <exitsearch.search.evaluator.Evaluator.exit_index>` predicts.

**Patch pausing** (PAUMER; a configuration with ``pause``): after block ``l`` of the
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

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import ExitCriterion, create_criterion
from exitsearch.core.task import get_task
from exitsearch.data.preprocess import Preprocess
from exitsearch.errors import ConfigError
from exitsearch.export.inputs import ModelInputs
from exitsearch.export.points import Anytime, ExitCosts, OperatingPoint
from exitsearch.export.staged import BOOKKEEPING, ExitOutput, Flight, Outputs, Staged, Tick
from exitsearch.pausing.pause import PausedTokens, PausingViT, assemble, lowest, token_entropy

__all__ = [
    "BOOKKEEPING",
    "ExitCosts",
    "ExitOutput",
    "MultiExitModel",
    "Tick",
    "needs_history",
]


def needs_history(criterion: ExitCriterion) -> bool:
    """Whether ``criterion`` reads earlier exits' predictions."""
    return criterion.reads_history


class MultiExitModel(Staged, Anytime, nn.Module):
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
        task: str | None = None,
    ) -> None:
        super().__init__()
        # what the exits predict (exitsearch.core.task): classes, or a count
        self.task = get_task(task)
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
        if self.criterion.needs_uncertainty and not self.task.native_uncertainty:
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
        # label i's name, from the run's data (set when loaded from a bundle that has them)
        self.classes: list[str] | None = None
        self.source: Path | None = None
        # The preprocessing raw images get (a bundle sets the one it was searched with)
        self.preprocess: Preprocess = backbone.preprocess()
        self.check_inputs = True  # refuse tensors of the wrong shape or value range
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
            # Counting goes through the search's cost model: only a model built from parts
            # without costs pays for it (a loaded bundle carries its costs)
            from exitsearch.export.costs import exit_costs

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
        """Run ``x`` (B, C, H, W), already normalised to the backbone's input, with
        per-sample exits. Runs under ``torch.inference_mode``.

        Raises:
            ConfigError: ``x`` has the wrong shape or channels, is uint8, or its values are not
                normalised (e.g. images scaled to [0, 1]); ``predict`` takes raw images.
        """
        if self.check_inputs:
            self.inputs.check(x)
        with torch.inference_mode():
            return self.run(x)

    @property
    def inputs(self) -> ModelInputs:
        cached = self.__dict__.get("_inputs")
        if cached is None or cached.preprocess != self.preprocess:
            cached = ModelInputs(self.preprocess)
            self.__dict__["_inputs"] = cached
        return cached

    def predict(self, inputs: Any, batch_size: int = 64, tick: Tick | None = None) -> ExitOutput:
        """Stream mode over many inputs, every stage run on ``batch_size`` samples.

        Args:
            inputs: raw images (PIL images, file paths, uint8 ``(N, C, H, W)`` tensors or
                arrays; the bundle's preprocessing is applied: resize, centre crop, mean/std),
                normalised ``(N, C, H, W)`` float tensors, or an iterable of either (e.g. a
                data loader's batches).
            batch_size: samples per stage run (and per input chunk).
            tick: profiling hook, as in :meth:`run`.

        Returns:
            One row per input, in input order.

        Raises:
            ConfigError: an input of the wrong kind, shape or value range.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        device = next(self.parameters()).device
        batches = (
            x.to(device)
            for x in (
                self.inputs.stream(inputs, batch_size)
                if self.check_inputs
                else self.inputs.batches(inputs, batch_size)
            )
        )
        return super().predict(batches, batch_size, tick)

    def _enter(self, x: torch.Tensor, first_row: int, tick: Tick | None) -> Flight:
        """The stem on a batch whose samples are output rows ``first_row, first_row + 1, ...``."""
        bb = self.backbone
        n, dev = x.shape[0], x.device
        rows = torch.arange(first_row, first_row + n, device=dev)
        index = (
            torch.arange(bb.num_patches, device=dev).expand(n, -1) if self._pause_counts else None
        )
        flight = Flight(rows, bb.embed(x), index)
        if tick:
            tick("stem")
        return flight

    def _stage(self, k: int, flight: Flight, out: Outputs, tick: Tick | None) -> Flight | None:
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
            conf, ent, pred, _ = self.task.statistics(logits)
            return self._decide(k, flight, out, logits, (conf, ent, pred), None, tick)
        head = self.heads[k]
        logits = head(hidden)
        conf, ent, pred, unc = self.task.statistics(logits)
        if unc is None and self.criterion.needs_uncertainty and head.uncertainty is not None:
            unc = head.uncertainty(logits.float())
        if tick:
            tick(f"head {self.config.exits[k].key}")
        return self._decide(k, flight, out, logits, (conf, ent, pred), unc, tick)

    def describe(self) -> str:
        point = "" if self.point_index is None else f", operating point {self.point_index}"
        shown = self.config.with_thresholds(self._thresholds)
        pause = ",".join(f"{k}:{v:g}" for k, v in self.config.pause.items())
        return f"{shown.describe()}{f', pause {pause}' if pause else ''}{point}"

    # ------------------------------------------------------------------ pausing
    def _pause(self, flight: Flight, layer: int, tick: Tick | None) -> None:
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

    def _advance(self, flight: Flight, start: int, stop: int, tick: Tick | None) -> None:
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


def _take(tokens: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """Rows ``index`` (B, k) of ``tokens`` (B, n, D) -> (B, k, D)."""
    return tokens.gather(1, index.unsqueeze(-1).expand(-1, -1, tokens.shape[-1]))
