"""Fine-tuning a bundle's configuration end to end: train, score, re-fit, export, report.

Output folder::

    <out>/
      bundle/               the new bundle (``exitsearch.load(<out>/bundle)``); its train.yaml
                            is the recipe that reruns this training
      report.json           :func:`~exitsearch.finetune.report.finetune_report`
      checkpoint/           the last epoch's weights and optimiser state (resume)
      predictions/          the new weights' cached val/test predictions
      source_predictions/   the source bundle's, on the same data (the before of the report)

A rerun with the same recipe resumes from the checkpoint, or returns the finished result without
training again; a different recipe into a finished folder is refused unless ``overwrite``.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch._io import (
    atomic_write_json,
    atomic_write_text,
    check_output_folder,
    file_sha256,
    read_json,
    sha256_of,
)
from exitsearch.core.config import ExitConfig
from exitsearch.core.task import CLASSIFICATION
from exitsearch.data import DataSpec, DataSplits, load_splits
from exitsearch.errors import BundleError, CacheError, ConfigError
from exitsearch.export import MultiExitModel
from exitsearch.export.bundle import (
    MANIFEST,
    RECIPE_FILE,
    check_replaceable_bundle,
    doc_checksum,
    export_bundle,
    load_bundle,
    read_manifest,
)
from exitsearch.export.points import ExitCosts, OperatingPoint
from exitsearch.finetune.evaluate import (
    cost_model,
    exit_costs_of,
    matched_point,
    refit_operating_points,
)
from exitsearch.finetune.net import MultiExitNet
from exitsearch.finetune.recipe import Recipe, SourceBundle
from exitsearch.finetune.report import finetune_report
from exitsearch.finetune.settings import TrainSettings
from exitsearch.finetune.trainer import train_configuration
from exitsearch.progress import NullProgress, Progress
from exitsearch.search.evaluator import Evaluator
from exitsearch.training.predict import Predictions, predict

__all__ = ["FinetuneResult", "finetune", "make_recipe", "source_predictions"]

BUNDLE_DIR = "bundle"
REPORT_JSON = "report.json"
CHECKPOINT_DIR = "checkpoint"
PREDICTIONS_DIR = "predictions"
SOURCE_PREDICTIONS_DIR = "source_predictions"
_KEY_FILE = "key.json"


@dataclass(frozen=True)
class FinetuneResult:
    """A finished fine-tuning: where it lies and its report (see :func:`finetune_report`)."""

    out_dir: Path
    report: dict[str, Any]

    @property
    def bundle(self) -> Path:
        return self.out_dir / BUNDLE_DIR

    @property
    def strategy(self) -> str:
        return str(self.report["strategy"])


def make_recipe(
    bundle: str | os.PathLike[str],
    strategy: str,
    training: TrainSettings | None = None,
    data: DataSpec | None = None,
    hyperparameters: dict[str, Any] | None = None,
) -> Recipe:
    """The recipe that fine-tunes the bundle at ``bundle`` with ``strategy``.

    ``data`` defaults to the data the bundle's heads were trained on (its manifest's
    ``meta.data``), else Fashion-MNIST.

    Raises:
        BundleError: not a valid bundle.
        ConfigError: unknown strategy or invalid hyperparameters.
    """
    root = Path(bundle).resolve()
    doc = read_manifest(root)
    if data is None:
        meta_data = (doc.get("meta") or {}).get("data")
        data = DataSpec.from_dict(meta_data) if isinstance(meta_data, dict) else DataSpec()
    return Recipe(
        strategy=strategy,
        source=SourceBundle(str(root), doc["manifest_sha256"]),
        training=training or TrainSettings(),
        data=data,
        hyperparameters=hyperparameters or {},
        exit_config=doc["config"],
    )


def _load_source(recipe: Recipe, bundle: str | os.PathLike[str] | None) -> MultiExitModel:
    path = Path(bundle) if bundle is not None else Path(recipe.source.bundle)
    doc = read_manifest(path)
    if doc.get("manifest_sha256") != recipe.source.manifest_sha256:
        raise BundleError(
            f"{path}: not the bundle this recipe was made from (its manifest checksum differs "
            f"from {recipe.source.manifest_sha256[:12]}...)"
        )
    model = load_bundle(path)
    if not model.config.exits:
        raise ConfigError(f"{path}: the configuration has no early exits to fine-tune")
    if model.task.name != CLASSIFICATION:
        raise ConfigError(
            f"{path}: a {model.task.name} bundle; fine-tuning strategies train classification "
            "losses only (its heads were trained with their own loss by `exitsearch run`)"
        )
    return model


def source_predictions(
    net: MultiExitNet,
    splits: DataSplits,
    folder: Path,
    key: str,
    batch_size: int,
    progress: Progress,
) -> Predictions:
    """The (untrained) ``net``'s predictions, cached in ``folder`` under ``key``."""
    key_path = folder / _KEY_FILE
    if key_path.is_file():
        try:
            if read_json(key_path).get("key") == key:
                return Predictions.load(folder)
        except CacheError:
            pass
    preds = predict(net.backbone, net.bank, splits, batch_size=batch_size, progress=progress)
    preds.save(folder)
    atomic_write_json(key_path, {"key": key})
    return preds


def finetune(
    recipe: Recipe,
    out_dir: str | os.PathLike[str],
    *,
    bundle: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    overwrite: bool = False,
    source_cache: str | os.PathLike[str] | None = None,
    device: str | None = None,
) -> FinetuneResult:
    """Run ``recipe`` into ``out_dir`` (layout in the module docstring).

    Args:
        recipe: what to train (:func:`make_recipe`, or :meth:`Recipe.from_yaml`).
        out_dir: the output folder.
        bundle: the source bundle, when it no longer lies where the recipe says (it must
            still be the same bundle: its checksum is checked).
        progress: progress reports (training epochs, predictions).
        overwrite: replace a finished result of another recipe in ``out_dir``.
        source_cache: folder caching the source bundle's predictions (default
            ``<out>/source_predictions``); runs of several strategies on one bundle share it.

    Raises:
        BundleError: the source is missing, altered, or not the recipe's; ``out_dir`` holds the
            result of another recipe (without ``overwrite``).
        ConfigError: see :func:`~exitsearch.finetune.trainer.train_configuration`; also
            ``out_dir`` (or a folder above it) is a file.
        TrainingDivergedError: the loss became non-finite; the last good checkpoint stays.
    """
    progress = progress or NullProgress()
    out = check_output_folder(out_dir, "--out")  # before fine-tuning, not after it
    report_path = out / REPORT_JSON
    if (out / BUNDLE_DIR).exists():
        done = _finished(out, recipe)
        if done is not None and not overwrite:
            progress.log(f"{recipe.strategy}: already fine-tuned in {out}; nothing to do")
            return FinetuneResult(out, done)
        if not overwrite:
            raise BundleError(
                f"{out / BUNDLE_DIR}: already exists from another recipe; choose another "
                "output folder or overwrite it"
            )
        check_replaceable_bundle(out / BUNDLE_DIR)
    model = _load_source(recipe, bundle)
    config = model.config
    net = MultiExitNet.from_heads(model.backbone, model.heads, config)
    strategy = recipe.build_strategy()
    strategy.check(net)  # before any data is read or anything written
    bb = net.backbone
    splits = load_splits(recipe.data, preprocess=bb.preprocess())
    costs = cost_model(bb, config)
    settings = recipe.training
    before = source_predictions(
        net,
        splits,
        Path(source_cache) if source_cache is not None else out / SOURCE_PREDICTIONS_DIR,
        sha256_of(recipe.source.manifest_sha256, splits.fingerprint()),
        settings.eval_batch_size,
        progress,
    )
    log = train_configuration(
        net,
        strategy,
        settings,
        splits,
        out / CHECKPOINT_DIR,
        progress=progress,
        discard_stale=overwrite,
        device=device,
    )
    after = predict(bb, net.bank, splits, batch_size=settings.eval_batch_size, progress=progress)
    after.save(out / PREDICTIONS_DIR)

    budget = Evaluator(before, "val", costs).evaluate(config).mean_flops
    points = refit_operating_points(after, costs, config)
    default = points[matched_point(points, budget, costs)]
    new_config = config.with_thresholds(default.thresholds, default.threshold_mode)
    predicted = {
        split: Evaluator(after, split, costs).evaluate(new_config).to_dict()
        for split in ("val", "test")
    }
    meta = {
        "data": recipe.data.to_dict(),
        "finetune": {
            "strategy": recipe.strategy,
            "hyperparameters": dict(recipe.hyperparameters),
            "training": settings.to_dict(),
            "source": {
                "bundle": recipe.source.bundle,
                "manifest_sha256": recipe.source.manifest_sha256,
            },
            "recipe_identity": recipe.identity,
            "epochs": log.epochs,
            "seconds": log.seconds,
            "notes": log.notes,
        },
        "head_training": (model.manifest or {}).get("meta", {}).get("head_training"),
    }
    report = finetune_report(
        recipe=recipe,
        log=log,
        config=config,
        costs=costs,
        before=before,
        after=after,
        points=points,
        budget=budget,
        default=default,
    )
    # The report first: a bundle in place always has its report next to it.
    atomic_write_json(report_path, report, indent=None)
    _export(out, net, new_config, points, predicted, meta, exit_costs_of(costs, config), recipe)
    return FinetuneResult(out, report)


def _finished(out: Path, recipe: Recipe) -> dict[str, Any] | None:
    """The report of ``out`` if both it and the bundle's own recipe are ``recipe``'s."""
    try:
        done = read_json(out / REPORT_JSON)
        bundled = Recipe.from_yaml(out / BUNDLE_DIR / RECIPE_FILE).identity
    except (CacheError, ConfigError):
        return None
    return done if done.get("recipe_identity") == bundled == recipe.identity else None


def _export(
    out: Path,
    net: MultiExitNet,
    config: ExitConfig,
    points: list[OperatingPoint],
    predicted: dict[str, Any],
    meta: dict[str, Any],
    costs: ExitCosts,
    recipe: Recipe,
) -> Path:
    """Write the bundle next to its destination, put the recipe in, and rename it into place."""
    out.mkdir(parents=True, exist_ok=True)
    tmp_root = Path(tempfile.mkdtemp(prefix=".bundle.", suffix=".tmp", dir=out))
    try:
        tmp = export_bundle(
            tmp_root / BUNDLE_DIR,
            net.backbone,
            net.bank,
            config,
            points,
            predicted,
            meta,
            costs=costs,
        )
        write_recipe(tmp, recipe)
        read_manifest(tmp)  # every checksum holds
        dest = out / BUNDLE_DIR
        if dest.exists():
            check_replaceable_bundle(dest)
            old = out / f".{BUNDLE_DIR}.old-{os.getpid()}"
            os.replace(dest, old)
            os.replace(tmp, dest)
            shutil.rmtree(old, ignore_errors=True)
        else:
            os.replace(tmp, dest)
        return dest
    finally:
        shutil.rmtree(tmp_root, ignore_errors=True)


def write_recipe(bundle: Path, recipe: Recipe) -> None:
    """Replace the bundle's train.yaml with ``recipe`` and update the manifest's checksums.

    ``export_bundle`` writes its classifier-wise stub; until it takes a recipe, the file and
    its two checksums (the file's and the manifest's own) are rewritten here.
    """
    atomic_write_text(bundle / RECIPE_FILE, recipe.to_yaml())
    mpath = bundle / MANIFEST
    doc = json.loads(mpath.read_text(encoding="utf-8"))
    doc["files"][RECIPE_FILE] = file_sha256(bundle / RECIPE_FILE)
    doc["manifest_sha256"] = doc_checksum(doc)
    atomic_write_json(mpath, doc)
