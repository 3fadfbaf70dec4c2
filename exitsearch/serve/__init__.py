"""Serving an exported bundle over HTTP on Ray Serve (``exitsearch serve``).

* :func:`start_server` / :class:`ServeOptions` / :class:`Server`: the Ray Serve application
  (:mod:`exitsearch.serve.app`).
* ``exitsearch.serve.builder:app``: the same application for Ray Serve's own deployments
  (``serve run``, ``serve deploy``, a KubeRay RayService; :mod:`exitsearch.serve.builder`).
* :class:`ServingModel`: the model side of a replica, usable without Ray.
* :func:`parse_request` (:func:`open_request`, then :func:`decode_images`) / :class:`Limits`:
  what a request may hold.
* :class:`LatencyTarget`: the operating point controller behind ``--slo-ms``.
* :class:`Metrics`: Prometheus text metrics.
"""

from typing import TYPE_CHECKING

from exitsearch._lazy import lazy_exports

if TYPE_CHECKING:
    from exitsearch.serve.app import ServeOptions, Server, start_server
    from exitsearch.serve.engine import Answer, ServingModel
    from exitsearch.serve.metrics import Metrics
    from exitsearch.serve.requests import (
        Limits,
        PredictRequest,
        RequestError,
        decode_images,
        open_request,
        parse_request,
    )
    from exitsearch.serve.target import LatencyTarget, TargetSettings, ladder

__all__ = [
    "Answer",
    "LatencyTarget",
    "Limits",
    "Metrics",
    "PredictRequest",
    "RequestError",
    "ServeOptions",
    "Server",
    "ServingModel",
    "TargetSettings",
    "decode_images",
    "ladder",
    "open_request",
    "parse_request",
    "start_server",
]

__getattr__, __dir__ = lazy_exports(
    globals(),
    {
        "ServeOptions": "exitsearch.serve.app",
        "Server": "exitsearch.serve.app",
        "start_server": "exitsearch.serve.app",
        "Answer": "exitsearch.serve.engine",
        "ServingModel": "exitsearch.serve.engine",
        "Metrics": "exitsearch.serve.metrics",
        "Limits": "exitsearch.serve.requests",
        "PredictRequest": "exitsearch.serve.requests",
        "RequestError": "exitsearch.serve.requests",
        "parse_request": "exitsearch.serve.requests",
        "open_request": "exitsearch.serve.requests",
        "decode_images": "exitsearch.serve.requests",
        "LatencyTarget": "exitsearch.serve.target",
        "TargetSettings": "exitsearch.serve.target",
        "ladder": "exitsearch.serve.target",
    },
)
