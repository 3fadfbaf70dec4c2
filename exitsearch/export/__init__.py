"""Export: a chosen configuration as a runnable multi-exit model that really is faster.

* :class:`MultiExitModel` runs per-sample exits in PyTorch and switches operating points at
  run time (:meth:`~MultiExitModel.set_operating_point`).
* :func:`export_bundle` / :func:`load_bundle` (``exitsearch.load``) write and read a
  self-contained, checksummed bundle folder (picking a configuration from a run folder's
  Pareto front is :func:`exitsearch.pipeline.selection.bundle_from_run`).
* :func:`export_onnx` / :class:`OnnxMultiExitModel`: one ONNX graph per part, run by a numpy
  controller with onnxruntime.
* :func:`benchmark`: measured against predicted speed-up, with a per-part profile.
"""

from exitsearch.export.bench import BenchReport, BenchRow, benchmark
from exitsearch.export.bundle import (
    BUNDLE_SCHEMA,
    export_bundle,
    load,
    load_bundle,
    load_onnx_bundle,
    read_manifest,
)
from exitsearch.export.costs import exit_costs
from exitsearch.export.onnx import export_onnx
from exitsearch.export.onnx_runtime import (
    ONNX_ATOL,
    OnnxMultiExitModel,
    exit_statistics_np,
)
from exitsearch.export.points import ExitCosts, OperatingPoint, choose_point
from exitsearch.export.runtime import ExitOutput, MultiExitModel

__all__ = [
    "BUNDLE_SCHEMA",
    "ONNX_ATOL",
    "BenchReport",
    "BenchRow",
    "ExitCosts",
    "ExitOutput",
    "MultiExitModel",
    "OnnxMultiExitModel",
    "OperatingPoint",
    "benchmark",
    "choose_point",
    "exit_costs",
    "exit_statistics_np",
    "export_bundle",
    "export_onnx",
    "load",
    "load_bundle",
    "load_onnx_bundle",
    "read_manifest",
]
