"""FLOP counting with fvcore, with attention counted and nothing dropped silently.

Convention (fvcore's): one multiply-accumulate is one FLOP, LayerNorm costs 5 per element,
elementwise additions, activations and softmax are not counted. fvcore has no handle for
``aten::scaled_dot_product_attention`` (timm's fused attention); :data:`EXTRA_HANDLES` adds one
that counts its two matrix products, QK^T and AV. Any op that is still not counted is reported
in :attr:`FlopCount.uncounted_ops`, never silently dropped.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from math import prod
from typing import Any

import torch
from torch import nn

from exitsearch.core.costs import UNIT

__all__ = ["EXTRA_HANDLES", "UNIT", "FlopCount", "count_flops"]


def _shape(value: Any) -> list[int]:
    return list(value.type().sizes())


def sdpa_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """``softmax(Q K^T) V`` for Q of shape (..., N, d), K (..., M, d), V (..., M, dv):
    ``N*M*d`` multiply-accumulates for Q K^T plus ``N*M*dv`` for the product with V."""
    q, k, v = (_shape(x) for x in inputs[:3])
    batch = prod(q[:-2])
    n, d = q[-2], q[-1]
    m, dv = k[-2], v[-1]
    return batch * n * m * (d + dv)


def avg_pool_flop_jit(inputs: list[Any], outputs: list[Any]) -> int:
    """One operation per input element, as fvcore counts ``adaptive_avg_pool2d``."""
    return prod(_shape(inputs[0]))


EXTRA_HANDLES: dict[str, Callable[[list[Any], list[Any]], int]] = {
    "aten::scaled_dot_product_attention": sdpa_flop_jit,
    "aten::avg_pool2d": avg_pool_flop_jit,
}


@dataclass(frozen=True)
class FlopCount:
    """Result of one count.

    Attributes:
        total: FLOPs of the whole forward.
        by_module: FLOPs per sub-module name ("" is the root).
        uncounted_ops: ops that no handle counts (op name -> occurrences).
    """

    total: int
    by_module: dict[str, int] = field(default_factory=dict)
    uncounted_ops: dict[str, int] = field(default_factory=dict)

    def module(self, name: str) -> int:
        return int(self.by_module.get(name, 0))


def count_flops(module: nn.Module, *inputs: torch.Tensor) -> FlopCount:
    """Count the FLOPs of ``module(*inputs)`` with fvcore plus :data:`EXTRA_HANDLES`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        was_training = module.training
        module.eval()
        try:
            analysis = FlopCountAnalysis(module, inputs if len(inputs) > 1 else inputs[0])
            analysis.set_op_handle(**EXTRA_HANDLES)
            analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
            analysis.tracer_warnings("none")
            with torch.no_grad():
                total = int(analysis.total())
                by_module = {k: int(v) for k, v in analysis.by_module().items()}
                uncounted = Counter(analysis.unsupported_ops())
        finally:
            module.train(was_training)
    return FlopCount(
        total=total, by_module=by_module, uncounted_ops=dict(sorted(uncounted.items()))
    )
