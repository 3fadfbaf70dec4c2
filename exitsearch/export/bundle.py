"""The exported bundle: one folder that loads into a runnable multi-exit model.

Layout (schema version :data:`BUNDLE_SCHEMA`)::

    <bundle>/
      exitsearch.json        what the model is: backbone spec and weights checksum, the exit
                             configuration (exits, criterion, thresholds, cut, pause), the
                             operating points, FLOPs per exit, predicted accuracy and cost, and
                             the SHA-256 of every other file
      backbone.safetensors   the backbone's weights (the bundle is self-contained)
      heads.safetensors      the exit heads' weights, ``<exit index>.<parameter>``
      aux.safetensors        with a pause configuration only: PAUMER's auxiliary decoder, which
                             chooses the tokens to pause (manifest section ``pause``)
      train.yaml             a training recipe for fine-tuning this configuration
      onnx/                  optional: one ONNX graph per part (:mod:`exitsearch.export.onnx`)

The bundle is written into a temporary folder next to its destination and renamed into place,
so a reader never sees half a bundle. Loading checks every checksum: a missing, altered or
truncated file is a :class:`~exitsearch.errors.BundleError` naming it.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn

from exitsearch._io import (
    atomic_write_json,
    atomic_write_text,
    current_umask,
    file_sha256,
    save_safetensors,
)
from exitsearch._mismatch import state_mismatch, unreadable_safetensors
from exitsearch.backbone import Backbone, BackboneSpec, create_backbone, resolve_spec
from exitsearch.core.config import ExitConfig
from exitsearch.core.task import CLASSIFICATION
from exitsearch.data.preprocess import Preprocess
from exitsearch.errors import BundleError, ConfigError
from exitsearch.export.points import OperatingPoint
from exitsearch.export.runtime import ExitCosts, MultiExitModel
from exitsearch.heads import HeadContext, create_head
from exitsearch.heads.bank import HeadBank
from exitsearch.profile.flops import UNIT

__all__ = [
    "AUX_FILE",
    "BACKBONE_FILE",
    "BUNDLE_SCHEMA",
    "HEADS_FILE",
    "MANIFEST",
    "ONNX_DIR",
    "RECIPE_FILE",
    "check_replaceable_bundle",
    "doc_checksum",
    "export_bundle",
    "load",
    "load_bundle",
    "load_onnx_bundle",
    "read_manifest",
    "read_safetensors",
]

BUNDLE_SCHEMA = 1
MANIFEST = "exitsearch.json"
BACKBONE_FILE = "backbone.safetensors"
HEADS_FILE = "heads.safetensors"
AUX_FILE = "aux.safetensors"
RECIPE_FILE = "train.yaml"
ONNX_DIR = "onnx"
_SELF_CHECKSUM = "manifest_sha256"

HeadsArg = HeadBank | Mapping[str, nn.Module] | Sequence[nn.Module]


def export_bundle(
    out_dir: str | os.PathLike[str],
    backbone: Backbone,
    heads: HeadsArg,
    config: ExitConfig,
    operating_points: Sequence[OperatingPoint] = (),
    predicted: Mapping[str, Mapping[str, Any]] | None = None,
    extra_meta: Mapping[str, Any] | None = None,
    *,
    costs: ExitCosts | None = None,
    onnx: bool = False,
    onnx_exporter: str = "dynamo",
    overwrite: bool = False,
    aux_decoder: nn.Module | None = None,
    task: str | None = None,
) -> Path:
    """Write ``config`` with its heads and backbone as a bundle folder at ``out_dir``.

    Args:
        out_dir: the bundle folder to create.
        backbone: the backbone the heads were trained on.
        heads: the heads by :attr:`HeadSpec.key` (a :class:`HeadBank` or a mapping), or one
            module per exit in exit order.
        config: the exit configuration; its thresholds are the default operating point.
        operating_points: other threshold settings of the same placement (``placements.json``).
        predicted: ``{"val": Evaluation.to_dict(), "test": ...}`` as the search scored it.
        extra_meta: anything else worth keeping (run name, data spec, head training settings
            under ``"head_training"``, budget); JSON-serialisable.
        costs: FLOPs per exit; counted with fvcore when not given.
        onnx: also export every part as an ONNX graph into ``onnx/``.
        onnx_exporter: ``dynamo`` (torch.export based) or ``legacy`` (TorchScript based).
        overwrite: replace an existing bundle at ``out_dir``.
        aux_decoder: PAUMER's auxiliary decoder, required for a configuration with ``pause``
            (:func:`exitsearch.pipeline.selection.bundle_from_run` reads a run's own, as
            ``exitsearch export RUN`` does).
        task: what the exits predict (:mod:`exitsearch.core.task`; default classification).

    Returns:
        The bundle folder.

    Raises:
        BundleError: ``out_dir`` exists (without ``overwrite``), a head is missing, or a pause
            configuration without its auxiliary decoder.
        ConfigError: the configuration does not fit the backbone or the heads, or ONNX export of
            a pause configuration (not supported).
    """
    out = Path(out_dir)
    if out.exists() or out.is_symlink():
        if not overwrite:
            raise BundleError(
                f"{out}: already exists; choose another folder (--out) or replace it (--overwrite)"
            )
        check_replaceable_bundle(out)
    if config.pause:
        if onnx:
            raise ConfigError(
                "ONNX export of a configuration with a pause configuration is not supported "
                "(the graphs have fixed token counts per part); export without --onnx"
            )
        if aux_decoder is None:
            raise BundleError(
                "a configuration with a pause configuration needs PAUMER's auxiliary decoder: "
                "pass aux_decoder (a run folder's member brings it: "
                "exitsearch.pipeline.selection.bundle_from_run)"
            )
    modules = _heads_in_exit_order(heads, config)
    points = list(operating_points)
    own_val = dict((predicted or {}).get("val") or {})
    if not any(p.thresholds == config.thresholds for p in points) and own_val:
        points.append(
            OperatingPoint(
                config.thresholds,
                config.threshold_mode,
                float(own_val["mean_flops"]),
                float(own_val["accuracy"]),
            )
        )
    points.sort(key=lambda p: (p.mean_flops, -p.val_accuracy))
    model = MultiExitModel(
        backbone, modules, config, points, costs, aux_decoder=aux_decoder, task=task
    )
    meta = dict(extra_meta or {})

    out.parent.mkdir(parents=True, exist_ok=True)
    _clean_leftovers(out)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent))
    try:
        # mkdtemp makes the folder 0700; the bundle gets what mkdir would give it (the umask's).
        os.chmod(tmp, 0o777 & ~current_umask())
        save_safetensors(tmp / BACKBONE_FILE, backbone.model.state_dict())
        save_safetensors(
            tmp / HEADS_FILE,
            {f"{k}.{name}": t for k, h in enumerate(modules) for name, t in h.state_dict().items()},
            {"exits": json.dumps([s.key for s in config.exits])},
        )
        if model.aux is not None:
            save_safetensors(tmp / AUX_FILE, model.aux.state_dict())
        atomic_write_text(tmp / RECIPE_FILE, _recipe(config, meta))
        onnx_meta = None
        if onnx:
            from exitsearch.export.onnx import export_onnx

            onnx_meta = export_onnx(model, tmp / ONNX_DIR, exporter=onnx_exporter)
        doc = _manifest(model, backbone, predicted, meta, onnx_meta)
        doc["files"] = {
            p.relative_to(tmp).as_posix(): file_sha256(p)
            for p in sorted(tmp.rglob("*"))
            if p.is_file()
        }
        doc[_SELF_CHECKSUM] = doc_checksum(doc)
        atomic_write_json(tmp / MANIFEST, doc)
        _move_into_place(tmp, out)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return out


def check_replaceable_bundle(path: Path) -> None:
    """Check that ``--overwrite`` may remove ``path``: a bundle exitsearch wrote, nothing more.

    A folder counts as one when its ``exitsearch.json`` is a bundle manifest and every file in
    it is one the manifest lists (or the manifest itself), so a folder of the user's own files,
    a plain file, a link, or a bundle the user added files to is never deleted.

    Raises:
        BundleError: ``path`` is anything else; the message says what was found.
    """
    if path.is_symlink() or not path.is_dir():
        kind = "a link" if path.is_symlink() else "a file"
        raise BundleError(
            f"{path}: is {kind}, not a bundle; --overwrite replaces only a bundle exitsearch "
            "wrote, so move it away or choose another --out"
        )
    try:
        doc = json.loads((path / MANIFEST).read_text(encoding="utf-8"))
        listed = set(doc["files"]) if doc.get("format") == "exitsearch-bundle" else None
    except (OSError, ValueError, KeyError, TypeError):
        listed = None
    if listed is None:
        raise BundleError(
            f"{path}: not an exitsearch bundle (no bundle manifest {MANIFEST}); --overwrite "
            "replaces only a bundle exitsearch wrote, so move it away or choose another --out"
        )
    foreign = sorted(
        p.relative_to(path).as_posix()
        for p in path.rglob("*")
        if (p.is_file() or p.is_symlink())
        and p.relative_to(path).as_posix() not in listed | {MANIFEST}
    )
    if foreign:
        shown = ", ".join(foreign[:5]) + (
            f" and {len(foreign) - 5} more" if len(foreign) > 5 else ""
        )
        raise BundleError(
            f"{path}: holds files exitsearch did not write ({shown}); --overwrite would delete "
            "them, so move them away first or choose another --out"
        )


def _heads_in_exit_order(heads: HeadsArg, config: ExitConfig) -> list[nn.Module]:
    if isinstance(heads, HeadBank):
        heads = dict(zip((s.key for s in heads.specs), heads.heads, strict=True))
    if isinstance(heads, Mapping):
        missing = [s.key for s in config.exits if s.key not in heads]
        if missing:
            raise BundleError(
                f"no trained head for exit(s) {', '.join(missing)}; known: {', '.join(heads)}"
            )
        return [heads[s.key] for s in config.exits]
    return list(heads)


def _manifest(
    model: MultiExitModel,
    backbone: Backbone,
    predicted: Mapping[str, Mapping[str, Any]] | None,
    meta: Mapping[str, Any],
    onnx_meta: Mapping[str, Any] | None,
) -> dict[str, Any]:
    import exitsearch

    spec = resolve_spec(backbone.spec)
    transform = backbone.input_transform()
    config = model.config
    doc: dict[str, Any] = {
        "schema_version": BUNDLE_SCHEMA,
        "format": "exitsearch-bundle",
        "exitsearch_version": exitsearch.__version__,
        "unit": UNIT,
        "backbone": {
            # Architecture only: the weights are in backbone.safetensors, checked by checksum.
            "spec": {"model": spec.model, "overrides": dict(spec.overrides)},
            "requested": backbone.spec.model,
            "weights_sha256": backbone.weights_checksum(),
            "depth": backbone.depth,
            "num_classes": backbone.num_classes,
            # timm's data config: how raw images become input (exitsearch.load(...).predict)
            "preprocess": model.preprocess.to_dict(),
            "input": {
                "img_size": list(transform.img_size),
                "in_chans": transform.in_chans,
                "mean": list(transform.mean),
                "std": list(transform.std),
            },
        },
        **({} if model.task.name == CLASSIFICATION else {"task": model.task.name}),
        **({"classes": list(meta["classes"])} if meta.get("classes") else {}),
        "config": config.to_dict(),
        "exits": [s.to_dict() | {"key": s.key} for s in config.exits],
        "description": config.describe()
        + (
            f" | pause {','.join(f'{k}:{v:g}' for k, v in config.pause.items())}"
            if config.pause
            else ""
        ),
        "operating_points": [p.to_dict() for p in model.operating_points],
        "default_operating_point": model.point_index,
        "costs": model.costs.to_dict(),
        "predicted": {k: dict(v) for k, v in (predicted or {}).items()},
        "meta": dict(meta),
    }
    if onnx_meta is not None:
        doc["onnx"] = dict(onnx_meta)
    if model.aux is not None:
        fc = model.aux.fc  # type: ignore[union-attr]
        doc["pause"] = {
            "mode": "entropy",
            "aux": AUX_FILE,
            "aux_embed_dim": int(fc.in_features),
            "aux_classes": int(fc.out_features),
            "tokens_per_block": model.token_counts(),
        }
    return doc


def _recipe(config: ExitConfig, meta: Mapping[str, Any]) -> str:
    recipe = {
        "strategy": "classifier-wise",
        "backbone": {"weights": BACKBONE_FILE, "frozen": True},
        "heads": {"weights": HEADS_FILE, "exits": [s.key for s in config.exits]},
        "exit_config": config.to_dict(),
        "head_training": dict(meta["head_training"]) if meta.get("head_training") else None,
        "data": dict(meta["data"]) if meta.get("data") else None,
    }
    header = (
        "# Training recipe for fine-tuning this exported configuration (Multi-Exit ViT's\n"
        "# classifier-wise strategy: backbone frozen, each head trained on its own loss).\n"
        "# A stub for now: exitsearch does not yet read it back.\n"
    )
    return header + yaml.safe_dump(recipe, sort_keys=False)


def doc_checksum(doc: Mapping[str, Any]) -> str:
    import hashlib

    body = {k: v for k, v in doc.items() if k != _SELF_CHECKSUM}
    text = json.dumps(body, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _clean_leftovers(out: Path) -> None:
    """Undo what an export killed half-way left next to ``out``: its temporary folder, and a
    previous bundle moved aside by ``--overwrite`` (put back if nothing replaced it)."""
    for tmp in out.parent.glob(f".{out.name}.*.tmp"):
        shutil.rmtree(tmp, ignore_errors=True)
    for old in sorted(out.parent.glob(f".{out.name}.old-*")):
        if not out.exists():
            os.replace(old, out)
        else:
            shutil.rmtree(old, ignore_errors=True)


def _move_into_place(tmp: Path, out: Path) -> None:
    """Rename ``tmp`` onto ``out``; an existing ``out`` is moved aside first, then removed."""
    old = None
    if out.exists():
        old = out.with_name(f".{out.name}.old-{os.getpid()}")
        os.replace(out, old)
    try:
        os.replace(tmp, out)
    except OSError:
        if old is not None:
            os.replace(old, out)
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


# --------------------------------------------------------------------------- loading
def read_manifest(path: str | os.PathLike[str], *, verify: bool = True) -> dict[str, Any]:
    """Read and check ``exitsearch.json`` of the bundle at ``path``.

    With ``verify`` every file the manifest lists must exist and match its SHA-256.

    Raises:
        BundleError: not a bundle folder, missing or malformed manifest, schema newer than
            :data:`BUNDLE_SCHEMA`, a missing or altered file.
    """
    root = Path(path)
    if not root.is_dir():
        raise BundleError.not_a_folder(root)
    mpath = root / MANIFEST
    try:
        doc = json.loads(mpath.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BundleError(f"{mpath}: file is missing; is {root} an exitsearch bundle?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise BundleError(f"{mpath}: not valid JSON ({exc})") from None
    if not isinstance(doc, dict) or "schema_version" not in doc:
        raise BundleError(f"{mpath}: no schema_version; not an exitsearch bundle manifest")
    version = doc["schema_version"]
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise BundleError(f"{mpath}: schema_version must be a positive integer, got {version!r}")
    if version > BUNDLE_SCHEMA:
        raise BundleError(
            f"{mpath}: bundle schema {version} is newer than this exitsearch understands "
            f"({BUNDLE_SCHEMA}); upgrade exitsearch"
        )
    for key in ("backbone", "config", "files"):
        if not isinstance(doc.get(key), dict):
            raise BundleError(f"{mpath}: the {key!r} section is missing or malformed")
    if verify:
        recorded = doc.get(_SELF_CHECKSUM)
        if recorded is not None and recorded != doc_checksum(doc):
            raise BundleError(
                f"{mpath}: contents differ from its recorded checksum (the file was edited or "
                "damaged)"
            )
        for name, digest in doc["files"].items():
            f = root / name
            if not f.is_file():
                raise BundleError(f"{f}: file is missing from the bundle")
            if file_sha256(f) != digest:
                raise BundleError(
                    f"{f}: checksum differs from the one recorded in {MANIFEST} (the file was "
                    "altered or damaged)"
                )
    required = [BACKBONE_FILE, HEADS_FILE]
    if isinstance(doc["config"].get("pause"), dict) and doc["config"]["pause"]:
        required.append(AUX_FILE)
    for name in required:
        if name not in doc["files"]:
            raise BundleError(f"{mpath}: lists no {name}")
    return doc


def load_bundle(
    path: str | os.PathLike[str], device: str | torch.device = "cpu", *, verify: bool = True
) -> MultiExitModel:
    """Load the bundle at ``path`` into a :class:`MultiExitModel` (eval mode, on ``device``).

    Raises:
        BundleError: see :func:`read_manifest`; also weights that do not fit the architecture.
        BackboneError: the backbone architecture cannot be built by this timm.

    Example:
        >>> import exitsearch
        >>> model = exitsearch.load("results/run/export/config-3")  # doctest: +SKIP
        >>> model.set_operating_point("40%")  # doctest: +SKIP
    """
    root = Path(path)
    doc = read_manifest(root, verify=verify)
    mpath = root / MANIFEST
    try:
        bdoc = doc["backbone"]
        spec = BackboneSpec(model=bdoc["spec"]["model"], overrides=dict(bdoc["spec"]["overrides"]))
        config = ExitConfig.from_dict(doc["config"])
        points = [OperatingPoint.from_dict(p) for p in doc.get("operating_points", [])]
        costs = ExitCosts.from_dict(doc["costs"]) if doc.get("costs") else None
    except (KeyError, TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise BundleError(f"{mpath}: invalid configuration ({exc})") from None
        raise BundleError(f"{mpath}: malformed entry ({type(exc).__name__}: {exc})") from None
    backbone = create_backbone(spec)
    _load_state(backbone.model, root / BACKBONE_FILE)
    if backbone.weights_checksum() != bdoc.get("weights_sha256"):
        raise BundleError(
            f"{root / BACKBONE_FILE}: the loaded weights do not match the backbone checksum "
            f"recorded in {MANIFEST}"
        )
    ctx = HeadContext.from_backbone(backbone)
    heads = [create_head(s, ctx) for s in config.exits]
    state = read_safetensors(root / HEADS_FILE)
    for k, (s, head) in enumerate(zip(config.exits, heads, strict=True)):
        sub = {name[len(f"{k}.") :]: t for name, t in state.items() if name.startswith(f"{k}.")}
        try:
            head.load_state_dict(sub, strict=True)
        except RuntimeError:
            raise BundleError(
                f"{root / HEADS_FILE}: weights of exit {k} ({s.key}) do not fit its head "
                f"({state_mismatch(head, sub)})"
            ) from None
    aux = None
    if config.pause:
        aux = _load_aux(root, doc, backbone)
    model = MultiExitModel(
        backbone, heads, config, points, costs, aux_decoder=aux, task=doc.get("task")
    )
    model.preprocess = _preprocess(bdoc, backbone)
    backbone.preprocess_overrides = {  # finetuning and bench read it through the backbone
        k: v for k, v in model.preprocess.to_dict().items() if k != "input_size"
    }
    model.manifest = doc
    model.source = root
    model.classes = _classes(doc, backbone.num_classes)
    return model.to(device).eval()


def _preprocess(bdoc: Mapping[str, Any], backbone: Backbone) -> Preprocess:
    """The bundle's preprocessing; bundles written before it was recorded resized without a
    crop (bilinear) and normalised with the ``input`` section's mean and std."""
    if isinstance(bdoc.get("preprocess"), dict):
        try:
            return Preprocess.from_dict(bdoc["preprocess"])
        except ConfigError as exc:
            raise BundleError(f"malformed preprocessing in the manifest ({exc})") from None
    inp = bdoc.get("input") or {}
    base = backbone.preprocess()
    try:
        return Preprocess(
            base.input_size,
            interpolation="bilinear",
            crop_pct=1.0,
            mean=tuple(float(v) for v in inp.get("mean", base.mean))[: base.channels],
            std=tuple(float(v) for v in inp.get("std", base.std))[: base.channels],
        )
    except (ConfigError, TypeError, ValueError) as exc:
        raise BundleError(f"malformed input section in the manifest ({exc})") from None


def _load_aux(root: Path, doc: Mapping[str, Any], backbone: Backbone) -> nn.Module:
    from exitsearch.pausing.pause import AuxDecoder

    section = doc.get("pause")
    if not isinstance(section, dict):
        raise BundleError(f"{root / MANIFEST}: a pause configuration but no `pause` section")
    try:
        aux = AuxDecoder(int(section["aux_embed_dim"]), int(section["aux_classes"]))
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST}: malformed `pause` section ({exc!r})") from None
    _load_state(aux, root / AUX_FILE)
    if aux.fc.in_features != backbone.embed_dim:
        raise BundleError(f"{root / AUX_FILE}: does not fit the backbone's width")
    return aux.eval()


def load(path: str | os.PathLike[str], device: str | torch.device = "cpu") -> MultiExitModel:
    """``exitsearch.load``: the bundle at ``path`` as a runnable multi-exit model."""
    return load_bundle(path, device)


def read_safetensors(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; an unreadable file is a one-line :class:`BundleError`."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except Exception:  # SafetensorError, OSError
        raise BundleError(
            f"{path}: not a readable safetensors file ({unreadable_safetensors(path)})"
        ) from None


def _load_state(module: nn.Module, path: Path) -> None:
    state = read_safetensors(path)
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError:
        raise BundleError(
            f"{path}: weights do not fit the architecture in {MANIFEST} "
            f"({state_mismatch(module, state)})"
        ) from None


def load_onnx_bundle(
    path: str | os.PathLike[str],
    threads: int | None = None,
    *,
    verify: bool = True,
    shared_threads: bool = False,
) -> Any:
    """The ONNX graphs of the bundle at ``path`` under their controller (``threads`` and
    ``shared_threads`` as :class:`~exitsearch.export.onnx_runtime.OnnxMultiExitModel` takes them).

    Raises:
        BundleError: see :func:`~exitsearch.export.bundle.read_manifest`; also a bundle exported
            without ``onnx``.
    """
    from exitsearch.export.onnx_runtime import OnnxMultiExitModel

    root = Path(path)
    doc = read_manifest(root, verify=verify)
    if not doc.get("onnx"):
        raise BundleError(
            f"{root / MANIFEST}: this bundle has no ONNX graphs; export it again with --onnx"
        )
    try:
        config = ExitConfig.from_dict(doc["config"])
        points = [OperatingPoint.from_dict(p) for p in doc.get("operating_points", [])]
        costs = ExitCosts.from_dict(doc["costs"]) if doc.get("costs") else None
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{root / MANIFEST}: malformed entry ({exc})") from None
    model = OnnxMultiExitModel(
        root / ONNX_DIR,
        doc["onnx"],
        config,
        points,
        costs,
        threads,
        shared_threads,
        task=doc.get("task"),
    )
    model.classes = _classes(doc, int(doc["backbone"]["num_classes"]))
    return model


def _classes(doc: Mapping[str, Any], num_classes: int) -> list[str] | None:
    """The class names of the manifest, label order (None when it records none, or not one
    per output: a bundle of a run before they were recorded, a counting task).

    Raises:
        BundleError: ``classes`` is not a list of strings.
    """
    names = doc.get("classes")
    if names is None:
        return None
    if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
        raise BundleError(f"{MANIFEST}: 'classes' must be a list of class names")
    return names if len(names) == num_classes else None
