"""What Ray Serve itself costs per request, with no model: the floor under every served model.

Usage::

    python benchmarks/bench_serve_floor.py --json-out results/serve/floor.json

A local Ray started the way ``exitsearch serve`` starts one (direct ingress, the replica at
normal priority, requests on its own event loop, no access log) serves one replica that reads
the request's body and answers a constant JSON prediction: straight away (``no batching``) or
after a round through Ray Serve's ``@serve.batch`` with the server's batching settings (what
every request to ``exitsearch serve`` goes through). The load is ``benchmarks/bench_serve.py``'s
open-loop client with its Fashion-MNIST PNG requests; the replica's CPU time (every thread of
its process) per request answered is read from the replica before and after each window, the
median of ``--repeats`` windows. Whatever the model saves, a served request costs at least
this. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import platform
import time
import urllib.request
from pathlib import Path
from typing import Any

from bench_serve import combine, offered_load, payloads

from exitsearch._io import atomic_write_json
from exitsearch.distributed.testing import free_port

MODES = ("no batching", "@serve.batch")


def make_deployment(max_batch_size: int, batch_wait_s: float) -> Any:
    from ray import serve
    from starlette.responses import JSONResponse

    @serve.deployment(name="floor")
    class Floor:
        def __init__(self, mode: str) -> None:
            self.mode = mode
            gc.collect()
            gc.freeze()  # as the server's replica does once loaded

        async def __call__(self, request: Any) -> Any:
            if request.url.path == "/cpu":
                return JSONResponse({"cpu_s": time.process_time()})
            n = len(await request.body())
            if self.mode == "@serve.batch":
                n = await self.through_batch(n)
            return JSONResponse({"label": 0, "exit": 0, "latency_ms": 0.0, "bytes": n})

        @serve.batch(max_batch_size=max_batch_size, batch_wait_timeout_s=batch_wait_s)
        async def through_batch(self, sizes: list[int]) -> list[int]:
            return sizes

    return Floor


def sweep(
    url: str, mode: str, rates: list[float], args: argparse.Namespace, requests: list[Any]
) -> list[dict[str, Any]]:
    """Each offered rate for ``args.repeats`` windows, combined as the load test combines
    them (:func:`bench_serve.combine`: the median window's latencies, rates and CPU)."""

    def cpu() -> float:
        with urllib.request.urlopen(url + "/cpu", timeout=30) as r:
            return float(json.load(r)["cpu_s"])

    asyncio.run(offered_load(url + "/predict", rates[0], 2.0, requests, 999))  # warm-up
    rows = []
    for rate in rates:
        windows = []
        for rep in range(args.repeats):
            before = cpu()
            w = asyncio.run(offered_load(url + "/predict", rate, args.seconds, requests, rep))
            # one image per request: CPU per image is CPU per request
            w["replica_cpu_ms_per_image"] = 1000 * (cpu() - before) / max(1, w["answered"])
            windows.append(w)
        row = combine(windows)
        rows.append(row)
        print(
            f"{mode:>12} {rate:5.0f} req/s: answered {row['achieved_per_s']:6.1f}/s, "
            f"p50 {row['p50_ms']:5.2f} ms, p99 {row['p99_ms']:6.2f} ms, replica CPU "
            f"{row['replica_cpu_ms_per_image']:.3f} ms per request",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--rates", default="100,200,300,400", help="requests per second")
    ap.add_argument("--seconds", type=float, default=5.0, help="per window")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = ap.parse_args(argv)
    import ray
    from ray import serve

    from exitsearch.serve.app import ServeOptions, _environment, _local_ray_env

    requests = payloads(2000, 1)
    rates = [float(r) for r in args.rates.split(",")]
    doc: dict[str, Any] = {
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "ray": ray.__version__,
        "setup": "a local Ray as exitsearch serve starts it (direct ingress), one replica "
        "answering a constant; open-loop aiohttp client (Poisson arrivals) on the same cores",
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "windows": args.repeats,
        "seconds_per_window": args.seconds,
        "modes": {},
    }
    t0 = time.time()
    floor = make_deployment(args.max_batch_size, args.batch_wait_ms / 1000)
    for mode in MODES:  # a Ray of its own each (its replica's port)
        port = free_port()
        with _environment(_local_ray_env(ServeOptions(port=port), "direct")):
            ray.init(include_dashboard=False, logging_level="WARNING")
        try:
            serve.start(
                proxy_location="HeadOnly",
                http_options={"host": "127.0.0.1", "port": free_port()},
                logging_config={"log_level": "WARNING", "enable_access_log": False},
            )
            serve.run(
                floor.options(
                    max_ongoing_requests=256,
                    max_queued_requests=256,
                    logging_config={"log_level": "WARNING", "enable_access_log": False},
                ).bind(mode),
                name="floor",
                route_prefix="/",
            )
            doc["modes"][mode] = sweep(f"http://127.0.0.1:{port}", mode, rates, args, requests)
        finally:
            serve.shutdown()
            ray.shutdown()
    doc["seconds"] = time.time() - t0
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json_out, doc)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
