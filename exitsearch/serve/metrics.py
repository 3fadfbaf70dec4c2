"""The server's metrics, in Prometheus' text exposition format (version 0.0.4).

Every replica counts into its own :class:`Metrics`; a snapshot is a plain dictionary, so the
snapshots of all replicas merge (:func:`merge`) into what ``/metrics`` shows: counters and
histograms summed over replicas, gauges labelled by replica.
"""

from __future__ import annotations

import bisect
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any

__all__ = ["CONTENT_TYPE", "LATENCY_BUCKETS", "Metrics", "Reports", "merge", "render"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
# Seconds: from a sub-millisecond answer on an idle server to a second of queueing
LATENCY_BUCKETS = (
    0.001,
    0.0025,
    0.005,
    0.0075,
    0.01,
    0.015,
    0.02,
    0.03,
    0.05,
    0.075,
    0.1,
    0.15,
    0.2,
    0.3,
    0.5,
    0.75,
    1.0,
    2.5,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)

_HELP = {
    "exitsearch_requests_total": (
        "counter",
        "Prediction requests answered, by HTTP status (499: the client left before its answer).",
    ),
    "exitsearch_images_total": ("counter", "Images answered."),
    "exitsearch_exits_total": ("counter", "Images that left at each exit (block = after block)."),
    "exitsearch_operating_point_images_total": (
        "counter",
        "Images answered at each operating point.",
    ),
    "exitsearch_shed_total": (
        "counter",
        "Requests refused to hold the latency target (503; 413: more images than fit alone).",
    ),
    "exitsearch_point_switches_total": (
        "counter",
        "Operating point changes by the latency target.",
    ),
    "exitsearch_request_latency_seconds": (
        "histogram",
        "Server-side latency of a prediction request, from arrival at the replica to answer.",
    ),
    "exitsearch_batch_size": ("histogram", "Images per model batch (dynamic batching)."),
    "exitsearch_replica_cpu_seconds_total": (
        "counter",
        "CPU time of the replicas' processes (every thread; loading included).",
    ),
    "exitsearch_operating_point": ("gauge", "Operating point in use (-1: none or backbone)."),
    "exitsearch_queue_depth": ("gauge", "Images waiting for or in a model batch."),
    "exitsearch_in_flight": ("gauge", "Prediction requests being answered."),
    "exitsearch_draining": ("gauge", "1 while the server stops: new requests get 503."),
    "exitsearch_gc_frozen_objects": (
        "gauge",
        "Objects the replica moved out of the garbage collector's reach after loading.",
    ),
}


class Metrics:
    """One replica's counters, histograms and gauges."""

    def __init__(self) -> None:
        self.counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        self.histograms: dict[str, tuple[tuple[float, ...], list[int], float]] = {
            "exitsearch_request_latency_seconds": (
                LATENCY_BUCKETS,
                [0] * len(LATENCY_BUCKETS),
                0.0,
            ),
            "exitsearch_batch_size": (
                tuple(float(b) for b in BATCH_BUCKETS),
                [0] * len(BATCH_BUCKETS),
                0.0,
            ),
        }
        self._counts: dict[str, int] = {name: 0 for name in self.histograms}
        self.gauges: dict[str, float] = {}

    def inc(self, name: str, value: float = 1.0, **labels: Any) -> None:
        key = (name, tuple(sorted((k, str(v)) for k, v in labels.items())))
        self.counters[key] = self.counters.get(key, 0.0) + value

    def observe(self, name: str, value: float) -> None:
        bounds, counts, total = self.histograms[name]
        i = bisect.bisect_left(bounds, value)
        if i < len(counts):
            counts[i] += 1
        self.histograms[name] = (bounds, counts, total + value)
        self._counts[name] += 1

    def set(self, name: str, value: float) -> None:
        self.gauges[name] = float(value)

    def snapshot(self) -> dict[str, Any]:
        """A JSON-able copy (what a replica reports)."""
        return {
            "counters": _counter_rows(self.counters),
            "histograms": {
                n: {"bounds": list(b), "counts": list(c), "sum": s, "count": self._counts[n]}
                for n, (b, c, s) in self.histograms.items()
            },
            "gauges": dict(self.gauges),
        }


def _counter_rows(counters: Mapping[tuple[str, Any], float]) -> list[list[Any]]:
    """Counters keyed by ``(name, labels)`` as a snapshot lists them (JSON-able rows)."""
    return [[n, [list(p) for p in labels], v] for (n, labels), v in counters.items()]


def merge(snapshots: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Sum the snapshots of several replicas (by replica id); gauges keep a replica label."""
    counters: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    histograms: dict[str, dict[str, Any]] = {}
    gauges: dict[tuple[str, str], float] = {}
    for replica, snap in sorted(snapshots.items()):
        for name, labels, value in snap["counters"]:
            key = (name, tuple((str(k), str(v)) for k, v in labels))
            counters[key] = counters.get(key, 0.0) + value
        for name, h in snap["histograms"].items():
            acc = histograms.setdefault(
                name,
                {"bounds": h["bounds"], "counts": [0] * len(h["counts"]), "sum": 0.0, "count": 0},
            )
            acc["counts"] = [a + b for a, b in zip(acc["counts"], h["counts"], strict=True)]
            acc["sum"] += h["sum"]
            acc["count"] += h["count"]
        for name, value in snap["gauges"].items():
            gauges[(name, replica)] = value
    return {"counters": counters, "histograms": histograms, "gauges": gauges}


class Reports:
    """The replicas' latest snapshots, as the server keeps them (one per replica id).

    A replica that stops reporting (stopped, replaced by an update, scaled down) leaves the
    gauges after ``stale_s`` (its queue and operating point are no longer anybody's) while its
    counts stay in the sums, so that a counter never goes down; after ``fold_s`` its counts join
    one total of the replicas gone, so that a server that lives through many replicas keeps a
    bounded number of them. A replica silent for a while (a long batch) and heard from again is
    live again, counted once (after ``fold_s`` it would count twice, but a replica silent that
    long has failed Ray Serve's health checks and been replaced).
    """

    GONE = "(replicas gone)"  # the id of that total: it has no gauges, so it is never shown

    def __init__(
        self, stale_s: float = 30.0, fold_s: float = 600.0, clock: Callable[[], float] | None = None
    ) -> None:
        self.stale_s, self.fold_s = stale_s, fold_s
        self._clock = clock or time.monotonic
        self._snapshots: dict[str, dict[str, Any]] = {}
        self._heard: dict[str, float] = {}
        self._gone: dict[str, Any] | None = None

    def put(self, replica: str, snapshot: dict[str, Any]) -> None:
        self._snapshots[replica] = snapshot
        self._heard[replica] = self._clock()

    def live(self) -> dict[str, dict[str, Any]]:
        """The snapshots of the replicas heard from within ``stale_s``."""
        self._fold()
        now = self._clock()
        return {r: s for r, s in self._snapshots.items() if now - self._heard[r] <= self.stale_s}

    def report(self) -> dict[str, dict[str, Any]]:
        """What ``/metrics`` sums (:func:`merge`): every replica's counts, live ones' gauges."""
        self._fold()
        now = self._clock()
        out = {
            r: s if now - self._heard[r] <= self.stale_s else {**s, "gauges": {}}
            for r, s in self._snapshots.items()
        }
        if self._gone is not None:
            out[self.GONE] = self._gone
        return out

    def _fold(self) -> None:
        now = self._clock()
        for replica in [r for r, t in self._heard.items() if now - t > self.fold_s]:
            snapshot = self._snapshots.pop(replica)
            del self._heard[replica]
            parts = {"a": snapshot} if self._gone is None else {"a": self._gone, "b": snapshot}
            merged = merge(parts)
            self._gone = {
                "counters": _counter_rows(merged["counters"]),
                "histograms": merged["histograms"],
                "gauges": {},
            }


def render(merged: Mapping[str, Any]) -> str:
    """The text exposition of :func:`merge`'s result."""
    lines: list[str] = []
    by_name: dict[str, list[str]] = {}

    def head(name: str) -> list[str]:
        if name not in by_name:
            kind, text = _HELP.get(name, ("untyped", name))
            by_name[name] = [f"# HELP {name} {text}", f"# TYPE {name} {kind}"]
        return by_name[name]

    for (name, labels), value in sorted(merged["counters"].items()):
        head(name).append(f"{name}{_labels(labels)} {_num(value)}")
    for name, h in sorted(merged["histograms"].items()):
        out, cumulative = head(name), 0
        for bound, count in zip(h["bounds"], h["counts"], strict=True):
            cumulative += count
            out.append(f'{name}_bucket{{le="{float(bound)!r}"}} {cumulative}')
        out.append(f'{name}_bucket{{le="+Inf"}} {h["count"]}')
        out.append(f"{name}_sum {_num(h['sum'])}")
        out.append(f"{name}_count {h['count']}")
    for (name, replica), value in sorted(merged["gauges"].items()):
        head(name).append(f"{name}{_labels((('replica', replica),))} {_num(value)}")
    for name in sorted(by_name):
        lines.extend(by_name[name])
    return "\n".join(lines) + "\n"


def _labels(pairs: Iterable[tuple[str, str]]) -> str:
    pairs = list(pairs)
    if not pairs:
        return ""
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in pairs)
    return "{" + body + "}"


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _num(value: float) -> str:
    return repr(int(value)) if float(value).is_integer() else repr(float(value))
