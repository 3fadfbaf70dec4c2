"""Latency tables as files: measure on the target device, search on a workstation.

``exitsearch profile MODEL --latency --out TABLE.json`` measures, on the machine it runs on, the
backbone's parts and every candidate head of a search space at one batch size, and writes them
with what they describe (architecture, input size, device, threads, engine, library versions).
``exitsearch run --latency-table TABLE.json`` then prices configurations in milliseconds of that
device instead of measuring where it runs. A table of another model, input size or search space
is refused with a message that says what differs.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch.device import environment
from exitsearch.errors import ConfigError
from exitsearch.profile.latency import LatencyTable

__all__ = ["TABLE_FORMAT", "TABLE_SCHEMA", "DeviceTable", "device_table", "read_table"]

TABLE_FORMAT = "exitsearch-latency-table"
TABLE_SCHEMA = 1


@dataclass(frozen=True)
class DeviceTable:
    """A latency table of one device.

    Attributes:
        architecture: the backbone's architecture (:class:`BackboneSpec` as a dict, without
            weights): what the timings depend on.
        input_size: ``(C, H, W)`` of the inputs timed.
        backbone: median milliseconds per batch of the backbone's parts and whole forward.
        heads_ms_per_batch: median milliseconds per batch of every candidate head, by key.
        environment: machine, threads, engine and library versions.
    """

    architecture: dict[str, Any]
    input_size: tuple[int, int, int]
    backbone: LatencyTable
    heads_ms_per_batch: dict[str, float]
    environment: dict[str, Any]

    def heads_ms_per_sample(self) -> dict[str, float]:
        return {k: v / self.backbone.batch_size for k, v in self.heads_ms_per_batch.items()}

    def to_json(self) -> dict[str, Any]:
        return {
            "format": TABLE_FORMAT,
            "schema_version": TABLE_SCHEMA,
            "architecture": self.architecture,
            "input_size": list(self.input_size),
            "environment": self.environment,
            "backbone": self.backbone.to_json(),
            "heads_ms_per_batch": self.heads_ms_per_batch,
        }

    def check(
        self, architecture: Mapping[str, Any], input_size: Sequence[int], heads: Sequence[str]
    ) -> None:
        """Raise :class:`ConfigError` unless this table describes that model and those heads."""
        if tuple(input_size) != self.input_size:
            raise ConfigError(
                f"the latency table was measured at input size {'x'.join(map(str, self.input_size))}, "
                f"this run's model takes {'x'.join(map(str, input_size))}; measure a table "
                "for this model"
            )
        # compared as JSON holds them: per-stage overrides (Swin's depths) are lists there
        ours = json.loads(json.dumps(dict(architecture)))
        theirs = json.loads(json.dumps(self.architecture))
        if ours != theirs:
            keys = sorted(k for k in set(ours) | set(theirs) if ours.get(k) != theirs.get(k))
            k = keys[0]
            raise ConfigError(
                f"the latency table is of another model: {k} is {theirs.get(k)!r} there and "
                f"{ours.get(k)!r} here; measure a table for this model"
            )
        missing = [h for h in heads if h not in self.heads_ms_per_batch]
        if missing:
            raise ConfigError(
                f"the latency table lacks {len(missing)} of this run's {len(heads)} candidate "
                f"heads (e.g. {missing[0]}); measure it with the run's --space"
            )


def device_table(
    backbone: Any,
    architecture: Mapping[str, Any],
    table: LatencyTable,
    heads_ms_per_batch: Mapping[str, float],
    engine: str = "torch",
) -> DeviceTable:
    """The table of this device: ``backbone``'s parts and the heads' timings as ``engine``
    ran them (measured by :func:`exitsearch.export.timing.measure_in_runtime`), with what
    they describe."""
    from exitsearch import __version__

    c, h, w = backbone.preprocess().input_size
    env: dict[str, Any] = {**environment(), "exitsearch": __version__, "engine": engine}
    if engine == "onnx":
        import onnxruntime

        env["onnxruntime"] = onnxruntime.__version__
    return DeviceTable(
        architecture=dict(architecture),
        input_size=(int(c), int(h), int(w)),
        backbone=table,
        heads_ms_per_batch=dict(heads_ms_per_batch),
        environment={
            **env,
            "device": table.device,
            "device_name": table.device_name,
            "threads": table.threads,
        },
    )


def read_table(path: str | os.PathLike[str]) -> DeviceTable:
    """Read a latency table file.

    Raises:
        ConfigError: not found, not JSON, not a latency table, a newer schema, or malformed.
    """
    from exitsearch._io import read_json

    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"latency table {p} not found")
    try:
        doc = read_json(p)
    except (ValueError, OSError) as exc:
        raise ConfigError(f"latency table {p} is not readable JSON ({exc})") from None
    if not isinstance(doc, dict) or doc.get("format") != TABLE_FORMAT:
        raise ConfigError(
            f"{p} is not a latency table (write one with `exitsearch profile MODEL --latency "
            "--out TABLE.json`)"
        )
    version = doc.get("schema_version")
    if not isinstance(version, int) or version > TABLE_SCHEMA:
        raise ConfigError(
            f"latency table {p} has schema {version!r}; this exitsearch reads up to {TABLE_SCHEMA}"
        )
    try:
        return DeviceTable(
            architecture=dict(doc["architecture"]),
            input_size=tuple(int(v) for v in doc["input_size"]),  # type: ignore[arg-type]
            backbone=LatencyTable.from_json(doc["backbone"]),
            heads_ms_per_batch={str(k): float(v) for k, v in doc["heads_ms_per_batch"].items()},
            environment=dict(doc.get("environment", {})),
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise ConfigError(f"latency table {p} is malformed ({type(exc).__name__}: {exc})") from None
