"""The counting task through the whole product: ``exitsearch run`` reports the MAE with its
intervals, the exported model (PyTorch and ONNX) counts exactly as the search predicted, bench
reports the MAE, and what does not apply is refused in one line.

A 4-block ViT with random weights on 400 generated canvases per split: small, but every stage
meets a regression task.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from exitsearch_cli.main import app
from typer.testing import CliRunner

from exitsearch.data import FASHION_MNIST_DIR, DataSpec, iterate_batches, load_splits
from exitsearch.export import load_bundle
from exitsearch.export.bundle import load_onnx_bundle
from exitsearch.report import schema

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"),
]

MODEL = [
    "--model",
    "vit_tiny_patch16_224",
    *("-o", "img_size=56", "-o", "patch_size=8", "-o", "in_chans=1", "-o", "num_classes=2"),
    *("-o", "embed_dim=32", "-o", "depth=4", "-o", "num_heads=2"),
]
DATA = ["--data", "fashion-mnist-count", "--limit", "400"]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def run_dir(runner: CliRunner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("count") / "run"
    args = ["run", *MODEL, *DATA, "--head-epochs", "1", "--n-trials", "30", "--budget", "70%"]
    result = runner.invoke(app, [*args, "--run", str(run)])
    assert result.exit_code == 0, result.output
    assert "MAE" in result.output and "accuracy" not in result.output.split("Pareto front")[1]
    return run


def _mae_of(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.abs(pred.astype(np.int64) - y).mean())


def test_the_report_speaks_mae(run_dir: Path):
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert doc["task"] == "counting" and doc["quality"] == "MAE"
    assert doc["front"]
    for m in doc["front"]:
        for split in ("val", "test"):
            part = m[split]
            assert part["mae"] == pytest.approx(-part["accuracy"])
            assert part["mae_low"] <= part["mae"] <= part["mae_high"]
        assert m["config"]["criterion"] in ("confidence", "uncertainty", "patience")
    names = [b["name"] for b in doc["baselines"]]
    assert "anytime" in names
    with (run_dir / schema.PARETO_CSV).open() as f:
        rows = list(csv.DictReader(f))
    assert float(rows[0]["val_mae"]) == pytest.approx(doc["front"][0]["val"]["mae"])
    with (run_dir / schema.HEADS_CSV).open() as f:
        heads = list(csv.DictReader(f))
    assert "val_mae" in heads[0] and "val_accuracy" not in heads[0]
    # every exit predicts its own uncertainty: no MEViT predictor was trained
    (summary,) = run_dir.glob("cache/heads-*/heads.json")
    assert not any(h.get("uncertainty") for h in json.loads(summary.read_text())["heads"])


def test_backbone_mae_is_the_mae_of_its_counts(run_dir: Path):
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    model = load_bundle(_export(run_dir, "bundle-check", onnx=False))
    splits = load_splits(DataSpec.from_dict(doc["data"]), preprocess=model.backbone.preprocess())
    transform = model.backbone.input_transform()
    counts = []
    with torch.no_grad():
        for _, x, _ in iterate_batches(splits.val, 100):
            mu = model.backbone(transform(x))[:, 0]
            counts.append(mu.round().clamp(min=0).long().numpy())
    assert _mae_of(np.concatenate(counts), splits.val.y) == pytest.approx(
        doc["backbone"]["val_mae"], abs=1e-12
    )


def _export(run_dir: Path, name: str, onnx: bool = True) -> Path:
    out = run_dir.parent / name
    if not out.is_dir():
        args = ["export", str(run_dir), "--out", str(out)]
        args += ["--onnx", "--onnx-exporter", "legacy"] if onnx else []
        result = CliRunner().invoke(app, args)
        assert result.exit_code == 0, result.output
        assert "MAE" in result.output
    return out


def test_exported_counter_counts_as_predicted(run_dir: Path):
    out = _export(run_dir, "bundle")
    model = load_bundle(out)
    assert model.task.name == "counting"
    predicted = model.manifest["predicted"]["val"]
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    splits = load_splits(DataSpec.from_dict(doc["data"]), preprocess=model.backbone.preprocess())
    val = splits.val
    transform = model.backbone.input_transform()
    pred = np.full(len(val), -1)
    onnx_pred = np.full(len(val), -1)
    onnx_model = load_onnx_bundle(out, threads=1)
    for idx, x, _ in iterate_batches(val, 64):
        xt = transform(x)
        pred[idx.numpy()] = np.asarray(model(xt).prediction)
        onnx_pred[idx.numpy()] = np.asarray(onnx_model(xt.numpy()).prediction)
    assert _mae_of(pred, val.y) == predicted["mae"]
    assert (onnx_pred == pred).mean() >= 0.99  # float rounding may move a threshold tie


def test_bench_reports_the_mae(runner: CliRunner, run_dir: Path, tmp_path: Path):
    out = _export(run_dir, "bundle")
    report = tmp_path / "bench.json"
    args = ["bench", str(out), "--batch-size", "8", "--repeats", "2", "--warmup", "1"]
    result = runner.invoke(app, [*args, "--no-stream", "--json-out", str(report)])
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert doc["quality"] == "MAE" and "MAE" in result.output
    (row,) = doc["rows"]
    assert row["accuracy"] >= 0 and row["backbone_accuracy"] >= 0


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1, result.output
    return lines[0]


def test_fine_tuning_a_counting_bundle_is_refused(runner: CliRunner, run_dir: Path, tmp_path):
    out = _export(run_dir, "bundle")
    args = ["finetune", str(out), "--strategy", "end-to-end", "--out", str(tmp_path / "ft")]
    line = _one_line_error(runner.invoke(app, [*args, "--no-progress"]))
    assert "counting bundle" in line


def test_entropy_only_space_is_refused(runner: CliRunner, tmp_path: Path):
    space = tmp_path / "space.yaml"
    space.write_text("heads: {linear: {}}\ncriteria: [entropy]\nuncertainty: false\n")
    args = ["run", *MODEL, *DATA, "--space", str(space), "--budget", "70%"]
    line = _one_line_error(runner.invoke(app, [*args, "--run", str(tmp_path / "run")]))
    assert "entropy" in line and "counting" in line


def test_a_crop_is_refused_for_counting(runner: CliRunner, tmp_path: Path):
    args = ["backbone", "train", *MODEL, *DATA, "--augment", "crop", "--epochs", "1"]
    line = _one_line_error(runner.invoke(app, [*args, "--out", str(tmp_path / "bb")]))
    assert "crop" in line and "--augment flip" in line


def test_serving_answers_a_count_with_its_nearest_counts(run_dir: Path):
    from PIL import Image

    import exitsearch
    from exitsearch.serve import ServingModel

    out = _export(run_dir, "bundle")
    engine = ServingModel(exitsearch.load(out))
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    val = load_splits(DataSpec.from_dict(doc["data"])).val
    images = [Image.fromarray(val.x[i, 0]) for i in range(16)]
    answers = engine.infer(engine.pixels(images), None, [3] * 16)
    reference = exitsearch.load(out).predict(images)
    assert [a.label for a in answers] == reference.prediction.tolist()
    assert [a.exit for a in answers] == reference.exit_index.tolist()
    for a in answers:
        counts = [c for c, _ in a.top]
        assert counts[0] == a.label and len(set(counts)) == 3 and min(counts) >= 0
        assert all(abs(c - a.label) <= 2 for c in counts)
        assert 0 <= a.top[0][1] <= 1 and a.top[0][1] >= a.top[-1][1]
