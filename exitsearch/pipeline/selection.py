"""Picking a configuration from a run folder's Pareto front, with everything a bundle needs.

Reads the files :mod:`exitsearch.report.schema` documents: ``pareto.json`` (the front, the
recommended member, the backbone and the head weights' location) and ``placements.json`` (the
operating points of each placement on the front). The head bank is rebuilt from the specs in
``heads.json`` next to ``heads.safetensors`` (:mod:`exitsearch.training.head_training`).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from exitsearch._io import file_sha256, portable_path
from exitsearch._mismatch import state_mismatch
from exitsearch.backbone import Backbone, BackboneSpec, create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.task import CLASSIFICATION
from exitsearch.errors import BundleError, ConfigError
from exitsearch.export.bundle import read_safetensors
from exitsearch.export.points import OperatingPoint
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.pipeline.cache import MANIFEST, StageStore
from exitsearch.report.schema import PARETO_JSON, PARETO_SCHEMA, PLACEMENTS_JSON
from exitsearch.training.head_training import SUMMARY

__all__ = ["RunSelection", "bundle_from_run"]


@dataclass
class RunSelection:
    """One front member of a run with what :func:`~exitsearch.export.export_bundle` takes.

    Attributes:
        config_id: the member's ``id`` in ``pareto.json``.
        backbone: the run's backbone, with its weights.
        heads: the trained heads of the configuration's exits (a subset of the run's bank).
        config: the exit configuration.
        operating_points: the placement's threshold settings from ``placements.json``.
        predicted: ``{"val": ..., "test": ...}`` as the search scored the member.
        meta: run name, data spec, budget, head training settings.
        aux_decoder: PAUMER's auxiliary decoder when the member pauses tokens (the run's own,
            as ``pareto.json`` names it), else None.
        task: what the exits predict (``classification``, ``counting``).
    """

    config_id: int
    backbone: Backbone
    heads: HeadBank
    config: ExitConfig
    operating_points: list[OperatingPoint]
    predicted: dict[str, dict[str, Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)
    aux_decoder: Any = None
    task: str = CLASSIFICATION


def _read(path: Path, what: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{path}: file is missing; {what}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None


def bundle_from_run(run_dir: str | os.PathLike[str], config_id: int | None = None) -> RunSelection:
    """Load front member ``config_id`` (default: the recommended one) of the run at ``run_dir``.

    Raises:
        BundleError: missing or malformed run files, an id that is not on the front (the
            message lists the known ids), no recommendation when no id is given, head weights
            that do not cover the configuration, or backbone weights that differ from the run's.
    """
    run = Path(run_dir)
    ppath = run / PARETO_JSON
    pareto = _read(ppath, f"is {run} a run folder of `exitsearch run`?")
    schema = pareto.get("schema", 1)
    if isinstance(schema, int) and schema > PARETO_SCHEMA:
        raise BundleError(
            f"{ppath}: run schema {schema} is newer than this exitsearch understands "
            f"({PARETO_SCHEMA}); upgrade exitsearch"
        )
    front = pareto.get("front") or []
    ids = [m.get("id") for m in front]
    known = ", ".join(str(i) for i in ids) or "none"
    if config_id is None:
        config_id = pareto.get("recommended")
        if config_id is None:
            raise BundleError(
                f"{ppath}: no configuration is recommended (none met the budget); choose one "
                f"with --config ID (known ids: {known})"
            )
    member = next((m for m in front if m.get("id") == config_id), None)
    if member is None:
        raise BundleError(
            f"{ppath}: configuration {config_id} is not on the front; known ids: {known}"
        )
    try:
        config = ExitConfig.from_dict(member["config"])
        bspec = BackboneSpec.from_dict(pareto["backbone"]["spec"])
        heads_rel = pareto["artifacts"]["heads"]
    except ConfigError as exc:
        raise BundleError(f"{ppath}: configuration {config_id} is invalid ({exc})") from None
    except (KeyError, TypeError) as exc:
        raise BundleError(f"{ppath}: malformed run file (missing {exc})") from None

    points: list[OperatingPoint] = []
    placements_path = run / PLACEMENTS_JSON
    if placements_path.is_file():
        placements = _read(placements_path, "")
        key = member.get("placement") or config.placement_key
        try:
            points = [OperatingPoint.from_dict(p) for p in placements.get(key, [])]
        except (KeyError, TypeError, ValueError) as exc:
            raise BundleError(f"{placements_path}: malformed operating point ({exc})") from None

    backbone = _backbone(bspec, run, pareto["backbone"].get("weights_sha256"), ppath)
    heads, head_training = _heads(run / heads_rel, backbone, config)
    meta = {
        "run": pareto.get("run"),
        "run_dir": portable_path(run),
        "config_id": config_id,
        "recommended": pareto.get("recommended") == config_id,
        "placement": member.get("placement") or config.placement_key,
        "data": pareto.get("data"),
        "classes": pareto.get("classes"),
        "budget": pareto.get("budget"),
        "latency": pareto.get("latency"),  # the table behind the run's milliseconds, if any
        "head_training": head_training,
    }
    predicted = {k: dict(member[k]) for k in ("val", "test") if isinstance(member.get(k), dict)}
    aux = _aux_decoder(run, pareto, ppath, backbone) if config.pause else None
    task = pareto.get("task", CLASSIFICATION)
    return RunSelection(config_id, backbone, heads, config, points, predicted, meta, aux, task)


def _backbone(spec: BackboneSpec, run: Path, sha: str | None, ppath: Path) -> Backbone:
    if spec.checkpoint and not Path(spec.checkpoint).is_file():
        # A checkpoint recorded relative to the run folder (the run was moved).
        local = run / spec.checkpoint
        if local.is_file():
            spec = BackboneSpec(spec.model, dict(spec.overrides), str(local), spec.pretrained)
    backbone = create_backbone(spec)
    if sha and backbone.weights_checksum() != sha:
        raise BundleError(
            f"{ppath}: the backbone weights found now ({spec.checkpoint or spec.model}) differ "
            "from those the run searched with (weights_sha256)"
        )
    return backbone


def _heads(
    weights: Path, backbone: Backbone, config: ExitConfig
) -> tuple[HeadBank, dict[str, Any] | None]:
    """The configuration's heads from the run's bank, and the settings they were trained with."""
    summary_path = weights.parent / SUMMARY
    summary = _read(summary_path, "it lists the specs of the heads in heads.safetensors")
    try:
        specs = [HeadSpec.from_dict(h) for h in summary["heads"]]
    except (KeyError, TypeError, ConfigError) as exc:
        raise BundleError(f"{summary_path}: malformed head list ({exc})") from None
    keys = {s.key for s in specs}
    missing = [s.key for s in config.exits if s.key not in keys]
    if missing:
        raise BundleError(
            f"{summary_path}: no trained head for exit(s) {', '.join(missing)} of the configuration"
        )
    bank = HeadBank(specs, HeadContext.from_backbone(backbone))
    if not weights.is_file():
        raise BundleError(f"{weights}: file is missing (the run's head weights)")
    if (weights.parent / MANIFEST).is_file():
        problem = StageStore(weights.parent.parent).verify(weights.parent)
        if problem is not None:
            raise BundleError(
                f"{weights.parent}: the run's trained heads are damaged ({problem}); rerun "
                "`exitsearch run` to recompute them, then export"
            )
    bank.load(weights)
    return bank.subset([s.key for s in config.exits]).eval(), summary.get("config")


def _aux_decoder(run: Path, pareto: dict[str, Any], ppath: Path, backbone: Backbone) -> Any:
    """The auxiliary decoder the run's ``pareto.json`` names (``pause.aux``), checked."""
    from exitsearch.pausing.pause import AuxDecoder

    try:
        section = pareto["pause"]
        path = run / section["aux"]
        digest = section.get("aux_sha256")
    except (KeyError, TypeError) as exc:
        raise BundleError(
            f"{ppath}: names no auxiliary decoder for the pause configuration ({exc!r})"
        ) from None
    if not path.is_file():
        raise BundleError(f"{path}: file is missing (the run's auxiliary decoder)")
    if digest and file_sha256(path) != digest:
        raise BundleError(f"{path}: checksum differs from the one recorded in {ppath}")
    state = read_safetensors(path)
    if "fc.weight" not in state:
        raise BundleError(f"{path}: not an auxiliary decoder's weights (no fc.weight)")
    classes, dim = state["fc.weight"].shape
    aux = AuxDecoder(int(dim), int(classes))
    try:
        aux.load_state_dict(state, strict=True)
    except RuntimeError:
        raise BundleError(
            f"{path}: does not fit an auxiliary decoder ({state_mismatch(aux, state)})"
        ) from None
    if int(dim) != backbone.embed_dim:
        raise BundleError(
            f"{path}: a decoder of width {dim} for a backbone of {backbone.embed_dim}"
        )
    return aux.eval()
