"""``exitsearch serve``: an exported bundle behind HTTP on Ray Serve.

One Ray Serve application: every replica loads the bundle (shipped through Ray's object store
when the cluster is not this machine), batches requests with Ray Serve's dynamic batching and
runs each batch through the multi-exit model, so every request leaves at its own exit. Routes:

* ``POST /predict``: one image (raw PNG/JPEG/WebP bytes) or JSON with base64 images
  (:mod:`exitsearch.serve.requests`); answers label, top-k probabilities, the exit taken, the
  operating point and the server-side latency (from the whole request received to the answer).
* ``GET /healthz``: ``{"status": "ok", ...}`` once the model is loaded.
* ``GET /metrics``: Prometheus text, summed over replicas (:mod:`exitsearch.serve.metrics`).
* ``GET /``: what is served: backbone, exits, operating points with predicted cost and accuracy.

With a latency target (``slo_ms``) each replica moves between the bundle's operating points as
its queue grows and shrinks (:mod:`exitsearch.serve.target`) and refuses (503) what it cannot
answer in time even at the cheapest point. Bad input gets a 4xx with a one-line message; an
unexpected failure a 500 with one line; no traceback reaches a client.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import gc
import io
import logging
import math
import os
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import ray
from ray import serve
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, PlainTextResponse, Response

from exitsearch.errors import BundleError, ConfigError, ExitSearchError
from exitsearch.serve.metrics import CONTENT_TYPE, Metrics, Reports, merge, render
from exitsearch.serve.requests import (
    Limits,
    RequestError,
    budget_error,
    decode_images,
    open_request,
)

__all__ = ["ServeOptions", "Server", "start_server"]

log = logging.getLogger("exitsearch.serve")
APP_NAME = "exitsearch"
INGRESS = ("auto", "direct", "proxy")
_PUSH_PERIOD_S = 0.5
# Requests with more pixels than this are decoded in a worker thread (about 10 ms of decoding
# and resizing on this machine's cores; a 28-px image takes 0.1 ms, a 12-megapixel photo 0.1 s)
_THREAD_PIXELS = 1_000_000
_GONE = 499  # the status counted for a request whose client left before its answer (nginx's)
# The methods each route answers (HEAD: the headers of a GET)
_ROUTES = {
    "/predict": ("POST",),
    "/healthz": ("GET", "HEAD"),
    "/metrics": ("GET", "HEAD"),
    "/": ("GET", "HEAD"),
}


def _count(n: int, noun: str) -> str:
    """``1 request``, ``2 requests``."""
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _finite(x: float) -> float:
    """``x``, or NaN where it is infinite (so that every comparison with it is False)."""
    return x if math.isfinite(x) else math.nan


@dataclass(frozen=True)
class ServeOptions:
    """How to serve a bundle.

    Attributes:
        host, port: where requests are taken: by the replica itself with direct ingress
            (``port + i`` for replica ``i``), else by Ray Serve's HTTP proxy (one per node).
        replicas: model replicas, spread over the cluster's nodes by Ray.
        ray_address: an existing Ray cluster (``HOST:PORT``); None starts a local Ray.
        device: ``cpu``, ``cuda`` (one GPU per replica) or ``auto`` (CUDA when the cluster
            has GPUs).
        threads: PyTorch CPU threads per replica.
        cpus_per_replica: logical CPUs Ray reserves per replica.
        operating_point, budget: the fixed operating point (index, or the most accurate within a
            budget such as ``40%``); default: the bundle's own.
        slo_ms: p99 latency target in ms (server side); None keeps the operating point fixed.
        max_batch_size, batch_wait_ms: dynamic batching: a batch runs when it holds
            ``max_batch_size`` images or its first image has waited ``batch_wait_ms``.
        patience: how many later batches an image that goes on past an exit waits for, so
            that the deeper blocks run on fuller batches (0: each batch is finished at once).
        max_queued: requests a replica answers at once; as many more wait for a place (in the
            replica with direct ingress, in the proxy otherwise: Ray Serve's
            ``max_queued_requests``), and beyond them requests get 503.
        limits: request size limits.
        top_k: classes returned per image unless the request asks otherwise.
        backbone_only: serve the bundle's backbone without exits (a baseline).
        route_prefix: URL prefix of the application.
        proxy_location: with Ray Serve's proxy, ``EveryNode`` (an HTTP proxy on every node
            with a replica; put a load balancer in front) or ``HeadOnly``; None: EveryNode.
            Given with direct ingress, it is an error (there is no proxy to place).
        ingress: how requests reach a replica. ``direct``: each replica listens on its own
            port (Ray Serve's direct ingress: ``port``, ``port + 1``, ...), with no proxy in
            between; only on a local Ray this server starts. ``proxy``: Ray Serve's HTTP proxy
            on ``port`` routes every request to a replica through a Ray actor call. ``auto``:
            direct for one replica on a local Ray without ``proxy_location``, else proxy.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    replicas: int = 1
    ray_address: str | None = None
    device: str = "cpu"
    threads: int = 1
    cpus_per_replica: float = 1.0
    operating_point: int | None = None
    budget: str | None = None
    slo_ms: float | None = None
    max_batch_size: int = 32
    batch_wait_ms: float = 2.0
    patience: int = 2
    max_queued: int = 256
    limits: Limits = field(default_factory=Limits)
    top_k: int = 5
    backbone_only: bool = False
    route_prefix: str = "/"
    proxy_location: str | None = None
    ingress: str = "auto"

    def __post_init__(self) -> None:
        checks = {  # name: (allowed, what is)
            "port": (0 <= self.port < 65536, "0 to 65535"),
            "replicas": (self.replicas >= 1, "at least 1"),
            "threads": (self.threads >= 1, "at least 1"),
            "cpus_per_replica": (_finite(self.cpus_per_replica) >= 0, "a finite 0 or more"),
            "max_batch_size": (self.max_batch_size >= 1, "at least 1"),
            "batch_wait_ms": (_finite(self.batch_wait_ms) >= 0, "a finite 0 or more"),
            "patience": (self.patience >= 0, "0 or more"),
            "max_queued": (self.max_queued >= 1, "at least 1"),
            "top_k": (self.top_k >= 1, "at least 1"),
        }
        for name, (ok, allowed) in checks.items():
            if not ok:
                raise ConfigError(
                    f"--{name.replace('_', '-')} {getattr(self, name)} is not allowed ({allowed})"
                )
        if self.slo_ms is not None and not _finite(self.slo_ms) > 0:
            raise ConfigError(f"--slo-ms must be a positive number of ms, got {self.slo_ms}")
        if self.operating_point is not None and self.budget is not None:
            raise ConfigError("give an operating point or a budget, not both")
        if self.operating_point is not None and self.operating_point < 0:
            raise ConfigError(f"--point {self.operating_point} is not allowed (0 or more)")
        error = None if self.budget is None else budget_error(self.budget)
        if error:  # read here, before the bundle loads; fitted to its points there
            raise ConfigError(f"--budget: {error}")
        if self.backbone_only and (self.slo_ms or self.operating_point is not None or self.budget):
            raise ConfigError("the backbone alone has no operating points to choose or switch")
        if self.proxy_location not in (None, "EveryNode", "HeadOnly"):
            raise ConfigError(
                f"--proxy-location is EveryNode or HeadOnly, got {self.proxy_location!r}"
            )
        if not re.fullmatch(r"cpu|auto|cuda(:\d+)?", self.device.strip().lower()):
            raise ConfigError(f"--device is cpu, cuda or auto, got {self.device!r}")
        if self.ingress not in INGRESS:
            raise ConfigError(f"--ingress is one of {', '.join(INGRESS)}, got {self.ingress!r}")
        if self.ingress == "direct" and self.proxy_location is not None:
            raise ConfigError(
                "--proxy-location places Ray Serve's HTTP proxy, and with --ingress direct "
                "there is none (each replica answers on its own port)"
            )
        if self.ingress == "direct" and self.ray_address not in (None, "local"):
            raise ConfigError(
                "--ingress direct needs a local Ray started by the server; on a cluster "
                "requests go through Ray Serve's HTTP proxy (--ingress proxy)"
            )
        if not self.route_prefix.startswith("/"):
            raise ConfigError(f"the route prefix must start with '/', got {self.route_prefix!r}")


class _Hub:
    """Where every replica leaves its latest metrics snapshot, and learns that the server is
    stopping (:meth:`put` answers whether to drain). On a cluster it also holds the bundle as
    one tar (:func:`~exitsearch.distributed.shipping.pack_folder`) for the nodes to unpack."""

    def __init__(self, bundle_tar: bytes | None = None) -> None:
        self.reports = Reports()
        self.draining = False
        self.bundle_tar = bundle_tar
        # As a Serve deployment its methods run in a pool of threads, several at once
        self._lock = threading.Lock()

    def bundle(self) -> bytes | None:
        return self.bundle_tar

    def put(self, replica: str, snapshot: dict[str, Any]) -> bool:
        with self._lock:
            self.reports.put(replica, snapshot)
            return self.draining

    def drain(self) -> None:
        self.draining = True

    def get(self) -> dict[str, dict[str, Any]]:
        """The replicas still reporting (a replica gone is not waited for)."""
        with self._lock:
            return self.reports.live()

    def report(self) -> dict[str, dict[str, Any]]:
        """What ``/metrics`` sums: every replica's counts, gone ones' too."""
        with self._lock:
            return self.reports.report()


# A server's own (`exitsearch serve`: named, it ends with the process and tells the replicas
# to drain), and an application's deployment where Ray Serve runs the application itself
# (:mod:`exitsearch.serve.builder`: Ray Serve drains and stops the replicas)
MetricsHub = ray.remote(num_cpus=0)(_Hub)
HubDeployment = serve.deployment(
    name="metrics",
    num_replicas=1,
    ray_actor_options={"num_cpus": 0},
    max_ongoing_requests=1000,
    logging_config={"log_level": "WARNING", "enable_access_log": False},  # 2 reports/s/replica
)(_Hub)


@dataclass
class _Item:
    pixels: Any
    point: int | None
    top_k: int
    taken: bool = False  # the batcher passed it on to the model


@serve.deployment(name="model")
class BundleServer:
    """One replica: the bundle, its dynamic batcher, latency target and metrics."""

    def __init__(
        self,
        source: str | Mapping[str, str],
        options: Mapping[str, Any],
        hub: tuple[str, str] | Any,
        describe: Mapping[str, Any],
    ) -> None:
        import torch

        from exitsearch.distributed.shipping import ShippedFolder, materialise
        from exitsearch.export import load_bundle
        from exitsearch.serve.engine import ServingModel
        from exitsearch.serve.target import (
            ConcurrencyLimit,
            LatencyTarget,
            LoopCost,
            TargetSettings,
            ladder,
            top_point,
        )

        opts = dict(options)
        self.limits = Limits(**opts.pop("limits"))
        self.opts = opts
        torch.set_num_threads(int(opts["threads"]))
        # the server's hub by name, or the application's metrics deployment by its handle
        # (an application that Ray Serve runs from its config: its arguments' names)
        by_cli = isinstance(hub, tuple | list)
        self.hub = ray.get_actor(hub[0], namespace=hub[1]) if by_cli else hub
        # the GPU that Ray gave this replica (a Serve config's ray_actor_options decide it)
        gpus = ray.get_gpu_ids()
        if opts["device"] == "auto":
            opts["device"] = "cuda" if gpus else "cpu"
        elif opts["device"] == "cuda" and not gpus:
            raise ConfigError(
                "device cuda, but Ray gave this replica no GPU: give the deployment 'model' "
                "ray_actor_options with num_gpus: 1"
            )
        if isinstance(source, Mapping):  # shipped: unpacked once per node, from the hub
            shipped = ShippedFolder(source["sha256"], self.hub.bundle.remote(), source["name"])
            path = materialise(shipped)
        else:
            path = Path(source)
            if not path.is_dir():  # an application of Ray Serve's config: the path is the node's
                raise BundleError(
                    f"{path}: no bundle folder on the node of this replica "
                    f"({ray.util.get_node_ip_address()}): every node that runs a replica needs "
                    "the bundle at this path (a shared or baked-in folder)"
                )
        model = load_bundle(path, device=opts["device"])
        expected = opts.pop("bundle_sha256", None)  # (a Serve config's: the path is the node's)
        if expected and model.manifest.get("manifest_sha256") != expected:
            raise BundleError(
                f"{path} on the node of this replica ({ray.util.get_node_ip_address()}) is "
                "another bundle than the one the application was built from: every node that "
                "runs a replica needs the same bundle at this path"
            )
        self.engine = ServingModel(
            model,
            backbone_only=bool(opts["backbone_only"]),
            batch_size=int(opts["max_batch_size"]),
            patience=int(opts["patience"]),
        )
        start = self.engine.resolve_point(opts["operating_point"], opts["budget"])
        if start is not None:
            self.engine.set_default(start)
        self.fixed = self.engine.point
        self.target: LatencyTarget | None = None
        self.limit: ConcurrencyLimit | None = None
        if opts["slo_ms"]:
            costs = [p.mean_flops for p in self.engine.points]
            accuracies = [p.val_accuracy for p in self.engine.points]
            # (no fixed point: the bundle's thresholds are none of its points)
            steps = ladder(costs, accuracies, top_point(costs, accuracies, self.fixed))
            settings = TargetSettings(float(opts["slo_ms"]))
            self.limit = ConcurrencyLimit(settings, maximum=int(opts["max_queued"]))
            self.target = LatencyTarget(
                settings,
                steps,
                self.engine.point_costs(),
                max_batch=int(opts["max_batch_size"]),
                batch_wait_s=float(opts["batch_wait_ms"]) / 1000,
            )
        self._warm_up(int(opts["max_batch_size"]))
        if self.target is not None:
            alone = self.target.alone_ms(1)  # from the warm-up's batches and decoding
            if alone > self.target.settings.slo_ms:
                raise ConfigError(
                    f"{'--slo-ms' if by_cli else 'slo_ms'} {self.target.settings.slo_ms:g} "
                    "is below what one image alone "
                    f"takes at the cheapest operating point here, about {alone:.1f} ms "
                    "(measured at start-up): every request would be refused"
                )
        # Everything loaded so far (torch, Ray, the bundle: about 500,000 objects) lives as
        # long as the replica; left to the collector, a full collection walks it all, 230-300 ms
        # on this machine's cores, a stall that shows in p99. Frozen, a full collection takes
        # 1-2 ms.
        gc.collect()
        gc.freeze()
        self.gc_frozen = gc.get_freeze_count()  # it walks the objects: once, not per gauge
        self._run_batch.set_max_batch_size(int(opts["max_batch_size"]))
        self.batch_wait_s = float(opts["batch_wait_ms"]) / 1000
        self._run_batch.set_batch_wait_timeout_s(self.batch_wait_s)
        self.metrics = Metrics()
        self._cpu = 0.0  # process CPU seconds counted so far
        for counter in ("exitsearch_shed_total", "exitsearch_point_switches_total"):
            self.metrics.inc(counter, 0)  # a counter is there from the start, at 0
        self.queued = 0  # images waiting for or in a model batch (the latency target's queue)
        self.arrived = 0  # images handed to the batcher...
        self.taken = 0  # ...and those it has passed on to the model
        self.pending: dict[int, tuple[asyncio.Future[Any], int | None]] = {}  # id: answer, point
        self.in_flight = 0  # prediction requests between arrival and answer...
        self.receiving = 0  # ...of which still sending their body (the client's time, not ours)
        # the event loop's CPU time outside the model, per request (for the latency target)
        self._loop = LoopCost()
        self.draining = False
        self.describe = dict(describe)
        try:
            self.replica = serve.get_replica_context().replica_tag
        except Exception:  # outside Serve (not expected)
            self.replica = str(os.getpid())
        self._pusher: asyncio.Task[None] | None = None
        self._gauges()
        self._count_cpu()
        with contextlib.suppress(RuntimeError):  # no event loop here: the first request starts it
            self._ensure_pusher()

    def _warm_up(self, max_batch: int) -> None:
        """Run the model before the first request (its first batches are slow), and give the
        latency target its first measurements at the ends of its ladder."""
        c, h, w = self.engine.model.preprocess.input_size
        rng = np.random.default_rng(0)
        points = [None] if self.target is None else [self.target.steps[-1], self.target.steps[0]]
        # a first pass untimed: the model's very first batches are the slow ones, and timed
        # they made the cheapest point (warmed first) look dearer than the top one
        for timed in (False, True):
            for point in points:
                for n in (1, max_batch, 1, max_batch):
                    pixels = rng.integers(0, 256, (n, c, h, w), dtype=np.uint8)
                    t0 = time.perf_counter()
                    self.engine.infer(pixels, point, [1] * n)
                    if timed and self.target is not None and point is not None:
                        self.target.observe(point, n, time.perf_counter() - t0)
        self.engine.use(None)
        if self.target is not None:
            self._warm_up_decoding(c, h, w)

    def _warm_up_decoding(self, c: int, h: int, w: int) -> None:
        """Give the latency target its first decoding times: JPEGs (smooth, as photographs
        are) of the model's input size and of a megapixel, decoded and shrunk as a request's
        images are. Two sizes, so that the line in pixels holds for large images before any
        was sent (from one size alone, a 28-px image's fixed cost read as a cost per pixel
        predicted 0.15 s for a megapixel); the requests' own times soon outweigh them."""
        from PIL import Image

        blobs = []
        for rows, cols in ((h, w), (1024, 1024)):
            ramp = np.add.outer(np.arange(rows), np.arange(cols)) * 255 // (rows + cols)
            image = Image.fromarray(ramp.astype(np.uint8), "L")
            if c == 3:
                flipped = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
                image = Image.merge("RGB", (image, flipped, image))
            blob = io.BytesIO()
            image.save(blob, "JPEG", quality=90)
            blobs.append((rows * cols, blob))
        for timed in (False, True, True):
            for pixels, blob in blobs:
                blob.seek(0)
                t0 = time.perf_counter()
                with Image.open(blob) as im:
                    im.load()
                    self.engine.image_pixels(im)
                if timed and self.target is not None:
                    seconds = time.perf_counter() - t0
                    self.target.observe_decode(1, pixels, seconds, usual=pixels == h * w)

    # ------------------------------------------------------------------ HTTP
    async def __call__(self, request: Request) -> Response:
        self._ensure_pusher()
        path = request.url.path.rstrip("/") or "/"
        # the application's route prefix: Ray Serve's (a Serve config's route_prefix), else ours
        prefix = (request.scope.get("root_path") or self.opts["route_prefix"]).rstrip("/")
        if prefix and (path == prefix or path.startswith(prefix + "/")):
            path = path[len(prefix) :] or "/"
        allowed = _ROUTES.get(path)
        try:
            if allowed is None:
                raise RequestError(
                    404,
                    f"no route {request.url.path}; try POST {prefix}/predict, GET {prefix}/healthz, "
                    f"GET {prefix}/metrics, GET {prefix or '/'}",
                )
            if request.method not in allowed:
                raise RequestError(405, f"{path} answers {' and '.join(allowed)} only")
            if path == "/predict":
                return await self._predict(request)
            if path == "/healthz":
                health = self._health()
                return JSONResponse(health, status_code=200 if health["status"] == "ok" else 503)
            if path == "/metrics":
                return PlainTextResponse(await self._metrics_text(), media_type=CONTENT_TYPE)
            return JSONResponse(self.describe)
        except RequestError as exc:
            headers = {"Allow": ", ".join(allowed)} if exc.status == 405 and allowed else None
            return _error(exc.status, str(exc), headers)
        except ClientDisconnect:  # left while sending its body: nobody to answer, no error
            return Response(status_code=_GONE)
        except Exception as exc:  # the server never dies and never leaks a traceback
            log.exception("request failed")
            return _error(500, f"internal error ({type(exc).__name__})")

    async def _predict(self, request: Request) -> Response:
        t0 = time.perf_counter()
        status = 200
        self.in_flight += 1
        self._loop.arrive()
        try:
            if self.draining:
                raise RequestError(503, "the server is shutting down")
            query = request.query_params
            twice = sorted(k for k in set(query.keys()) if len(query.getlist(k)) > 1)
            if twice:
                raise RequestError(400, f"{twice[0]!r} is given more than once in the query")
            encoding = request.headers.get("content-encoding", "identity").strip().lower()
            if encoding != "identity":
                raise RequestError(
                    415,
                    f"Content-Encoding {encoding} is not accepted: send the body as it is "
                    "(PNG, JPEG and WebP are compressed already)",
                )
            self.receiving += 1
            try:
                body = await _read_body(request, self.limits.max_bytes, self.limits.body_idle_s)
            finally:
                self.receiving -= 1
            # The latency served counts from here: the time a client takes to send its body is
            # its network's. Counted, a slow upload was refused (503, "retry later") whatever
            # the load, and every retry again.
            t0 = time.perf_counter()
            # Refused here, not before the body: the requests still sending theirs are not
            # ahead of this one, and a burst of bodies arriving after it would all have passed
            # the limit at once
            ahead = self.answering - 1
            if self.limit is not None and not self.limit.admit(ahead):
                self.metrics.inc("exitsearch_shed_total")
                raise RequestError(
                    503,
                    f"{_count(ahead, 'request')} in flight already: as many as "
                    "this replica answers within the latency target; retry later",
                )
            req = open_request(request.headers.get("content-type"), body, query, self.limits)
            point = self.engine.resolve_point(req.operating_point, req.budget)
            n = len(req.images)
            self._loop.parse(n)
            if self.target is not None and point is None:
                self._admit(n, req.pixels, time.perf_counter() - t0)
            top_k = req.top_k or int(self.opts["top_k"])
            # counted from here, so that requests admitted while this one decodes see its images
            self.queued += n
            try:
                # each image shrunk to the model's size before the next is decoded; large ones
                # in a worker thread (Pillow lets go of the interpreter lock while it decodes and
                # resizes), so that the requests and batches behind them go on meanwhile
                decode = functools.partial(decode_images, req, self.engine.image_pixels)
                t1 = time.perf_counter()
                if req.pixels > _THREAD_PIXELS:
                    pixels = np.stack(await asyncio.to_thread(decode))
                else:  # (in the loop's cost per request too: the requests ahead decode so)
                    pixels = np.stack(decode())
                if self.target is not None:
                    self.target.observe_decode(n, req.pixels, time.perf_counter() - t1)
                items = [_Item(pixels[i], point, top_k) for i in range(n)]
                self.arrived += n
                try:
                    if n == 1:
                        answers = [await (await self._run_batch(items[0]))]
                    else:
                        futures = await asyncio.gather(*(self._run_batch(i) for i in items))
                        answers = list(await asyncio.gather(*futures))
                finally:
                    # A request cancelled (its client gone) before the batcher took its images:
                    # Ray Serve leaves them out of the batch, and so must the count of images
                    # waiting for one. Counted, no batch ever found the queue empty again, so
                    # what was in flight never drained at an idle server: 2 of every 3 requests
                    # then waited for company that did not come, forever.
                    missed = sum(not item.taken for item in items)
                    if missed:
                        self.arrived -= missed
                        self._drain_when_idle()
            finally:
                self.queued -= n
        except RequestError as exc:
            status = exc.status
            raise
        except (asyncio.CancelledError, ClientDisconnect):
            status = _GONE  # the client left: neither an answer nor a server error
            raise
        except Exception:
            status = 500
            raise
        finally:
            self.in_flight -= 1
            elapsed = time.perf_counter() - t0
            self.metrics.inc("exitsearch_requests_total", code=status)
            if status == 200:
                self.metrics.observe("exitsearch_request_latency_seconds", elapsed)
                if self.limit is not None:
                    self.limit.record(1000 * elapsed)
        latency_ms = round(elapsed * 1000, 3)
        rows = [dict(a.to_dict(self.engine.classes), operating_point=p) for a, p in answers]
        if req.batch:
            return JSONResponse({"predictions": rows, "latency_ms": latency_ms})
        return JSONResponse(dict(rows[0], latency_ms=latency_ms))

    def _admit(self, images: int, pixels: int, elapsed_s: float) -> None:
        """Refuse a request of ``images`` images of ``pixels`` pixels in all, which has taken
        ``elapsed_s`` so far, that the latency target says would be late.

        Raises:
            RequestError: 413 when even alone, at the cheapest point, it would be late (sending
                it again cannot help); 503 when the requests ahead of it make it late.
        """
        assert self.target is not None
        t = self.target
        per_image, slo = pixels / images, t.settings.slo_ms
        share = t.settings.high
        most = t.most_images(images, per_image)
        if most == 0:  # not even one within the margin: the target itself is the bound
            share, most = 1.0, t.most_images(images, per_image, share=1.0)
        bound = (
            f"the {slo:g} ms latency target"
            if share == 1.0
            else f"the {share * slo:g} ms that a p99 target of {slo:g} ms leaves a request"
        )
        if 0 < most < images:
            self.metrics.inc("exitsearch_shed_total")
            alone = math.ceil(t.alone_ms(images, per_image))  # over the bound, never equal
            raise RequestError(
                413,
                f"{images} images in one request would take about {alone} ms even alone, at "
                f"the cheapest operating point, over {bound}; send at most {most} a request",
            )
        if most == 0 and t.most_images(1, share=1.0) > 0:
            # one image of the usual size is in time, one of these is not: their size is the
            # cause, and sending them again cannot help (no 503, whose client retries)
            self.metrics.inc("exitsearch_shed_total")
            alone = math.ceil(t.alone_ms(1, per_image))
            fits = t.most_pixels(share=1.0)
            advice = "smaller images" if not fits else f"images of at most {fits:,} pixels"
            raise RequestError(
                413,
                f"an image of {round(per_image):,} pixels would take about {alone} ms to decode "
                f"and answer even alone, at the cheapest operating point, over {bound}; send "
                f"{advice}",
            )
        own_ms = 1000.0 * elapsed_s + t.decode_ms(images, pixels)
        if not t.admit(self.queued + images - 1, self.answering, own_ms):
            self.metrics.inc("exitsearch_shed_total")
            raise RequestError(
                503, "over the latency target even at the cheapest operating point; retry later"
            )

    # ------------------------------------------------------------------ batching
    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def _run_batch(self, items: list[_Item]) -> list[asyncio.Future[Any]]:
        """A dynamic batch: each item's future resolves to ``(answer, operating point)``.

        The bundle's images enter the stream (:meth:`ServingModel.submit`); when no other image
        waits for a batch, what is still in flight drains after ``batch_wait_ms`` unless a new
        batch comes first. The backbone alone runs the batch at once."""
        loop = asyncio.get_running_loop()
        futures: list[asyncio.Future[Any]] = [loop.create_future() for _ in items]
        self.taken += len(items)
        for item in items:
            item.taken = True
        chosen = self._choose_point()
        groups: dict[int | None, list[int]] = {}
        for i, item in enumerate(items):
            groups.setdefault(item.point if item.point is not None else chosen, []).append(i)
        t0, cpu0 = time.perf_counter(), time.thread_time()
        try:
            for point, rows in groups.items():
                pixels = np.stack([items[i].pixels for i in rows])
                top_k = [items[i].top_k for i in rows]
                # In the replica's own event loop: a thread of its own measured 1.5x slower
                # (its hand-offs and the interpreter lock cost more than the batches take)
                if self.engine.backbone_only:
                    for i, a in zip(rows, self.engine.infer(pixels, point, top_k), strict=True):
                        self._answer(futures[i], a, None)
                    continue
                ids, done = self.engine.submit(pixels, point, top_k)
                used = self.engine.point
                for i, key in zip(rows, ids, strict=True):
                    self.pending[key] = (futures[i], used)
                self._resolve(done)
                if used is not None:
                    self.metrics.inc(
                        "exitsearch_operating_point_images_total", len(rows), point=used
                    )
        except Exception as exc:  # every image in flight fails with it, none waits forever
            self._fail(exc, futures)
        self._drain_when_idle()
        seconds = time.perf_counter() - t0
        self._loop.model += time.thread_time() - cpu0
        if self.target is not None and chosen is not None:
            self.target.observe(chosen, len(items), seconds)
        self.metrics.observe("exitsearch_batch_size", len(items))
        self._gauges()
        return futures

    def _drain_when_idle(self) -> None:
        """When nobody waits for a batch, what is in flight drains after ``batch_wait_ms``
        unless a batch comes first (whose submission finishes it)."""
        if self.arrived == self.taken and self.engine.in_flight:
            asyncio.get_running_loop().call_later(
                self.batch_wait_s, self._drain_if_idle, self.engine.submissions
            )

    def _drain_if_idle(self, submissions: int) -> None:
        if self.engine.submissions != submissions or not self.engine.in_flight:
            return
        cpu0 = time.thread_time()
        try:
            self._resolve(self.engine.drain())
        except Exception as exc:
            self._fail(exc, [])
        self._loop.model += time.thread_time() - cpu0
        self._gauges()

    def _fail(self, exc: Exception, futures: list[asyncio.Future[Any]]) -> None:
        log.exception("model batch failed")
        self.engine.abandon()
        for future in [f for f, _ in self.pending.values()] + futures:
            if not future.done():
                future.set_exception(exc)
        self.pending.clear()

    def _resolve(self, done: list[tuple[int, Any]]) -> None:
        for key, answer in done:
            future, point = self.pending.pop(key)
            self._answer(future, answer, point)

    def _answer(self, future: asyncio.Future[Any], answer: Any, point: int | None) -> None:
        self.metrics.inc("exitsearch_images_total")
        self.metrics.inc("exitsearch_exits_total", exit=answer.exit, block=answer.block)
        if not future.done():
            future.set_result((answer, point))

    def _health(self) -> dict[str, Any]:
        doc: dict[str, Any] = {
            "status": "draining" if self.draining else "ok",
            "operating_point": self._current_point(),
        }
        if self.target is not None:
            t = self.target
            doc["latency_target"] = {
                "slo_ms": t.settings.slo_ms,
                "queued": self.queued,
                # a one-image request arriving now, of the usual size
                "predicted_ms": {
                    str(p): round(
                        t.predicted_ms(p, self.queued, self.answering + 1, fresh=False)
                        + t.decode_ms(1),
                        3,
                    )
                    for p in (t.steps[0], t.steps[-1])
                },
                # the share of the replica's time the requests arriving would take there
                "load": {str(p): round(t.load(p), 3) for p in (t.steps[0], t.steps[-1])},
                "switches": t.switches,
                # what each request in the replica adds to a prediction besides the model
                "loop_ms_per_request": round(t.request_ms(1), 3),
                # ...and to decode one image of the usual size (its own request's only)
                "decode_ms_per_image": round(t.decode_ms(1), 3),
                # ...and what its loop spends each second with no request (not counted above)
                "loop_idle_ms_per_s": None
                if self._loop.idle_per_s is None
                else round(1000 * self._loop.idle_per_s, 3),
                "concurrency_limit": None if self.limit is None else int(self.limit.limit),
            }
        return doc

    def _current_point(self) -> int | None:
        """The operating point of requests that ask for none."""
        return self.target.point if self.target is not None else self.fixed

    def _choose_point(self, step_down: bool = False) -> int | None:
        if self.target is None:
            return self.fixed
        before = self.target.switches
        if step_down:
            self.target.step_down()
        point = self.target.update(self.queued, self.answering)
        if self.target.switches != before:
            self.metrics.inc("exitsearch_point_switches_total", self.target.switches - before)
        return point

    @property
    def answering(self) -> int:
        """Prediction requests in flight whose body has arrived: the requests ahead of a new
        one (a client still sending its body costs the replica nothing yet)."""
        return self.in_flight - self.receiving

    # ------------------------------------------------------------------ metrics
    def _gauges(self) -> None:
        point = self._current_point()
        self.metrics.set("exitsearch_operating_point", -1 if point is None else point)
        self.metrics.set("exitsearch_queue_depth", self.queued)
        self.metrics.set("exitsearch_in_flight", self.in_flight)
        self.metrics.set("exitsearch_draining", float(self.draining))
        self.metrics.set("exitsearch_gc_frozen_objects", self.gc_frozen)

    def _count_cpu(self) -> None:
        # The replica's process, every thread (requests, model, Ray Serve). Read when metrics
        # are pushed, not per batch: the kernel sums the CPU time of each of the process's
        # threads (dozens in a Ray worker), 0.6 % of the replica's time when read per batch.
        cpu = time.process_time()
        self.metrics.inc("exitsearch_replica_cpu_seconds_total", cpu - self._cpu)
        self._cpu = cpu

    def _ensure_pusher(self) -> None:
        if self._pusher is None or self._pusher.done():
            self._pusher = asyncio.get_running_loop().create_task(self._push_forever())

    async def _push_forever(self) -> None:
        while True:
            if self.target is not None:  # an idle server still moves back up
                self._loop.measure(self.target)
                # refusing at the concurrency limit what a cheaper point could answer
                refused = self.limit.take_refused() if self.limit is not None else 0
                self._choose_point(step_down=refused > 0)
            if self.limit is not None:
                self.limit.adjust()
            await self._push()
            await asyncio.sleep(_PUSH_PERIOD_S)

    async def _push(self) -> None:
        self._gauges()
        self._count_cpu()
        try:
            if await self.hub.put.remote(self.replica, self.metrics.snapshot()):
                self.draining = True
        except Exception:  # the hub went away (shutting down): metrics are best effort
            log.debug("metrics push failed", exc_info=True)

    async def _metrics_text(self) -> str:
        await self._push()
        snapshots = await self.hub.report.remote()
        return render(merge(snapshots))


# ---------------------------------------------------------------------------- helpers
def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    headers = dict(headers or {})
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": message}, status_code=status, headers=headers or None)


async def _read_body(request: Request, limit: int, idle_s: float) -> bytes:
    """The body, up to ``limit`` bytes (413 beyond), each part within ``idle_s`` seconds of
    the one before (408 when none comes)."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise RequestError(
            413,
            f"request body of {int(declared) / 2**20:.1f} MiB exceeds the server's limit of "
            f"{limit / 2**20:g} MiB (--max-body-mb)",
        )
    try:
        return await _read_parts(request, limit, idle_s)
    except (TimeoutError, asyncio.TimeoutError):
        raise RequestError(
            408,
            f"no part of the request body came for {idle_s:g} s (--body-timeout-s); send it again",
        ) from None


async def _read_parts(request: Request, limit: int, idle_s: float) -> bytes:
    chunks, size = [], 0
    if sys.version_info >= (3, 11):
        # One timer per request, moved on once a tenth of idle_s has passed since it last
        # moved: a body that stops coming is ended after 0.9-1 x idle_s of silence. Moved at
        # every part (they come in threes), reading a 900-byte body took 19 microseconds
        # here, 10 this way, 3 with no timer.
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(idle_s) as timer:
            moved = loop.time()
            async for chunk in request.stream():
                now = loop.time()
                if now - moved > idle_s / 10:
                    timer.reschedule(now + idle_s)
                    moved = now
                size += len(chunk)
                if size > limit:
                    raise _too_large(limit)
                chunks.append(chunk)
        return b"".join(chunks)
    parts = request.stream()
    while True:
        try:
            chunk = await asyncio.wait_for(parts.__anext__(), idle_s)
        except StopAsyncIteration:
            return b"".join(chunks)
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)


def _too_large(limit: int) -> RequestError:
    return RequestError(
        413, f"request body exceeds the server's limit of {limit / 2**20:g} MiB (--max-body-mb)"
    )


# ---------------------------------------------------------------------------- driver
@dataclass
class Server:
    """A running server (returned by :func:`start_server`).

    Attributes:
        url: where to send requests (the first replica's with direct ingress).
        urls: every address that answers: one per replica with direct ingress, else the
            proxy's.
        ingress: ``direct`` or ``proxy`` (:attr:`ServeOptions.ingress`).
    """

    url: str
    options: ServeOptions
    describe: dict[str, Any]
    local: bool
    hub: Any = None
    ingress: str = "proxy"
    urls: list[str] = field(default_factory=list)
    started_serve: bool = False  # on a cluster: Ray Serve was started for this server
    device: str = "cpu"  # where the replicas run the model (``--device auto`` resolved)
    # a model that a server now gone (killed, or its terminal closed) had left on the cluster
    # was taken off first
    replaced: bool = False
    # while stopping: requests in flight at the replicas' last report (None: not asked yet),
    # 0 once every request was answered
    in_flight: int | None = None

    def stop(self, timeout: float = 30.0, linger_s: float = 0.0) -> None:
        """Refuse new requests (503), finish those in flight (up to ``timeout`` seconds), then
        stop; a local Ray is shut down too, an existing cluster keeps running (this
        application is deleted, and Ray Serve too if this server started it and it serves
        nothing else). With ``linger_s``, refuse new requests and answer ``/healthz`` with
        draining for at least that long first (a load balancer's health checks see it)."""
        from exitsearch.distributed.cluster import connected_here, disconnect

        try:
            if self.hub is not None:
                try:
                    self._drain(timeout, linger_s)
                except KeyboardInterrupt:  # stop at once: a local Ray goes with this process
                    if not self.local:  # but a cluster's replicas would stay, refusing forever
                        with contextlib.suppress(Exception):
                            serve.delete(APP_NAME, _blocking=False)
                    raise
            # a local Ray this process started goes as a whole (disconnect), Ray Serve with it:
            # shutting Serve down first only adds Ray's notice that its controller was killed
            if not self.local:
                serve.delete(APP_NAME)
                if self.started_serve and not serve.status().applications:
                    serve.shutdown()  # what this server started, so that the next may choose
            elif not connected_here():  # a local Ray of the caller's own keeps running
                serve.shutdown()
        finally:
            if self.hub is not None:
                with contextlib.suppress(Exception):  # already gone with the cluster
                    ray.kill(self.hub)
            disconnect()

    def _drain(self, timeout: float, linger_s: float = 0.0) -> None:
        ray.get(self.hub.drain.remote())
        start = time.monotonic()
        deadline = start + linger_s + timeout
        while time.monotonic() < deadline:
            snaps = ray.get(self.hub.get.remote())
            gauges = [snap["gauges"] for snap in snaps.values()]
            self.in_flight = int(sum(g.get("exitsearch_in_flight", 0) for g in gauges))
            if (
                len(gauges) >= self.options.replicas
                and all(
                    g.get("exitsearch_draining") == 1 and g.get("exitsearch_in_flight") == 0
                    for g in gauges
                )
                and time.monotonic() - start >= linger_s
            ):
                self.in_flight = 0
                return
            time.sleep(0.1)
        log.warning("requests still in flight after %.0f s; stopping anyway", timeout)


def start_server(bundle: str | os.PathLike[str], options: ServeOptions | None = None) -> Server:
    """Serve ``bundle`` over HTTP and return when every replica answers.

    Raises:
        BundleError: the bundle is missing, altered or unreadable.
        ConfigError: bad options, an operating point the bundle lacks, the port is taken.
        ClusterError: the Ray cluster cannot be reached, or CUDA asked of one without GPUs.
    """
    from exitsearch.distributed.cluster import connect, disconnect, resolve_address, task_device
    from exitsearch.distributed.testing import free_port

    options = options or ServeOptions()
    address = resolve_address(options.ray_address)
    root = Path(bundle)
    fixed, describe, _ = check_bundle(root, options)  # before anything starts
    local = address is None or address == "local"
    ingress = _choose_ingress(options, local)
    ports = range(options.port, options.port + (options.replicas if ingress == "direct" else 1))
    if local:
        for port in ports:
            _check_port(options.host, port)
    logging.getLogger("ray.serve").setLevel(logging.WARNING)  # not its per-step INFO lines
    connected_before = ray.is_initialized()  # then a failure here leaves that connection be
    with _environment(_local_ray_env(options, ingress) if local else {}), _own_sigterm():
        connect(address or "local")
    if not connected_before:
        # Ray Serve keeps its controller's handle across Ray sessions, and tells a stale one
        # by the job id, which a new cluster numbers from 1 again: after a local server, a
        # server on a cluster in the same process used the dead controller ("Can't find actor")
        from ray.serve.context import _disconnect as forget_serve_client

        forget_serve_client()
    serve_was_running: bool | None = None  # on a cluster: whether Ray Serve ran before
    replaced = False  # on a cluster: a model that a server now gone left there was taken off
    hub = None
    try:
        device = task_device(options.device)
        actor_options: dict[str, Any] = {"num_cpus": options.cpus_per_replica}
        if device == "cuda":
            actor_options["num_gpus"] = 1
        _check_resources(options, actor_options)
        if not local:
            serve_was_running, replaced = _check_cluster_serve(options)
        tar: bytes | None = None
        if local:
            source: Any = str(root.resolve())
        else:  # no shared folder is assumed: the nodes get the bundle from the hub
            from exitsearch.distributed.shipping import pack_folder

            sha, tar = pack_folder(root)
            source = {"sha256": sha, "name": root.name}
        hub_ref = (f"{APP_NAME}-metrics-{os.getpid()}", ray.get_runtime_context().namespace)
        hub = MetricsHub.options(name=hub_ref[0], namespace=hub_ref[1]).remote(tar)  # type: ignore[attr-defined]
        ray.get(hub.get.remote())  # alive and named before any replica looks for it
        opts = asdict(options)
        opts.update(device=device, operating_point=fixed, budget=None)
        # With direct ingress Ray Serve still starts its proxy: on a port of its own, unused
        proxy_port = free_port(options.host) if ingress == "direct" else options.port
        serve.start(
            proxy_location="HeadOnly"
            if ingress == "direct"
            else options.proxy_location or "EveryNode",
            http_options={"host": options.host, "port": proxy_port},
            logging_config={"log_level": "WARNING", "enable_access_log": False},
        )
        app = model_deployment(options, actor_options).bind(source, opts, hub_ref, describe)
        serve.run(app, name=APP_NAME, route_prefix=options.route_prefix)
    except BaseException as exc:  # a failure, or Ctrl-C or SIGTERM while starting
        message = "" if isinstance(exc, ExitSearchError) else _deploy_error(exc)
        # What was deployed goes: on a cluster it would outlive this process, refusing the
        # next server ("serves a model already") with nobody left to stop it. A second
        # Ctrl-C or SIGTERM meanwhile would cut that short: they wait until it is done.
        with _signals_held():
            if serve_was_running is False:  # Ray Serve started on the cluster for this server
                with contextlib.suppress(Exception):
                    serve.shutdown()
            elif serve_was_running and not local:
                with contextlib.suppress(Exception):
                    serve.delete(APP_NAME)
            if hub is not None:  # (a caller's own Ray keeps running: its name would stay)
                with contextlib.suppress(Exception):
                    ray.kill(hub)
            if not connected_before:
                disconnect()
        if isinstance(exc, ExitSearchError) or not isinstance(exc, Exception):
            raise
        raise ConfigError(f"the server did not start: {message}") from None
    host = "127.0.0.1" if options.host in ("0.0.0.0", "::") else options.host
    prefix = options.route_prefix.rstrip("/")
    if ingress == "direct":
        listening = _direct_ports()
        if sorted(listening) != list(ports):
            stop = Server("", options, describe, local, hub)
            stop.stop(timeout=5)
            raise ConfigError(
                f"the replicas listen on ports {sorted(listening)}, not {list(ports)}: "
                "this Ray was not started for direct ingress"
            )
    urls = [f"http://{host}:{port}{prefix}" for port in ports]
    return Server(
        url=urls[0],
        options=options,
        describe=describe,
        local=local,
        hub=hub,
        ingress=ingress,
        urls=urls,
        started_serve=serve_was_running is False,
        device=device,
        replaced=replaced,
    )


def check_bundle(
    root: Path, options: ServeOptions
) -> tuple[int | None, dict[str, Any], str | None]:
    """Load ``root`` (checksums, schema) and fit ``options`` to it: the fixed operating point
    (a budget resolved to the most accurate point within it; None: the bundle's own), what
    ``GET /`` answers, and the bundle's manifest checksum (None in a bundle without one).

    Raises:
        BundleError: the bundle is missing, altered or unreadable.
        ConfigError: a point or budget the bundle lacks, or a latency target without points.
    """
    from exitsearch.export import load_bundle

    model = load_bundle(root)
    fixed: int | None = None
    if options.budget is not None:  # a budget no point fits fails here, before Ray
        model.set_operating_point(options.budget)
        fixed = model.point_index
    elif options.operating_point is not None:
        model.set_operating_point(index=options.operating_point)
        fixed = options.operating_point
    if options.slo_ms and not model.operating_points:
        raise ConfigError(
            f"{root} carries no operating points: a latency target has none to switch to"
        )
    return fixed, describe_bundle(model, options), model.manifest.get("manifest_sha256")


def model_deployment(options: ServeOptions, actor_options: Mapping[str, Any]) -> Any:
    """The replicas' deployment (``model``), to bind: ``options.replicas`` of them, each
    holding up to ``options.max_queued`` requests, with ``actor_options`` (CPUs, GPUs)."""
    return BundleServer.options(  # type: ignore[attr-defined]
        num_replicas=options.replicas,
        max_ongoing_requests=options.max_queued,
        max_queued_requests=options.max_queued,
        ray_actor_options=dict(actor_options),
        graceful_shutdown_timeout_s=30,
        max_constructor_retry_count=1,
        logging_config={"log_level": "WARNING", "enable_access_log": False},
    )


def _choose_ingress(options: ServeOptions, local: bool) -> str:
    """``direct`` or ``proxy`` (:attr:`ServeOptions.ingress`). Direct ingress is configured
    where Ray starts (its environment), so it needs a local Ray that this server starts."""
    fresh = local and not ray.is_initialized()
    if options.ingress == "auto":
        direct = fresh and options.replicas == 1 and options.proxy_location is None
        return "direct" if direct else "proxy"
    if options.ingress == "direct" and not fresh:
        raise ConfigError(
            "--ingress direct needs a local Ray started by the server, and this process is "
            "already connected to one"
        )
    return options.ingress


def _local_ray_env(options: ServeOptions, ingress: str) -> dict[str, str]:
    """Environment of a local Ray for serving (Ray Serve reads these where it starts).

    The replica runs at normal priority (Ray starts its workers at niceness 15, where any
    other busy process on the machine preempts the server and its p99 latency spikes) and
    runs its requests on its own event loop (no hand-off to a second thread); with
    direct ingress each replica listens on the next port from ``options.port`` (Ray Serve's
    proxy still starts, on a spare port, unused), and a stopping replica waits only for its
    requests in flight (:meth:`Server.stop` has already refused new ones), not for a load
    balancer to notice."""
    env = {"RAY_SERVE_RUN_USER_CODE_IN_SEPARATE_THREAD": "0", "RAY_worker_niceness": "0"}
    if ingress == "direct":
        env.update(
            RAY_SERVE_ENABLE_DIRECT_INGRESS="1",
            RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT=str(options.port),
            RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT=str(options.port + options.replicas),
            RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S="0",
        )
    return env


@contextlib.contextmanager
def _environment(env: Mapping[str, str]) -> Iterator[None]:
    """``env`` set in this process's environment for the block (the processes a local Ray
    starts inherit it), then restored."""
    before = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in before.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _direct_ports() -> list[int]:
    """The HTTP ports this application's replicas listen on (direct ingress), from Ray
    Serve's controller."""
    from ray.serve.context import _get_global_client

    details = _get_global_client().get_serve_details()
    return [
        int(t["port"])
        for group in details.get("target_groups", [])
        if group.get("app_name") == APP_NAME
        and str(getattr(group.get("protocol"), "value", group.get("protocol"))) == "HTTP"
        for t in group.get("targets", [])
    ]


def _check_cluster_serve(options: ServeOptions) -> tuple[bool, bool]:
    """On an existing cluster: whether Ray Serve runs there already, after checking that this
    server can join it (one cluster has one HTTP address and one application of this name),
    and whether an application that a server now gone left there was taken off.

    Raises:
        ConfigError: the cluster serves a model already, or its Ray Serve listens elsewhere.
    """
    from ray.serve.context import _get_global_client

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:
        return False, False
    details = client.get_serve_details()
    apps = details.get("applications") or {}
    left = APP_NAME in apps
    ours = apps.get(APP_NAME) or {}
    if left and (
        ours.get("source") == "declarative" or "metrics" in (ours.get("deployments") or {})
    ):
        # deployed from a Serve config or the builder (its deployments may not be listed yet
        # while it builds, or at all when its build failed): Ray Serve's to keep
        raise ConfigError(
            f"this Ray cluster serves an application named {APP_NAME!r} that Ray Serve runs "
            "from its config (import path exitsearch.serve.builder:app): name that one "
            "otherwise, or use another cluster"
        )
    if left:
        owners = _live_servers()
        if owners:
            raise ConfigError(
                f"this Ray cluster serves a model already (Ray Serve application {APP_NAME!r}, "
                f"from the exitsearch serve process {', '.join(owners)}): stop that server "
                "first, or use another cluster"
            )
    http = details.get("http_options") or {}
    where = (http.get("host"), http.get("port"))
    if None not in where and where != (options.host, options.port):
        raise ConfigError(
            f"Ray Serve on this cluster listens on {where[0]}:{where[1]} already (one cluster "
            f"has one HTTP address): pass --host {where[0]} --port {where[1]}"
        )
    if left:  # its server is gone (killed, or its terminal closed) and left it deployed:
        serve.delete(APP_NAME)  # nobody can stop it but another server, which takes its place
    return True, left


def _live_servers() -> list[str]:
    """The ``exitsearch serve`` processes connected to this cluster (their metrics hubs,
    actors that end with the process that started them), as ``pid`` of each."""
    from ray.util import list_named_actors

    prefix = f"{APP_NAME}-metrics-"
    return sorted(
        a["name"][len(prefix) :]
        for a in list_named_actors(all_namespaces=True)
        if a["name"].startswith(prefix)
    )


def _check_resources(options: ServeOptions, actor_options: Mapping[str, Any]) -> None:
    """Refuse replicas that the cluster cannot place all at once (Ray Serve would wait for
    them forever, silently, with the ones that fit already answering).

    Raises:
        ConfigError: more CPUs or GPUs asked than the cluster has in all.
    """
    have = ray.cluster_resources()
    for key, flag in (("num_cpus", "--cpus-per-replica"), ("num_gpus", None)):
        each = float(actor_options.get(key, 0))
        unit = "CPU" if key == "num_cpus" else "GPU"
        total = float(have.get(unit, 0))
        if each * options.replicas > total + 1e-9:
            how = f"{flag} {each:g}" if flag else f"{each:g} GPU each"
            raise ConfigError(
                f"--replicas {options.replicas} x {how} needs {each * options.replicas:g} "
                f"{unit}s, and this Ray has {total:g}: serve fewer replicas"
                + (f" or lower {flag}" if flag else "")
            )


@contextlib.contextmanager
def _signals_held() -> Iterator[None]:
    """Ctrl-C, SIGTERM and SIGHUP do nothing during the block (in the main thread: clean-up
    that must not be cut short; the signal that started it is on its way already)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = [signal.SIGINT, signal.SIGTERM, signal.SIGHUP]
    before = {s: signal.getsignal(s) for s in held}
    for s in held:
        signal.signal(s, signal.SIG_IGN)
    try:
        yield
    finally:
        for s, handler in before.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)


@contextlib.contextmanager
def _own_sigterm() -> Iterator[None]:
    """Keep the caller's own SIGTERM handler through Ray's start: ``ray.init`` replaces it (and
    its core worker then ends the process with a stack dump), so that SIGTERM while a server
    starts would skip the clean-up. A default handler is left as Ray sets it."""
    main = threading.current_thread() is threading.main_thread()
    before = signal.getsignal(signal.SIGTERM) if main else None
    try:
        yield
    finally:
        if callable(before):
            signal.signal(signal.SIGTERM, before)


def _deploy_error(exc: BaseException) -> str:
    """The replica's own error when a deployment failed (its last traceback line), a port
    Ray Serve's proxy could not listen on, else the last error line of Ray Serve's message."""
    with contextlib.suppress(Exception):
        app = serve.status().applications.get(APP_NAME) if ray.is_initialized() else None
        for dep in app.deployments.values() if app is not None else ():
            lines = [ln.strip() for ln in (dep.message or "").splitlines() if ln.strip()]
            errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", ln)]
            if errors:  # one of exitsearch's own errors is a message already
                return re.sub(r"^exitsearch\.errors\.\w+: ", "", errors[-1])[:300]
    text = str(exc)
    bind = re.search(r"Failed to (?:bind to address|start proxy HTTP server)[^\n]*", text)
    if bind is not None or "ProxyActor.ready" in text:
        where = re.search(r"address '([^']+)'", text)
        return (
            f"Ray Serve's proxy could not listen on {where.group(1) if where else 'its port'} "
            "(is the port taken on a node of the cluster?); choose another --port"
        )
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    errors = [ln for ln in lines if re.match(r"^[A-Za-z_.]+(Error|Exception)\b", ln)]
    return (errors[-1] if errors else " ".join(text.split()))[:300]


_TIME_WAIT = "06"  # the state's code in /proc/net/tcp


def _check_port(host: str, port: int) -> None:
    if port == 0:
        raise ConfigError("give a port number (0 is not allowed: the proxy's port must be known)")
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE and _tcp_states(port) == {_TIME_WAIT}:
                raise ConfigError(
                    f"cannot listen on {host}:{port}: the connections of a server that stopped "
                    "less than a minute ago still hold the port (TCP's TIME_WAIT, 60 s); wait "
                    "or choose another --port"
                ) from None
            fix = (
                "--host (an address of this machine, or 0.0.0.0 for all of them)"
                if exc.errno == errno.EADDRNOTAVAIL or isinstance(exc, socket.gaierror)
                else "--port"
            )
            raise ConfigError(
                f"cannot listen on {host}:{port} ({exc.strerror or exc}); choose another {fix}"
            ) from None


def _tcp_states(port: int) -> set[str]:
    """The states (hex codes of /proc/net/tcp) of this machine's TCP sockets on local
    ``port``; empty where the kernel does not say (not Linux)."""
    states = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(OSError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if len(fields) > 3 and int(fields[1].rsplit(":", 1)[1], 16) == port:
                    states.add(fields[3])
    return states


def describe_bundle(model: Any, options: ServeOptions) -> dict[str, Any]:
    """What ``GET /`` answers: the model, its exits and operating points."""
    from exitsearch.units import format_flops

    costs = model.costs
    points = [
        {
            "index": i,
            "mean_flops": p.mean_flops,
            "mean_cost": format_flops(p.mean_flops),
            "speedup": costs.backbone_flops / p.mean_flops,
            "val_accuracy": p.val_accuracy,
        }
        for i, p in enumerate(model.operating_points)
    ]
    return {
        "bundle": str(model.source),
        "backbone": model.manifest["backbone"]["spec"]["model"],
        "backbone_only": options.backbone_only,
        "input_size": list(model.preprocess.input_size),
        "num_classes": int(model.backbone.num_classes),
        "classes": model.classes,
        "task": model.task.name,
        "exits": [] if options.backbone_only else [h.key for h in model.config.exits],
        "backbone_flops": costs.backbone_flops,
        "operating_points": [] if options.backbone_only else points,
        "default_operating_point": None if options.backbone_only else model.point_index,
        "latency_target_ms": options.slo_ms,
        "max_batch_size": options.max_batch_size,
        "batch_wait_ms": options.batch_wait_ms,
    }
