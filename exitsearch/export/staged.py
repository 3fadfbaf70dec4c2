"""Running a multi-exit model as a chain of stages: one batch at a time, or as a stream.

Stage ``k`` runs the blocks of segment ``k`` and then exit ``k`` (the last stage ends in the
backbone's own exit); the samples whose criterion fires leave with their outputs, the others go
on to stage ``k + 1``. The PyTorch runtime and the onnxruntime controller differ only in how a
stage computes (:meth:`Staged._enter`, :meth:`Staged._stage`); how stages are scheduled and how
exits are decided lives here, once.

*Batch mode* (:meth:`Staged.run`) takes one batch through every stage. The batch thins out exit
by exit, so the later blocks run on a handful of samples, where each operation's fixed cost
outweighs its arithmetic. *Stream mode* (:meth:`Staged.predict`) takes many inputs: the samples
that go on past exit ``k`` wait in a queue in front of stage ``k + 1``, and whenever a queue
holds ``batch_size`` samples that stage runs on exactly that many (the deepest full queue first,
which keeps fewer than about ``batch_size`` samples waiting per stage); otherwise the next
``batch_size`` inputs enter. When the inputs run out the queues drain from the first stage to
the last. Every sample still decides for itself, at the same exit; only the company it travels
in changes.
"""

from __future__ import annotations

import abc
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from exitsearch.errors import ConfigError
from exitsearch.pausing.pause import PausedTokens

__all__ = ["BOOKKEEPING", "ExitOutput", "Flight", "OpenStream", "Outputs", "Staged", "Tick"]

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


@dataclass
class Flight:
    """Samples in flight between two stages: the output row of each, its active tokens
    (prefix first), and, when tokens pause, the original patch index of each active patch
    token and the tokens paused so far; with a criterion that reads earlier exits, their
    predictions (samples x exits passed, on the CPU)."""

    rows: torch.Tensor
    tokens: torch.Tensor
    index: torch.Tensor | None = None
    paused: list[PausedTokens] = field(default_factory=list)
    history: torch.Tensor | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def take(self, sel: torch.Tensor) -> Flight:
        """The samples at positions ``sel`` (a CPU index tensor), in that order."""
        dev = sel.to(self.tokens.device)
        return Flight(
            self.rows.index_select(0, dev),
            self.tokens.index_select(0, dev),
            None if self.index is None else self.index.index_select(0, dev),
            [
                PausedTokens(t.layer, t.index.index_select(0, dev), t.tokens.index_select(0, dev))
                for t in self.paused
            ],
            None if self.history is None else self.history.index_select(0, sel),
        )

    def split(self, n: int) -> tuple[Flight, Flight]:
        """The first ``n`` samples and the rest (views)."""
        return self._slice(slice(0, n)), self._slice(slice(n, None))

    def _slice(self, s: slice) -> Flight:
        return Flight(
            self.rows[s],
            self.tokens[s],
            None if self.index is None else self.index[s],
            [PausedTokens(t.layer, t.index[s], t.tokens[s]) for t in self.paused],
            None if self.history is None else self.history[s],
        )

    @staticmethod
    def cat(flights: Sequence[Flight]) -> Flight:
        """The samples of ``flights`` one after the other (all in front of the same stage)."""
        if len(flights) == 1:
            return flights[0]

        def joined(get: Callable[[Flight], Any]) -> Any:
            parts = [get(f) for f in flights]
            return None if parts[0] is None else torch.cat(parts)

        return Flight(
            joined(lambda f: f.rows),
            joined(lambda f: f.tokens),
            joined(lambda f: f.index),
            [
                PausedTokens(
                    t.layer,
                    joined(lambda f, i=i: f.paused[i].index),
                    joined(lambda f, i=i: f.paused[i].tokens),
                )
                for i, t in enumerate(flights[0].paused)
            ],
            joined(lambda f: f.history),
        )


class Outputs:
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
            _, logits, pred, conf, k = self.parts[0]
            exit_index = torch.full((n,), k, dtype=torch.int64, device=self.device)
            return ExitOutput(logits, exit_index, pred.to(torch.int64), conf, self.num_outcomes)
        first = self.parts[0][1]
        logits = first.new_empty(n, first.shape[1])
        exit_index = torch.empty(n, dtype=torch.int64, device=self.device)
        prediction = torch.empty(n, dtype=torch.int64, device=self.device)
        confidence = torch.empty(n, dtype=torch.float32, device=self.device)
        for rows, lg, pred, conf, k in self.parts:
            logits.index_copy_(0, rows, lg.to(logits.dtype))
            exit_index.index_fill_(0, rows, k)
            prediction.index_copy_(0, rows, pred.to(torch.int64))
            confidence.index_copy_(0, rows, conf)
        return ExitOutput(logits, exit_index, prediction, confidence, self.num_outcomes)


class Staged(abc.ABC):
    """A multi-exit model run stage by stage (see the module docstring).

    The host class provides ``config``, ``criterion``, ``num_exits``, ``num_outcomes``, the
    bounds of its thresholds (``_bounds``, from :class:`~exitsearch.export.points.Anytime`) and
    ``_history`` (whether the criterion reads earlier exits), and implements :meth:`_enter` and
    :meth:`_stage`.
    """

    config: Any
    criterion: Any
    _bounds: list[float]
    _history: bool

    @property
    @abc.abstractmethod
    def num_exits(self) -> int: ...

    @property
    @abc.abstractmethod
    def num_outcomes(self) -> int: ...

    @abc.abstractmethod
    def _enter(self, x: Any, first_row: int, tick: Tick | None) -> Flight:
        """The stem on a batch whose samples are output rows ``first_row, first_row + 1, ...``."""

    @abc.abstractmethod
    def _stage(self, k: int, flight: Flight, out: Outputs, tick: Tick | None) -> Flight | None:
        """Stage ``k`` on ``flight``: emits the samples that leave at exit ``k`` into ``out``
        and returns the others (None when none go on)."""

    # ----------------------------------------------------------------------- modes
    def run(self, x: Any, tick: Tick | None = None) -> ExitOutput:
        """Batch mode: one batch through every stage, thinning out at each exit;
        ``tick(part)`` is called after each part when profiling."""
        flight: Flight | None = self._enter(x, 0, tick)
        assert flight is not None
        n = len(flight)
        out = Outputs(flight.tokens.device, self.num_outcomes)
        for k in range(self.num_outcomes):
            flight = self._stage(k, flight, out, tick)
            if flight is None:
                break
        return out.result(n)

    def predict(self, inputs: Any, batch_size: int = 64, tick: Tick | None = None) -> ExitOutput:
        """Stream mode: many inputs, every stage run on ``batch_size`` samples.

        Args:
            inputs: (N, C, H, W) inputs already transformed to the backbone's input (a tensor
                or array), or an iterable of such batches, e.g. a data loader's images; a batch
                larger than ``batch_size`` is split.
            batch_size: samples per stage run (and per input chunk).
            tick: profiling hook, as in :meth:`run`.

        Returns:
            One row per input, in input order; each sample leaves at the exit :meth:`run`
            gives it.

        Raises:
            ConfigError: ``batch_size < 1``, no inputs, or an input that is not a 4-D tensor
                or array.
        """
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        with torch.inference_mode():
            return self._stream(inputs, batch_size, tick)

    def _stream(self, inputs: Any, b: int, tick: Tick | None) -> ExitOutput:
        stages = self.num_outcomes
        queues: list[list[Flight]] = [[] for _ in range(stages)]
        waiting = [0] * stages
        out: Outputs | None = None
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
                flight = self._enter(x, seen, tick)
                seen += len(flight)
                if out is None:
                    out = Outputs(flight.tokens.device, self.num_outcomes)
                _queue(queues, waiting, 0, self._stage(0, flight, out, tick))
                continue
            else:
                pending = [k for k in range(1, stages) if waiting[k]]
                if not pending:
                    break
                k = pending[0]
            assert out is not None
            flight = Flight.cat(queues[k])
            if len(flight) > b:
                flight, rest = flight.split(b)
                queues[k] = [rest]
            else:
                queues[k] = []
            waiting[k] -= len(flight)
            _queue(queues, waiting, k, self._stage(k, flight, out, tick))
        if out is None:
            raise ConfigError("predict() got no inputs")
        return out.result(seen)

    # --------------------------------------------------------------------- exits
    def _decide(
        self,
        k: int,
        flight: Flight,
        out: Outputs,
        logits: torch.Tensor,
        stats: tuple[torch.Tensor, torch.Tensor, torch.Tensor],
        unc: torch.Tensor | None,
        tick: Tick | None,
    ) -> Flight | None:
        """Exit ``k``'s decision from its logits and their ``(confidence, entropy,
        prediction)``: emit the samples that leave, return the others (None when none go on).
        The final exit and the last exit of a cut model take everyone."""
        conf, ent, pred = stats
        if k == self.num_exits or (self.config.cut and k == self.num_exits - 1):
            out.emit(flight.rows, logits, pred, conf, k)
            if tick:
                tick(BOOKKEEPING)
            return None
        pred_cpu = pred.cpu()
        ready = self.criterion.runtime_readiness(
            conf.cpu(),
            ent.cpu(),
            pred_cpu,
            None if unc is None else unc.float().cpu(),
            flight.history,
        )
        # Compared exactly as Evaluator.exit_index does: float32 readiness >= float bound.
        fire = ready.numpy() >= self._bounds[k]
        survivors: Flight | None = flight
        if fire.all():
            out.emit(flight.rows, logits, pred, conf, k)
            survivors = None
        else:
            if self._history:
                col = pred_cpu.to(torch.int64)[:, None]
                flight.history = (
                    col if flight.history is None else torch.cat([flight.history, col], dim=1)
                )
            if fire.any():
                leave = torch.from_numpy(np.flatnonzero(fire)).to(logits.device)
                out.emit(
                    flight.rows.index_select(0, leave.to(flight.rows.device)),
                    logits.index_select(0, leave),
                    pred.index_select(0, leave),
                    conf.index_select(0, leave),
                    k,
                )
                survivors = flight.take(torch.from_numpy(np.flatnonzero(~fire)))
        if tick:
            tick(BOOKKEEPING)
        return survivors


Left = tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, int]
"""Samples that left at one exit: ``(ids, logits, prediction, confidence, exit)``."""


class OpenStream:
    """Stream mode for inputs that arrive over time, such as a server's dynamic batches.

    :meth:`push` enters a batch (the stem and stage 0) and then runs every stage whose queue
    holds ``batch_size`` samples, the deepest first, as :meth:`Staged.predict` does; the
    samples that go on stay in their queues for the next batches' company. Each push carries a
    time stamp (a counter of the caller's), and :meth:`expire` runs, first stage to last, every
    queue that holds a sample pushed before a given stamp, so the caller bounds how long a
    sample waits (a stage it runs passes its survivors on to the next, which then runs too).
    :meth:`flush` runs every partial queue. Each sample leaves at the exit :meth:`Staged.run`
    gives it; callers identify samples by the ids they pass. The caller holds
    :func:`torch.inference_mode`.
    """

    def __init__(self, model: Staged, batch_size: int) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}")
        self.model = model
        self.batch_size = batch_size
        stages = model.num_outcomes
        self._queues: list[list[Flight]] = [[] for _ in range(stages)]
        self._waiting = [0] * stages
        self._oldest: list[float] = [math.inf] * stages  # earliest stamp waiting at each stage

    @property
    def in_flight(self) -> int:
        """Samples waiting in front of a stage."""
        return sum(self._waiting)

    def push(self, x: torch.Tensor, first_id: int, stamp: float = 0.0) -> list[Left]:
        """Enter ``x`` (its samples get ids ``first_id, first_id + 1, ...``) and run every
        full stage; the samples (of this or earlier pushes) that left."""
        out = Outputs(x.device, self.model.num_outcomes)
        flight = self.model._enter(x, first_id, None)
        self._pass_on(0, self.model._stage(0, flight, out, None), stamp)
        while full := [
            k for k in range(1, len(self._queues)) if self._waiting[k] >= self.batch_size
        ]:
            self._run(full[-1], out)
        return out.parts

    def expire(self, before: float) -> list[Left]:
        """Run, first stage to last, every queue holding a sample pushed before ``before``."""
        out = Outputs(torch.device("cpu"), self.model.num_outcomes)
        for k in range(1, len(self._queues)):
            while self._waiting[k] and self._oldest[k] < before:
                self._run(k, out)
        return out.parts

    def flush(self) -> list[Left]:
        """Run every partial queue, first stage to last, until nothing is in flight."""
        return self.expire(math.inf)

    def clear(self) -> None:
        """Drop every sample in flight (after a failure)."""
        for k in range(len(self._queues)):
            self._queues[k], self._waiting[k], self._oldest[k] = [], 0, math.inf

    def _run(self, k: int, out: Outputs) -> None:
        flight, stamp = Flight.cat(self._queues[k]), self._oldest[k]
        if len(flight) > self.batch_size:
            flight, rest = flight.split(self.batch_size)
            self._queues[k] = [rest]  # keeps the earliest stamp: runs no later than it should
        else:
            self._queues[k], self._oldest[k] = [], math.inf
        self._waiting[k] -= len(flight)
        self._pass_on(k, self.model._stage(k, flight, out, None), stamp)

    def _pass_on(self, k: int, survivors: Flight | None, stamp: float) -> None:
        if survivors is not None:
            _queue(self._queues, self._waiting, k, survivors)
            self._oldest[k + 1] = min(self._oldest[k + 1], stamp)


def _queue(
    queues: list[list[Flight]], waiting: list[int], k: int, survivors: Flight | None
) -> None:
    """Put the samples that went on past exit ``k`` in front of stage ``k + 1``."""
    if survivors is not None:
        queues[k + 1].append(survivors)
        waiting[k + 1] += len(survivors)


def _chunks(inputs: Any, b: int) -> Iterator[torch.Tensor]:
    """``inputs`` (a tensor, an array, or an iterable of them) in chunks of at most ``b``."""
    batches: Iterable[Any] = [inputs] if isinstance(inputs, torch.Tensor | np.ndarray) else inputs
    for x in batches:
        if isinstance(x, np.ndarray):
            x = torch.from_numpy(x)
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else ""
            raise ConfigError(
                "predict() takes (N, C, H, W) image tensors or arrays, or an iterable of them, "
                f"got {type(x).__name__}{shape}"
            )
        for i in range(0, x.shape[0], b):
            yield x[i : i + b]
