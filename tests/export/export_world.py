"""The tiny but real pipeline the export tests share: backbone, trained heads, cached predictions.

A 4-block ViT of width 32 on 28 px Fashion-MNIST (16 patches of 7 px), three heads trained
briefly and classifier-wise on 512 real training images, their predictions cached on 512
validation images, FLOPs counted by fvcore: everything the search hands to the export.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from exitsearch._io import atomic_write_json, save_safetensors
from exitsearch.backbone import Backbone, BackboneSpec, create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.data import DataSpec, DataSplits, iterate_batches, load_splits
from exitsearch.export import MultiExitModel, OperatingPoint
from exitsearch.heads import HeadContext, HeadSpec, profile_heads
from exitsearch.profile import UNIT, profile_backbone
from exitsearch.report.schema import PARETO_JSON, PARETO_SCHEMA, PLACEMENTS_JSON
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import pareto_mask
from exitsearch.search.refine import CurvePoint, refine_per_exit, shared_curve
from exitsearch.training import HeadBank, HeadTrainConfig, Predictions, predict, train_heads

TINY = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
}
SPECS = (
    HeadSpec("linear", 1, uncertainty=True),
    HeadSpec("mlp", 2, uncertainty=True),
    HeadSpec("cnn_ignore", 3),
)
DATA = DataSpec(limit=512)
TRAINING = HeadTrainConfig(epochs=3, batch_size=32, lr=3e-3)


@dataclass
class World:
    backbone: Backbone
    splits: DataSplits
    bank: HeadBank
    heads_dir: Path
    predictions: Predictions
    costs: CostModel
    ev: Evaluator

    def model(self, config: ExitConfig, points=()) -> MultiExitModel:  # type: ignore[no-untyped-def]
        heads = [self.bank.head(s.key) for s in config.exits]
        return MultiExitModel(self.backbone, heads, config, points)

    def run_split(
        self, model, batch_size: int, split: str = "val", limit: int | None = None
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:  # type: ignore[no-untyped-def]
        """Exit index, prediction and logits of every sample of ``split`` at ``batch_size``."""
        data = self.splits.get(split)
        if limit is not None:
            data = data.subset(np.arange(min(limit, len(data))))
        n = len(data)
        idx_out = np.full(n, -1, np.int64)
        pred_out = np.full(n, -1, np.int64)
        logits_out = np.zeros((n, self.backbone.num_classes), np.float32)
        transform = self.backbone.input_transform()
        for idx, x, _ in iterate_batches(data, batch_size):
            out = model(transform(x))
            cols = idx.numpy()
            idx_out[cols] = np.asarray(out.exit_index)
            pred_out[cols] = np.asarray(out.prediction)
            logits_out[cols] = np.asarray(out.logits)
        return idx_out, pred_out, logits_out


def build_world(heads_dir: Path) -> World:
    torch.set_num_threads(1)
    torch.manual_seed(0)
    backbone = create_backbone("vit_tiny_patch16_224", **TINY)
    splits = load_splits(DATA)
    bank = train_heads(backbone, splits, list(SPECS), TRAINING, heads_dir).bank.eval()
    predictions = predict(backbone, bank, splits)
    ctx = HeadContext.from_backbone(backbone)
    costs = CostModel(
        profile_backbone(backbone), {k: c.flops for k, c in profile_heads(SPECS, ctx).items()}
    )
    return World(
        backbone, splits, bank, heads_dir, predictions, costs, Evaluator(predictions, "val", costs)
    )


def spread_point(points: list[CurvePoint], ev: Evaluator) -> CurvePoint:
    """The curve point whose samples spread over the most exits (then the most evenly), so
    that a test exercises early exits, compaction and the final exit at once."""

    def score(p: CurvePoint) -> tuple[int, int]:
        counts = np.bincount(ev.exit_index(p.config), minlength=len(p.config.exits) + 1)
        return int((counts >= 0.05 * ev.n).sum()), -int(counts.max())

    return max(points, key=score)


def make_run(world: World, root: Path) -> dict[str, Any]:
    """A run folder as ``exitsearch search`` writes it (exitsearch.report.schema): pareto.json
    with a three-member front (id 1 recommended), placements.json, the run's head weights and
    summary under heads/, the backbone checkpoint. Returns the pareto document."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "heads").mkdir(exist_ok=True)
    for name in ("heads.safetensors", "heads.json"):
        shutil.copy(world.heads_dir / name, root / "heads" / name)
    save_safetensors(root / "backbone.safetensors", world.backbone.model.state_dict())
    base = ExitConfig(SPECS, "confidence", (0.5,) * len(SPECS), "shared")
    curve = shared_curve(world.ev, base)
    keep = pareto_mask([p.accuracy for p in curve], [p.mean_cost for p in curve])
    front_points = sorted(
        (p for p, k in zip(curve, keep, strict=True) if k), key=lambda p: p.mean_cost
    )
    chosen = [front_points[0], front_points[len(front_points) // 2], front_points[-1]]
    test_ev = Evaluator(world.predictions, "test", world.costs)
    bf = world.costs.backbone_flops
    front = []
    for i, p in enumerate(chosen):
        val = world.ev.evaluate(p.config)
        front.append(
            {
                "id": i,
                "config": p.config.to_dict(),
                "placement": p.config.placement_key,
                "val": val.to_dict(),
                "test": test_ev.evaluate(p.config).to_dict(),
                "speedup": val.speedup,
                "recommended": i == 1,
            }
        )
    spec = BackboneSpec(
        model="vit_tiny_patch16_224",
        overrides=dict(TINY),
        checkpoint=str(root / "backbone.safetensors"),
    )
    pareto = {
        "schema": PARETO_SCHEMA,
        "run": "tiny",
        "unit": UNIT,
        "backbone": {
            "spec": spec.to_dict(),
            "weights_sha256": world.backbone.weights_checksum(),
            "flops": bf,
            "val_accuracy": float(world.ev.backbone().accuracy),
            "test_accuracy": float(test_ev.backbone().accuracy),
        },
        "data": DATA.to_dict(),
        "budget": {"text": "100%", "kind": "mean", "flops": float(bf)},
        "artifacts": {
            "heads": "heads/heads.safetensors",
            "predictions": "cache/predictions",
            "profile": "profile.json",
        },
        "front": front,
        "recommended": 1,
    }
    placements = {
        base.placement_key: [
            OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy).to_dict()
            for p in front_points
        ]
    }
    atomic_write_json(root / PARETO_JSON, pareto)
    atomic_write_json(root / PLACEMENTS_JSON, placements)
    return pareto


def _shared(world: World, criterion: str, cut: bool = False) -> ExitConfig:
    base = ExitConfig(SPECS, criterion, (0.5,) * len(SPECS), "shared", cut=cut)
    return spread_point(shared_curve(world.ev, base), world.ev).config


# configurations whose thresholds spread the validation samples over the exits, by criterion
CONFIGS = {
    "confidence": lambda w: _shared(w, "confidence"),
    "entropy": lambda w: _shared(w, "entropy"),
    "patience": lambda w: _shared(w, "patience"),
    "confidence-cut": lambda w: _shared(w, "confidence", cut=True),
    "uncertainty": lambda w: (
        spread_point(
            shared_curve(w.ev, ExitConfig(SPECS[:2], "uncertainty", (0.5, 0.5), "shared")), w.ev
        ).config
    ),
    "entropy-per-exit": lambda w: (
        spread_point(refine_per_exit(w.ev, ExitConfig(SPECS, "entropy", (0.5,) * 3)), w.ev).config
    ),
}
