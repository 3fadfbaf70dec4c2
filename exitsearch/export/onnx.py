"""ONNX export: one static graph per part, and a small controller that runs them.

A single graph cannot hold per-sample exits well: ``jit.trace`` bakes in one branch,
``torch.export`` with ``torch.cond`` failed with a dynamic batch, and ``If`` nodes decide per
batch (FACTS.md, "Exporting dynamic exits"). So each part is its own graph with a dynamic batch
axis: the stem, every segment of blocks between exits, every exit head (with its uncertainty
predictor as a second output), the blocks after the last exit and the final head. The
controller (:class:`OnnxMultiExitModel`) runs them with onnxruntime and forwards only the
samples still in flight, deciding with the same criterion objects as the PyTorch runtime;
confidence and entropy are computed in float32 with numpy the way
:func:`~exitsearch.core.criteria.exit_statistics` computes them.

Both torch exporters handle timm's blocks (with ``scaled_dot_product_attention``) and every
registered head here (torch 2.14, onnxruntime 1.31): ``dynamo`` (torch.export based, the
default; about 2 s per graph) and ``legacy`` (TorchScript based, deprecated by torch, about
0.1 s per graph), with one exception: ``legacy`` cannot export adaptive average pooling to a
size that does not divide the input's (a ``tokenmap`` head whose ``grid`` does not divide its
map), and says so; with ``fallback`` (the latency probes', which want its speed) such a graph
is exported by ``dynamo`` instead.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from exitsearch.errors import BundleError, ConfigError
from exitsearch.export.onnx_runtime import ONNX_ATOL, OnnxMultiExitModel, session

__all__ = ["EXPORTERS", "ONNX_ATOL", "OnnxMultiExitModel", "export_onnx"]

EXPORTERS = ("dynamo", "legacy")
_INLINE_LIMIT = 1 << 30  # bytes of weights kept inside one .onnx file


class _Stem(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.m.backbone.embed(x)


class _Segment(nn.Module):
    def __init__(self, model: nn.Module, start: int, stop: int) -> None:
        super().__init__()
        self.m, self.start, self.stop = model, start, stop

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.m.backbone.run_blocks(tokens, self.start, self.stop)


class _Head(nn.Module):
    def __init__(self, head: nn.Module) -> None:
        super().__init__()
        self.head = head

    def forward(self, tokens: torch.Tensor) -> Any:
        logits = self.head(tokens)
        unc = getattr(self.head, "uncertainty", None)
        return logits if unc is None else (logits, unc(logits.float()))


class _FinalHead(nn.Module):
    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.m = model

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        return self.m.backbone.final_head(tokens)


def export_onnx(
    model: Any,
    out_dir: str | os.PathLike[str],
    *,
    exporter: str = "dynamo",
    opset: int | None = None,
    check: bool = True,
    fallback: bool = False,
) -> dict[str, Any]:
    """Export every part of ``model`` (a :class:`MultiExitModel`) as an ONNX graph.

    Files: ``stem.onnx``, ``segment_<k>.onnx`` (blocks before exit k), ``head_<k>.onnx``,
    ``rest.onnx`` (blocks after the last exit; absent when there are none), ``final_head.onnx``.
    The blocks after a cut model's last exit and its final head are exported too: the ONNX
    backbone baseline of :mod:`exitsearch.export.bench` runs them.

    Args:
        model: the multi-exit model.
        out_dir: folder for the graphs (created).
        exporter: ``dynamo`` or ``legacy``.
        opset: ONNX opset (the exporter's default when None).
        check: run every graph once with onnxruntime and record its largest difference from
            PyTorch (``max_abs_error``).
        fallback: export with ``dynamo`` a graph that ``legacy`` cannot export (listed under
            ``"dynamo_graphs"``) instead of failing.

    Returns:
        The graph description that :class:`OnnxMultiExitModel` reads (stored in the bundle's
        ``exitsearch.json`` under ``"onnx"``).

    Raises:
        ConfigError: unknown exporter.
        BundleError: a graph the legacy exporter cannot export, without ``fallback``.
    """
    if exporter not in EXPORTERS:
        raise ConfigError(f"unknown ONNX exporter {exporter!r}; known: {', '.join(EXPORTERS)}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    bb = model.backbone
    dev = next(model.parameters()).device
    locs = list(model.config.locations)
    starts = [0, *locs]

    def tokens(location: int) -> torch.Tensor:
        return bb.state_example(location, batch=2, device=dev)

    image = torch.zeros(2, bb.in_chans, *bb.img_size, device=dev)
    t0 = time.perf_counter()
    graphs: dict[str, Any] = {"segments": [], "heads": []}
    errors: list[float] = []
    by_dynamo: list[str] = []  # graphs the legacy exporter could not export (fallback)

    def emit(name: str, module: nn.Module, example: torch.Tensor, inp: str, outs: list[str]) -> str:
        path = out / f"{name}.onnx"
        try:
            _export_one(module.eval(), example, path, inp, outs, exporter, opset)
        except Exception as exc:
            if exporter != "legacy":
                raise
            if not fallback:
                # e.g. a tokenmap head pooled to a size that does not divide its map
                detail = " ".join(str(exc).split("Please")[0].split())[:160]
                raise BundleError(
                    f"the legacy ONNX exporter cannot export {name}: {detail}; export with the "
                    "default dynamo exporter"
                ) from None
            path.unlink(missing_ok=True)
            _export_one(module, example, path, inp, outs, "dynamo", opset)
            by_dynamo.append(name)
        if check:
            errors.append(_check_graph(module, example, path))
        return path.name

    graphs["stem"] = emit("stem", _Stem(model), image, "x", ["tokens"])
    for k, (a, b) in enumerate(zip(starts[:-1], locs, strict=True)):
        f = emit(f"segment_{k}", _Segment(model, a, b), tokens(a), "tokens", ["tokens_out"])
        graphs["segments"].append({"file": f, "start": a, "stop": b})
    for k, head in enumerate(model.heads):
        has_unc = getattr(head, "uncertainty", None) is not None
        f = emit(
            f"head_{k}",
            _Head(head),
            tokens(locs[k]),
            "tokens",
            ["logits", "uncertainty"] if has_unc else ["logits"],
        )
        graphs["heads"].append(
            {"file": f, "key": model.config.exits[k].key, "uncertainty": has_unc}
        )
    last = starts[-1]
    graphs["rest"] = (
        {
            "file": emit(
                "rest", _Segment(model, last, bb.depth), tokens(last), "tokens", ["tokens_out"]
            ),
            "start": last,
            "stop": bb.depth,
        }
        if last < bb.depth
        else None
    )
    graphs["final_head"] = emit(
        "final_head", _FinalHead(model), tokens(bb.depth), "tokens", ["logits"]
    )
    graphs["exporter"] = exporter
    if by_dynamo:
        graphs["dynamo_graphs"] = by_dynamo
    graphs["opset"] = opset
    graphs["seconds"] = round(time.perf_counter() - t0, 3)
    graphs["atol"] = ONNX_ATOL
    if check:
        graphs["max_abs_error"] = max(errors)
    return graphs


def _export_one(
    module: nn.Module,
    example: torch.Tensor,
    path: Path,
    inp: str,
    outs: list[str],
    exporter: str,
    opset: int | None,
) -> None:
    kwargs: dict[str, Any] = {"input_names": [inp], "output_names": outs}
    if opset is not None:
        kwargs["opset_version"] = opset
    with warnings.catch_warnings(), torch.no_grad():
        # The legacy exporter announces its deprecation on every call; the caller chose it.
        warnings.simplefilter("ignore", category=DeprecationWarning)
        warnings.simplefilter("ignore", category=FutureWarning)
        warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
        warnings.filterwarnings("ignore", message=".*will be removed.*")
        # Shape checks inside heads (token count against the grid) trace to constants, which
        # is right: only the batch axis is dynamic.
        warnings.simplefilter("ignore", category=torch.jit.TracerWarning)
        if exporter == "dynamo":
            batch = torch.export.Dim("batch", min=1)
            # One self-contained file per graph unless protobuf's 2 GB limit forces the weights
            # into a side file (``<graph>.onnx.data``; the bundle checksums it like the rest).
            size = sum(p.numel() * p.element_size() for p in module.parameters())
            torch.onnx.export(
                module,
                (example,),
                str(path),
                dynamo=True,
                verbose=False,
                dynamic_shapes=({0: batch},),
                external_data=size > _INLINE_LIMIT,
                **kwargs,
            )
        else:
            axes = {name: {0: "batch"} for name in (inp, *outs)}
            with _failed_graph_unprinted():
                torch.onnx.export(
                    module, (example,), str(path), dynamo=False, dynamic_axes=axes, **kwargs
                )


_IR_DUMP = b"Torch IR graph at exception"


@contextlib.contextmanager
def _failed_graph_unprinted() -> Iterator[None]:
    """Keep the legacy exporter's dump of a graph it failed on off the output: torch writes it
    to the process's standard output from C++ (past ``sys.stdout``), dozens of lines of IR
    before the error. Whatever else reaches standard output meanwhile is passed on after."""
    fd = 1  # C++'s std::cout, whatever sys.stdout is
    sys.stdout.flush()
    saved = os.dup(fd)
    with tempfile.TemporaryFile() as held:
        os.dup2(held.fileno(), fd)
        try:
            yield
        finally:
            sys.stdout.flush()
            os.dup2(saved, fd)
            os.close(saved)
            held.seek(0)
            text = held.read()
            cut = text.find(_IR_DUMP)
            if cut >= 0:
                text = text[:cut]
            if text:
                os.write(fd, text)


def _check_graph(module: nn.Module, example: torch.Tensor, path: Path) -> float:
    """Largest absolute difference between the graph and the module on a random batch of 3."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn((3, *example.shape[1:]), generator=gen).to(example.device)
    with torch.inference_mode():
        ref = module(x)
    refs = ref if isinstance(ref, tuple) else (ref,)
    sess = session(path, None)
    got = sess.run(None, {sess.get_inputs()[0].name: x.cpu().numpy()})
    return max(float(np.abs(r.cpu().numpy() - g).max()) for r, g in zip(refs, got, strict=True))
