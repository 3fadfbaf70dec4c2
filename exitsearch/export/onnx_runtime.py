"""The controller over the exported ONNX graphs: per-sample exits with onnxruntime (CPU).

It mirrors :meth:`MultiExitModel.run <exitsearch.export.runtime.MultiExitModel.run>` in numpy:
the stem, then for each exit its segment of blocks and its head, a decision by the same
criterion object, and the samples still in flight compacted before the next segment.
Confidence and entropy are computed in float32 the way
:func:`~exitsearch.core.criteria.exit_statistics` computes them.
"""

from __future__ import annotations

import contextlib
import math
import os
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.core.task import CLASSIFICATION, get_task
from exitsearch.errors import BundleError, ConfigError
from exitsearch.export.points import Anytime, ExitCosts, OperatingPoint
from exitsearch.export.runtime import needs_history
from exitsearch.export.staged import ExitOutput, Flight, Outputs, Staged, Tick

__all__ = ["ONNX_ATOL", "OnnxMultiExitModel", "exit_statistics_np", "session", "shared_pool"]

ONNX_ATOL = 1e-4
"""Logits of the ONNX graphs agree with PyTorch within this absolute tolerance (float32;
measured differences on tiny and 12-block ViTs are around 1e-6)."""


_SHARED_POOL: dict[str, int] = {}
"""``{"threads": n}`` once this process has made onnxruntime's global thread pool."""


def shared_pool(threads: int) -> bool:
    """Make onnxruntime's global intra-op pool of ``threads`` threads, which every session of a
    model then shares, once per process. False when it cannot serve ``threads``: a pool of
    another size was made first (onnxruntime makes it once), or this onnxruntime has none."""
    import onnxruntime as ort

    if "threads" not in _SHARED_POOL:
        if not hasattr(ort, "set_global_thread_pool_sizes"):
            return False
        try:
            ort.set_global_thread_pool_sizes(threads, 1)
        except Exception:  # made earlier in this process by someone else: size unknown
            return False
        _SHARED_POOL["threads"] = threads
    return _SHARED_POOL["threads"] == threads


def session(path: Path, threads: int | None, shared: bool = False) -> Any:
    """An onnxruntime CPU session for the graph at ``path`` (quiet: errors only); with
    ``shared``, on the global pool that :func:`shared_pool` made."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.log_severity_level = 3  # errors only: the library never prints
    # A model is a chain of sessions (stem, segments, heads), each with its own thread pool.
    # Idle pool threads spin by default and then starve the next session's threads of cores:
    # the 25 graphs of a 12-block model with 11 exits ran 4x slower than one graph.
    opts.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if shared:
        opts.use_per_session_threads = False
    elif threads:
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(
            str(path), sess_options=opts, providers=["CPUExecutionProvider"]
        )
    except Exception as exc:  # onnxruntime raises its own Fail/InvalidGraph/NoSuchFile
        raise BundleError(f"{path}: onnxruntime cannot load this graph ({exc})") from None


def exit_statistics_np(logits: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(confidence, normalised entropy, prediction)`` in float32: the numpy twin of
    :func:`~exitsearch.core.criteria.exit_statistics` (log-softmax, then its exponential)."""
    z = logits.astype(np.float32, copy=False)
    shifted = z - z.max(axis=-1, keepdims=True)
    logp = shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))
    p = np.exp(logp)
    pred = p.argmax(axis=-1)
    conf = np.take_along_axis(p, pred[:, None], axis=-1)[:, 0]
    ent = -(p * logp).sum(axis=-1) / np.float32(math.log(z.shape[-1]))
    return conf, np.clip(ent, 0.0, 1.0).astype(np.float32), pred.astype(np.int64)


class OnnxMultiExitModel(Staged, Anytime):
    """Per-sample early exits with onnxruntime (CPU): the controller over the exported graphs.

    Args:
        onnx_dir: folder holding the graphs.
        graphs: the description :func:`export_onnx` returned.
        config: the exit configuration.
        operating_points: threshold settings to switch between (see :class:`MultiExitModel`).
        costs: FLOPs per exit, if known.
        threads: onnxruntime intra-op threads (its default when None).
        shared_threads: with ``threads`` above 1, run every graph on one shared pool of
            ``threads`` threads (onnxruntime's global pool, :func:`shared_pool`) instead of a
            pool per graph. onnxruntime makes that pool once per process and then refuses
            sessions with a pool of their own, so once a model in this process shared it, every
            later model shares it too, at its size. :attr:`thread_pool` says which.
    """

    def __init__(
        self,
        onnx_dir: str | os.PathLike[str],
        graphs: Mapping[str, Any],
        config: ExitConfig,
        operating_points: Sequence[OperatingPoint] = (),
        costs: ExitCosts | None = None,
        threads: int | None = None,
        shared_threads: bool = False,
        task: str | None = None,
    ) -> None:
        root = Path(onnx_dir)
        self.task = get_task(task)
        self.classes: list[str] | None = None  # label i's name (set by load_onnx_bundle)
        self.config = config
        self.criterion = create_criterion(config.criterion)
        self._history = needs_history(self.criterion)
        self.operating_points = list(operating_points)
        self._costs = costs
        self.point_index = None
        if len(graphs["heads"]) != len(config.exits):
            raise BundleError(
                f"{root}: {len(graphs['heads'])} head graphs for {len(config.exits)} exits"
            )
        if shared_threads and threads and threads > 1:
            shared_pool(threads)
        shared = "threads" in _SHARED_POOL
        self.thread_pool = f"shared ({_SHARED_POOL['threads']} threads)" if shared else "per graph"

        def open_graph(name: str) -> Any:
            return session(root / name, threads, shared)

        self.stem = open_graph(graphs["stem"])
        self.segments = [open_graph(s["file"]) for s in graphs["segments"]]
        self.segment_ranges = [(int(s["start"]), int(s["stop"])) for s in graphs["segments"]]
        self.heads = [open_graph(h["file"]) for h in graphs["heads"]]
        self.head_has_unc = [bool(h["uncertainty"]) for h in graphs["heads"]]
        rest = graphs.get("rest")
        self.rest = open_graph(rest["file"]) if rest else None
        self.rest_range = (int(rest["start"]), int(rest["stop"])) if rest else None
        self.final_head = open_graph(graphs["final_head"])
        self.graphs = dict(graphs)
        self.set_thresholds(config.thresholds)

    @property
    def num_exits(self) -> int:
        return len(self.config.exits)

    @property
    def num_outcomes(self) -> int:
        return self.num_exits if self.config.cut else self.num_exits + 1

    @property
    def costs(self) -> ExitCosts:
        if self._costs is None:
            raise ConfigError("the FLOPs per exit of this ONNX model are unknown")
        return self._costs

    @staticmethod
    def _run1(sess: Any, x: np.ndarray) -> list[np.ndarray]:
        return sess.run(None, {sess.get_inputs()[0].name: x})

    def backbone_forward(self, x: np.ndarray) -> np.ndarray:
        """The backbone alone through the same graphs: every block, then the final head."""
        t = self._run1(self.stem, _f32(x))[0]
        for seg in self.segments:
            t = self._run1(seg, t)[0]
        if self.rest is not None:
            t = self._run1(self.rest, t)[0]
        return self._run1(self.final_head, t)[0]

    def __call__(self, x: np.ndarray | torch.Tensor) -> ExitOutput:
        return self.run(x)

    def run(self, x: Any, tick: Tick | None = None) -> ExitOutput:
        with _controller_threads():
            return super().run(x, tick)

    def predict(self, inputs: Any, batch_size: int = 64, tick: Tick | None = None) -> ExitOutput:
        with _controller_threads():
            return super().predict(inputs, batch_size, tick)

    def _enter(self, x: np.ndarray | torch.Tensor, first_row: int, tick: Tick | None) -> Flight:
        if isinstance(x, torch.Tensor):
            x = x.detach().cpu().numpy()
        tokens = torch.from_numpy(self._run1(self.stem, _f32(x))[0])
        if tick:
            tick("stem")
        return Flight(torch.arange(first_row, first_row + x.shape[0]), tokens)

    def _stage(self, k: int, flight: Flight, out: Outputs, tick: Tick | None) -> Flight | None:
        if k == self.num_exits:
            if self.rest is not None:
                flight.tokens = self._tensor(self.rest, flight.tokens)
                if tick and self.rest_range:
                    tick(f"blocks {self.rest_range[0] + 1}-{self.rest_range[1]}")
            logits = self._tensor(self.final_head, flight.tokens)
            if tick:
                tick("final head")
            return self._decide(k, flight, out, logits, self._statistics(logits)[0], None, tick)
        start, stop = self.segment_ranges[k]
        flight.tokens = self._tensor(self.segments[k], flight.tokens)
        if tick:
            tick(f"blocks {start + 1}-{stop}")
        outs = self._run1(self.heads[k], flight.tokens.numpy())
        logits = torch.from_numpy(outs[0])
        if tick:
            tick(f"head {self.config.exits[k].key}")
        stats, unc = self._statistics(logits)
        if unc is None and self.criterion.needs_uncertainty and self.head_has_unc[k]:
            unc = torch.from_numpy(outs[1].astype(np.float32))
        return self._decide(k, flight, out, logits, stats, unc, tick)

    def _statistics(self, logits: torch.Tensor) -> tuple[Any, torch.Tensor | None]:
        """``((confidence, entropy, prediction), uncertainty or None)`` of an exit's outputs:
        classification in numpy (:func:`exit_statistics_np`), other tasks by their own rule."""
        if self.task.name == CLASSIFICATION:
            return _statistics(logits), None
        conf, ent, pred, unc = self.task.statistics(logits)
        return (conf, ent, pred), unc

    def _tensor(self, sess: Any, tokens: torch.Tensor) -> torch.Tensor:
        """The first output of ``sess`` on ``tokens``, as a tensor (no copies either way)."""
        return torch.from_numpy(self._run1(sess, tokens.contiguous().numpy())[0])


@contextlib.contextmanager
def _controller_threads() -> Iterator[None]:
    """PyTorch on one thread while the controller runs: its own tensor work (moving rows,
    joining batches) is small, and PyTorch's idle pool threads would spin on the cores that
    onnxruntime's pools need (stream mode at batch 64 on 2 threads ran 1.4x slower)."""
    threads = torch.get_num_threads()
    if threads == 1:
        yield
        return
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _statistics(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    conf, ent, pred = exit_statistics_np(logits.numpy())
    return torch.from_numpy(conf), torch.from_numpy(ent), torch.from_numpy(pred)


def _f32(x: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(x, dtype=np.float32)
