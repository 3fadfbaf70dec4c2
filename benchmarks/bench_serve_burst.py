"""A sudden burst after a quiet spell, sent to ``exitsearch serve --slo-ms``: the latency
target's first seconds.

Usage::

    python benchmarks/bench_serve_burst.py BUNDLE --rate 220 --slo-ms 100 \
        --images FOLDER --json-out results/serve/burst.json

The committed run's bundle, a 224-px ViT of 4 blocks with random weights on a synthetic
3-class JPEG folder (its exits decide little; what matters here is what a request costs)::

    python benchmarks/make_image_folder.py build/img3 --n 480 --classes 3
    exitsearch run --model vit_tiny_patch16_224 -o num_classes=3 -o depth=4 \
        --data build/img3 --budget 50% --head-epochs 1 --head-train-limit 96 --val-size 96 \
        --head-batch-size 32 --n-trials 50 --run build/t224
    exitsearch export build/t224 --config 1
    python benchmarks/bench_serve_burst.py build/t224/export/config-1 --images build/img3 \
        --rate 220 --json-out results/serve/burst.json

One server (its own local Ray, direct ingress, one PyTorch thread) takes a light load first
(``--warm-rate`` for ``--warm-seconds``, as a user's traffic would give it its measurements),
then ``--repeats`` bursts, each after ``--quiet`` seconds without a request (longer than the
target's 5 s, so the model's batch-time fits have expired) of Poisson arrivals at ``--rate`` for
``--seconds``. Per second of each burst: requests sent, answered and refused, client and
server p99, accuracy and the operating points served; and the burst's own totals. Images come
from an image folder (one sub-folder per class, labels in sorted order, as ``exitsearch run
--data`` reads it) or, without ``--images``, from the Fashion-MNIST test set.

Bounded in requests and time. Not collected by pytest.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
from bench_serve import Payload, Served, payloads, send, summarise

from exitsearch._io import atomic_write_json
from exitsearch.distributed.testing import free_port

SUFFIXES = {".jpg", ".jpeg", ".png", ".webp"}


def folder_payloads(root: Path, n: int) -> list[Payload]:
    """Up to ``n`` images of ``root/<class>/...`` as raw-bytes requests, taken round-robin
    over the classes, with their labels (the class folders in sorted order)."""
    classes = sorted(d.name for d in root.iterdir() if d.is_dir() and not d.name.startswith("."))
    if not classes:
        raise SystemExit(f"{root}: no class sub-folders")
    files = [
        sorted(p for p in (root / c).rglob("*") if p.suffix.lower() in SUFFIXES) for c in classes
    ]
    out: list[Payload] = []
    for i in range(max(len(f) for f in files)):
        for label, fs in enumerate(files):
            if i < len(fs) and len(out) < n:
                ctype = "image/png" if fs[i].suffix.lower() == ".png" else "image/jpeg"
                if fs[i].suffix.lower() == ".webp":
                    ctype = "image/webp"
                out.append((fs[i].read_bytes(), ctype, np.array([label])))
    if not out:
        raise SystemExit(f"{root}: no images ({', '.join(sorted(SUFFIXES))})")
    return out


def per_second(records: list[dict[str, Any]], rate: float, seconds: float) -> list[dict[str, Any]]:
    """The burst second by second (by when each request was sent)."""
    rows = []
    for s in range(int(np.ceil(seconds))):
        part = [r for r in records if s <= r["at"] < s + 1]
        if not part:
            continue
        x = summarise(part, rate, 1.0, 0.0)
        rows.append(
            {
                "second": s,
                "sent": x["sent"],
                "answered": x["answered"],
                "refused_503": x["refused_503"],
                "failed": x["failed"],
                "p99_ms": round(x["p99_ms"], 1),
                "server_p99_ms": round(x["server_p99_ms"], 1),
                "accuracy": x["accuracy"],
                "points": x["points"],
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("bundle", type=Path)
    ap.add_argument("--images", type=Path, default=None, help="image folder (default: F-MNIST)")
    ap.add_argument("--n-images", type=int, default=512)
    ap.add_argument("--rate", type=float, required=True, help="requests per second in a burst")
    ap.add_argument("--seconds", type=float, default=8.0, help="per burst")
    ap.add_argument("--repeats", type=int, default=3, help="bursts")
    ap.add_argument("--quiet", type=float, default=6.0, help="seconds without requests before")
    ap.add_argument("--warm-rate", type=float, default=20.0)
    ap.add_argument("--warm-seconds", type=float, default=3.0)
    ap.add_argument("--slo-ms", type=float, default=100.0)
    ap.add_argument("--json-out", type=Path, default=None)
    args = ap.parse_args(argv)

    requests = (
        folder_payloads(args.images, args.n_images) if args.images else payloads(args.n_images, 1)
    )
    flags = ["--slo-ms", f"{args.slo_ms:g}", "--threads", "1"]
    bursts = []
    with tempfile.TemporaryDirectory() as tmp:
        server = Served(args.bundle, free_port(), flags, Path(tmp) / "serve.log")
        try:
            url = server.url + "/predict"
            asyncio.run(send(url, args.warm_rate, args.warm_seconds, requests, 1))
            for rep in range(args.repeats):
                time.sleep(args.quiet)
                records, start = asyncio.run(send(url, args.rate, args.seconds, requests, 10 + rep))
                total = summarise(records, args.rate, args.seconds, start)
                seconds = per_second(records, args.rate, args.seconds)
                bursts.append({"total": total, "per_second": seconds})
                first = seconds[0] if seconds else {}
                print(
                    f"burst {rep + 1}: answered {total['answered']}/{total['sent']}, "
                    f"client p99 {total['p99_ms']:.0f} ms, server p99 "
                    f"{total['server_p99_ms']:.0f} ms; first second: client p99 "
                    f"{first.get('p99_ms', float('nan')):.0f}, server p99 "
                    f"{first.get('server_p99_ms', float('nan')):.0f} ms",
                    flush=True,
                )
        finally:
            server.stop()
    import torch

    doc = {
        "bundle": str(args.bundle),
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "images": str(args.images) if args.images else "fashion-mnist test",
        "rate_per_s": args.rate,
        "seconds": args.seconds,
        "quiet_s": args.quiet,
        "warm": {"rate_per_s": args.warm_rate, "seconds": args.warm_seconds},
        "slo_ms": args.slo_ms,
        "bursts": bursts,
    }
    if args.json_out:
        atomic_write_json(args.json_out, doc)
    else:
        print(json.dumps(doc, indent=1)[:2000])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
