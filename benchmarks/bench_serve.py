"""Load test of ``exitsearch serve``: the bundle against its backbone served the same way.

Usage::

    python benchmarks/bench_serve.py results/fmnist-vit12-fashion-mnist/export/config-299 \
        --json-out results/serve/serve.json --plot results/serve/serve.png

Everything runs on this machine over loopback. The servers are ``exitsearch serve`` processes,
each with its own local Ray, Ray Serve (``--ingress``: by default direct, the replica listens
itself; ``proxy`` sends requests through Ray Serve's HTTP proxy) and one model replica (1
PyTorch thread); the client is an open-loop one in this process (aiohttp; Poisson arrivals at a
fixed offered rate, as independent users would send them). Images are Fashion-MNIST test images
(t10k) as PNG files, with their labels, so the accuracy served is measured too.

The two servers of a comparison run side by side and take turns: at each offered rate each
gets ``--repeats`` windows of ``--seconds``, alternating (the order flips every repeat, and
both get the same arrivals), and a step's latencies and rates are its median window's; the
replica's CPU time per image answered comes from the server's ``/metrics`` (read before and
after each window; every thread of the replica's process), also the median window's. This
machine is shared: a neighbour's burst can slow a window several-fold, and measured one after
the other the two servers' sustainable rates moved by a quarter from run to run.

1. Rate sweeps, the backbone alone (``--backbone-only``) and the bundle at its default operating
   point, with one image per request and with ``--batch`` images per request (a JSON batch):
   offered rates rising by ``--step`` until a server falls behind (achieved below 0.9 of
   sent, fewer than 0.98 answered, or p99 above 1 s). The sustainable rate of each is the
   highest offered rate at which it answers at least 0.98 of the requests and its p99 stays
   within ``--p99-ms``; ``--refine`` more steps halve the (geometric) gap between it and the
   next rate tried.
2. Overload: twice the backbone's saturating throughput, sent to the bundle with a fixed
   operating point and with the latency target ``--slo-ms`` on (two servers, in turns as
   above): p99, requests refused, accuracy served and the operating points used.

Bounded in requests and time (``--repeats`` windows of ``--seconds`` per server and step, at
most ``--max-steps`` steps). Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import io
import json
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from exitsearch._io import atomic_write_json
from exitsearch.data.sources.fashion_mnist import load_fashion_mnist
from exitsearch.distributed.testing import free_port

Payload = tuple[bytes, str, np.ndarray]  # body, content type, the labels of its images


def payloads(n: int, per_request: int) -> list[Payload]:
    """Requests of ``per_request`` Fashion-MNIST test images each (raw PNG bytes for one, a
    JSON batch of base64 PNGs for more), from the first ``n`` test images."""
    from PIL import Image

    _, test = load_fashion_mnist()
    pngs = []
    for x in test.x[:n]:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(x).reshape(28, 28)).save(buf, "PNG")
        pngs.append(buf.getvalue())
    labels = np.asarray(test.y[:n])
    if per_request == 1:
        return [(p, "image/png", labels[i : i + 1]) for i, p in enumerate(pngs)]
    out = []
    for i in range(0, n - per_request + 1, per_request):
        doc = {"images": [base64.b64encode(p).decode() for p in pngs[i : i + per_request]]}
        out.append((json.dumps(doc).encode(), "application/json", labels[i : i + per_request]))
    return out


async def offered_load(
    url: str, rate: float, seconds: float, requests: list[Payload], seed: int
) -> dict[str, Any]:
    """Send Poisson arrivals at ``rate`` per second for ``seconds``; what came back."""
    records, start = await send(url, rate, seconds, requests, seed)
    return summarise(records, rate, seconds, start)


async def send(
    url: str, rate: float, seconds: float, requests: list[Payload], seed: int
) -> tuple[list[dict[str, Any]], float]:
    """Send Poisson arrivals at ``rate`` per second for ``seconds``: one record per request
    (status, latency, when it was sent and answered, what came back), and when sending began."""
    import aiohttp

    rng = np.random.default_rng(seed)
    gaps = rng.exponential(1.0 / rate, size=int(rate * seconds * 1.5) + 10)
    arrivals = np.cumsum(gaps)
    arrivals = arrivals[arrivals < seconds]
    picks = rng.integers(0, len(requests), size=len(arrivals))
    records: list[dict[str, Any]] = []
    timeout = aiohttp.ClientTimeout(total=30)
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0), timeout=timeout
    ) as session:

        async def one(i: int) -> None:
            body_bytes, ctype, labels = requests[int(picks[i])]
            t0 = time.perf_counter()
            try:
                async with session.post(url, data=body_bytes, headers={"Content-Type": ctype}) as r:
                    raw = await r.read()
                    status = r.status
                try:
                    body = json.loads(raw)
                except ValueError:  # e.g. the proxy's own plain-text error page
                    body, status = {"error": raw[:100].decode(errors="replace")}, status or 0
                    status = 0 if status == 200 else status
            except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
                body, status = {"error": type(exc).__name__}, 0
            t1 = time.perf_counter()
            rec = {"status": status, "latency_s": t1 - t0, "done": t1, "at": float(arrivals[i])}
            if status == 200:
                answers = body.get("predictions", [body])
                rec.update(
                    correct=[
                        int(a["label"]) == int(y) for a, y in zip(answers, labels, strict=True)
                    ],
                    exits=[a["exit"] for a in answers],
                    points=[a.get("operating_point") for a in answers],
                    server_ms=body["latency_ms"],
                )
            records.append(rec)

        # The client's own garbage collection would count as server latency: this process
        # holds every earlier step's records, and a full collection of them takes tens of ms
        gc.collect()
        gc.freeze()
        start = time.perf_counter()
        tasks = []
        for i, at in enumerate(arrivals):
            delay = start + at - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        gc.unfreeze()
    return records, start


def summarise(
    records: list[dict[str, Any]], rate: float, seconds: float, start: float
) -> dict[str, Any]:
    ok = [r for r in records if r["status"] == 200]
    lat = np.array([r["latency_s"] for r in ok]) * 1000 if ok else np.array([np.nan])
    server = np.array([r["server_ms"] for r in ok]) if ok else np.array([np.nan])
    end = max((r["done"] for r in records), default=start + seconds)
    statuses = Counter(r["status"] for r in records)
    correct = [c for r in ok for c in r["correct"]]
    return {
        "offered_per_s": rate,
        "sent": len(records),
        "answered": len(ok),
        "answered_fraction": len(ok) / max(1, len(records)),
        "refused_503": statuses.get(503, 0),
        "failed": sum(v for k, v in statuses.items() if k not in (200, 503)),
        "sent_per_s": len(records) / seconds,
        "achieved_per_s": len(ok) / max(end - start, 1e-9),
        "images_per_s": len(correct) / max(end - start, 1e-9),
        "p50_ms": float(np.percentile(lat, 50)),
        "p99_ms": float(np.percentile(lat, 99)),
        "server_p50_ms": float(np.percentile(server, 50)),
        "server_p99_ms": float(np.percentile(server, 99)),
        "images": len(correct),
        "correct": int(sum(correct)),
        "accuracy": float(np.mean(correct)) if correct else None,
        "exits": dict(sorted(Counter(str(e) for r in ok for e in r["exits"]).items())),
        "points": dict(sorted(Counter(str(p) for r in ok for p in r["points"]).items())),
    }


class Served:
    """``exitsearch serve BUNDLE --port PORT FLAGS...`` in a process of its own (its own local
    Ray), from healthy until :meth:`stop` (SIGTERM: it drains and takes its Ray down)."""

    def __init__(self, bundle: Path, port: int, flags: list[str], log: Path) -> None:
        exe = Path(sys.executable).with_name("exitsearch")
        command = [str(exe) if exe.exists() else "exitsearch", "serve", str(bundle)]
        self.url = f"http://127.0.0.1:{port}"
        self.log = log
        with log.open("wb") as out:
            self.proc = subprocess.Popen(
                [*command, "--port", str(port), *flags], stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                raise SystemExit(f"exitsearch serve {bundle} {' '.join(flags)} exited: {tail}")
            try:
                with urllib.request.urlopen(self.url + "/healthz", timeout=2) as r:
                    if r.status == 200:
                        return
            except OSError:
                pass
            time.sleep(1.0)
        self.stop()
        raise SystemExit(f"exitsearch serve {bundle} was not healthy after 300 s ({log})")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(120)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def measure(
    urls: dict[str, str],
    rates: dict[str, float],
    args: argparse.Namespace,
    requests: list[Payload],
    seed: int,
) -> dict[str, dict[str, Any]]:
    """``args.repeats`` windows of each server at its rate, the servers taking turns (the
    order flips every repeat; a server and the next get the same arrivals); per server the
    windows combined, with the median of their p50s, p99s and rates."""
    windows: dict[str, list[dict[str, Any]]] = {n: [] for n in rates}
    for rep in range(args.repeats):
        for name in list(rates) if rep % 2 == 0 else list(rates)[::-1]:
            url = urls[name] + "/predict"
            cpu = replica_cpu(urls[name])
            w = asyncio.run(offered_load(url, rates[name], args.seconds, requests, seed + rep))
            used = replica_cpu(urls[name]) - cpu
            w["replica_cpu_ms_per_image"] = 1000 * used / w["images"] if w["images"] else None
            windows[name].append(w)
    return {n: combine(ws) for n, ws in windows.items()}


def replica_cpu(url: str) -> float:
    """CPU seconds the server's replica has used (``/metrics``; it counts every thread of
    the replica's process: HTTP, Ray Serve, the model)."""
    with urllib.request.urlopen(url + "/metrics", timeout=30) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith("exitsearch_replica_cpu_seconds_total "):
            return float(line.split()[1])
    raise SystemExit(f"{url}/metrics has no exitsearch_replica_cpu_seconds_total")


def combine(windows: list[dict[str, Any]]) -> dict[str, Any]:
    """One step from several windows at one offered rate: counts summed, latencies and rates
    the median window's (a window that a stall of the shared machine spoiled does not
    decide), each window's own figures kept."""
    med = {
        k: float(np.median([w[k] for w in windows]))
        for k in (
            "answered_fraction",
            "sent_per_s",
            "achieved_per_s",
            "images_per_s",
            "p50_ms",
            "p99_ms",
            "server_p50_ms",
            "server_p99_ms",
        )
    }
    cpu = [w["replica_cpu_ms_per_image"] for w in windows if w.get("replica_cpu_ms_per_image")]
    med["replica_cpu_ms_per_image"] = float(np.median(cpu)) if cpu else None
    counts = {k: sum(w[k] for w in windows) for k in ("sent", "answered", "refused_503", "failed")}
    images, correct = sum(w["images"] for w in windows), sum(w["correct"] for w in windows)
    exits: Counter[str] = Counter()
    points: Counter[str] = Counter()
    for w in windows:
        exits.update(w["exits"])
        points.update(w["points"])
    return {
        "offered_per_s": windows[0]["offered_per_s"],
        **counts,
        **med,
        "images": images,
        "correct": correct,
        "accuracy": correct / images if images else None,
        "exits": dict(sorted(exits.items())),
        "points": dict(sorted(points.items())),
        "windows": [
            {
                k: None if w.get(k) is None else round(w[k], 2)
                for k in (
                    "achieved_per_s",
                    "p50_ms",
                    "p99_ms",
                    "server_p99_ms",
                    "replica_cpu_ms_per_image",
                )
            }
            for w in windows
        ],
    }


def sweeps(
    urls: dict[str, str], args: argparse.Namespace, requests: list[Payload], start_rate: float
) -> dict[str, list[dict[str, Any]]]:
    """Offered rates rising by ``args.step`` from ``start_rate``, every server measured at each
    (:func:`measure`) until it falls behind; then ``args.refine`` steps that halve the
    (geometric) gap above each server's sustainable rate."""
    steps: dict[str, list[dict[str, Any]]] = {n: [] for n in urls}
    for url in urls.values():
        asyncio.run(offered_load(url + "/predict", start_rate, 2.0, requests, 999))  # warm-up
    live = list(urls)
    rate = start_rate
    for i in range(args.max_steps):
        if not live:
            break
        for name, step in measure(urls, dict.fromkeys(live, rate), args, requests, 10 * i).items():
            steps[name].append(step)
            print(_line(name, step), flush=True)
            behind = step["achieved_per_s"] < 0.9 * step["sent_per_s"]
            if behind or step["answered_fraction"] < 0.98 or step["p99_ms"] > 1000:
                live.remove(name)
        rate *= args.step
    for i in range(args.refine):
        rates = {}
        for name, st in steps.items():
            ok = sustainable(st, args.p99_ms)
            above = [s["offered_per_s"] for s in st if s["offered_per_s"] > ok]
            if ok and above:
                rates[name] = (ok * min(above)) ** 0.5
        if not rates:
            break
        for name, step in measure(urls, rates, args, requests, 1000 + 10 * i).items():
            steps[name].append(step)
            print(_line(name, step), flush=True)
    return {n: sorted(st, key=lambda s: s["offered_per_s"]) for n, st in steps.items()}


def sustainable(steps: list[dict[str, Any]], p99_ms: float) -> float:
    ok = [
        s["offered_per_s"]
        for s in steps
        if s["answered_fraction"] >= 0.98 and s["p99_ms"] <= p99_ms
    ]
    return max(ok, default=0.0)


LIMITS_MS = (100.0, 150.0, 200.0, 300.0)


def add_limits(result: dict[str, Any]) -> None:
    """Sustainable rates at several p99 limits (a p99 over a few seconds is noisy, so one
    limit alone can fall between two close steps)."""
    result["sustainable_by_p99_limit"] = {
        mode: {
            f"{limit:g} ms": {n: sustainable(st, limit) for n, st in sweeps.items()}
            for limit in LIMITS_MS
        }
        for mode, sweeps in result["sweeps"].items()
    }


def _line(name: str, s: dict[str, Any]) -> str:
    acc = "-" if s["accuracy"] is None else f"{s['accuracy']:.4f}"
    return (
        f"{name:>9} offered {s['offered_per_s']:7.1f}/s  achieved {s['achieved_per_s']:7.1f}/s "
        f"({s['images_per_s']:6.0f} img/s)  "
        f"p50 {s['p50_ms']:7.1f} ms  p99 {s['p99_ms']:7.1f} ms  server p99 "
        f"{s['server_p99_ms']:6.1f} ms  503 {s['refused_503']:4d}  acc {acc}  replica CPU "
        f"{s.get('replica_cpu_ms_per_image') or float('nan'):.2f} ms/img"
    )


def cpu_plot(ax: Any, doc: dict[str, Any]) -> None:
    """The replicas' CPU time per image answered, against the offered rate."""
    for (mode, sweeps), style in zip(doc["sweeps"].items(), ("o-", "s--"), strict=False):
        k = doc["images_per_request"][mode]
        for name, colour in (("backbone", "tab:grey"), ("bundle", "tab:blue")):
            steps = [st for st in sweeps[name] if st.get("replica_cpu_ms_per_image")]
            ax.plot(
                [st["offered_per_s"] * k for st in steps],
                [st["replica_cpu_ms_per_image"] for st in steps],
                style,
                color=colour,
                label=f"{name}, {k} per request",
            )
    ax.set_ylim(bottom=0)
    ax.set_xlabel("offered images per second")
    ax.set_ylabel("replica CPU per image answered (ms; median window)")
    ax.set_title(
        "the replica's CPU time per image (model, HTTP, Ray Serve; 1 PyTorch thread)", fontsize=10
    )
    ax.legend(fontsize=8)


def plot(doc: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, grid = plt.subplots(2, 2, figsize=(13, 8.4))
    axes = grid.ravel()
    for ax, (mode, sweeps) in zip(axes[:2], doc["sweeps"].items(), strict=True):
        k = doc["images_per_request"][mode]
        for name, colour in (("backbone", "tab:grey"), ("bundle", "tab:blue")):
            steps = sweeps[name]
            x = [st["offered_per_s"] * k for st in steps]
            p99 = [st["p99_ms"] for st in steps]
            spread = [[w["p99_ms"] for w in st.get("windows", [st])] for st in steps]
            yerr = [  # the windows' figures are rounded: never below 0
                [max(0.0, p - min(w)) for p, w in zip(p99, spread, strict=True)],
                [max(0.0, max(w) - p) for p, w in zip(p99, spread, strict=True)],
            ]
            ax.errorbar(x, p99, yerr=yerr, fmt="o-", color=colour, capsize=2, label=f"{name} p99")
            ax.plot(
                x,
                [st["p50_ms"] for st in steps],
                "o--",
                color=colour,
                alpha=0.6,
                label=f"{name} p50",
            )
        ax.axhline(doc["p99_ms"], color="black", lw=0.8, ls=":", label=f"{doc['p99_ms']:g} ms")
        ax.set_yscale("log")
        ax.set_xlabel("offered images per second")
        ax.set_ylabel("client latency (ms; p99: median window, bars: all)")
        sus = doc["sustainable_per_s"][mode]
        ax.set_title(
            f"{mode}\nsustainable at p99 <= {doc['p99_ms']:g} ms: backbone "
            f"{sus['backbone'] * k:.0f}, bundle {sus['bundle'] * k:.0f} img/s",
            fontsize=10,
        )
        ax.legend(fontsize=8)
    cpu_plot(axes[2], doc)
    ax2 = axes[3]
    over = doc["overload"]
    names = list(over)
    p99 = [over[n]["p99_ms"] for n in names]
    server_p99 = [over[n]["server_p99_ms"] for n in names]
    xs = np.arange(len(names))
    ax2.bar(xs - 0.2, p99, 0.4, label="client p99", color="tab:blue")
    ax2.bar(xs + 0.2, server_p99, 0.4, label="server p99", color="tab:orange")
    ax2.axhline(doc["slo_ms"], color="black", lw=0.8, ls=":", label=f"target {doc['slo_ms']:g} ms")
    for x, n in zip(xs, names, strict=True):
        o = over[n]
        acc = "-" if o["accuracy"] is None else f"{o['accuracy']:.3f}"
        ax2.text(
            x,
            max(p99[x], server_p99[x]) * 1.1,
            f"answered {o['achieved_per_s']:.0f}/s, acc {acc}\n503: {o['refused_503']}/{o['sent']}"
            f"\npoints {', '.join(sorted(o['points'], key=lambda p: -o['points'][p]))}",
            ha="center",
            fontsize=8,
        )
    ax2.set_ylim(min(p99 + server_p99) / 3, max(p99 + server_p99) * 6)
    ax2.set_xticks(xs, names)
    ax2.set_yscale("log")
    ax2.set_ylabel("latency (ms)")
    ax2.set_title(
        f"bundle at {doc['overload_rate_per_s']:.0f} req/s (2x backbone saturation)", fontsize=10
    )
    ax2.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--json-out", type=Path, default=None)
    ap.add_argument("--plot", type=Path, default=None)
    ap.add_argument("--images", type=int, default=2048)
    ap.add_argument("--seconds", type=float, default=6.0, help="per window")
    ap.add_argument("--repeats", type=int, default=3, help="windows per server and rate")
    ap.add_argument("--start-rate", type=float, default=100.0, help="images per second")
    ap.add_argument("--batch", type=int, default=16, help="images per request, second sweep")
    ap.add_argument("--step", type=float, default=1.3)
    ap.add_argument(
        "--refine", type=int, default=2, help="steps that narrow down the sustainable rate"
    )
    ap.add_argument(
        "--ingress", default="auto", help="auto, direct or proxy (exitsearch serve --ingress)"
    )
    ap.add_argument("--max-steps", type=int, default=12)
    ap.add_argument("--p99-ms", type=float, default=100.0, help="for the sustainable rate")
    ap.add_argument("--slo-ms", type=float, default=100.0, help="latency target under overload")
    ap.add_argument(
        "--sweeps-from", type=Path, default=None, help="reuse the rate sweeps of this report"
    )
    ap.add_argument("--max-batch-size", type=int, default=32)
    ap.add_argument("--batch-wait-ms", type=float, default=2.0)
    args = ap.parse_args(argv)
    modes = {"1 image per request": 1, f"{args.batch} images per request": args.batch}
    requests = {mode: payloads(args.images, k) for mode, k in modes.items()}
    flags = [
        "--threads",
        "1",
        "--max-batch-size",
        str(args.max_batch_size),
        "--batch-wait-ms",
        str(args.batch_wait_ms),
        "--ingress",
        args.ingress,
    ]
    t0 = time.time()
    result: dict[str, Any] = {
        "bundle": str(args.bundle),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
        "python": sys.version.split()[0],
        "setup": f"loopback; two `exitsearch serve` processes side by side (each a local Ray, "
        f"Ray Serve with --ingress {args.ingress}, 1 replica with 1 PyTorch thread), measured "
        f"in turns, {args.repeats} windows of {args.seconds:g} s each per rate, median "
        "window; open-loop aiohttp client (Poisson arrivals) on the same 2 cores",
        "ingress": args.ingress,
        "images": f"Fashion-MNIST t10k, first {args.images}",
        "images_per_request": modes,
        "seconds_per_step": args.seconds,
        "windows_per_step": args.repeats,
        "max_batch_size": args.max_batch_size,
        "batch_wait_ms": args.batch_wait_ms,
        "p99_ms": args.p99_ms,
        "slo_ms": args.slo_ms,
        "sweeps": {},
        "sustainable_per_s": {},
    }
    previous = json.loads(args.sweeps_from.read_text()) if args.sweeps_from else None
    logs = Path(tempfile.mkdtemp(prefix="bench-serve-"))
    if previous is not None:
        result["sweeps"] = previous["sweeps"]
        result["sustainable_per_s"] = previous["sustainable_per_s"]
    else:
        servers = {}
        try:
            for name, extra in (("backbone", ["--backbone-only"]), ("bundle", [])):
                servers[name] = Served(args.bundle, free_port(), flags + extra, logs / name)
            urls = {n: s.url for n, s in servers.items()}
            for mode, k in modes.items():
                result["sweeps"][mode] = sweeps(urls, args, requests[mode], args.start_rate / k)
                result["sustainable_per_s"][mode] = {
                    n: sustainable(st, args.p99_ms) for n, st in result["sweeps"][mode].items()
                }
        finally:
            for server in servers.values():
                server.stop()
    singles = requests["1 image per request"]
    saturating = max(
        st["achieved_per_s"] for st in result["sweeps"]["1 image per request"]["backbone"]
    )
    rate = 2 * saturating
    result["overload_rate_per_s"] = rate
    target = f"target {args.slo_ms:g} ms"
    servers = {}
    try:
        for name, extra in (("fixed point", []), (target, ["--slo-ms", str(args.slo_ms)])):
            servers[name] = Served(args.bundle, free_port(), flags + extra, logs / name[:6])
        urls = {n: s.url for n, s in servers.items()}
        for url in urls.values():
            asyncio.run(offered_load(url + "/predict", args.start_rate, 2.0, singles, 999))
        over = measure(urls, dict.fromkeys(urls, rate), args, singles, 77)
    finally:
        for server in servers.values():
            server.stop()
    for name, step in over.items():
        print(_line(name[:9], step), flush=True)
    result["overload"] = over
    shutil.rmtree(logs, ignore_errors=True)  # the servers' output; kept when one failed
    add_limits(result)
    result["sustainable_ratio"] = {
        mode: (v["bundle"] / v["backbone"] if v["backbone"] else None)
        for mode, v in result["sustainable_per_s"].items()
    }
    result["seconds"] = time.time() - t0
    for mode, v in result["sustainable_per_s"].items():
        ratio = result["sustainable_ratio"][mode]
        print(
            f"{mode}, sustainable at p99 <= {args.p99_ms:g} ms: backbone {v['backbone']:.1f}/s, "
            f"bundle {v['bundle']:.1f}/s, ratio {ratio if ratio is not None else float('nan'):.2f}"
        )
    if args.json_out:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_json(args.json_out, result)
    if args.plot:
        args.plot.parent.mkdir(parents=True, exist_ok=True)
        plot(result, args.plot)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
