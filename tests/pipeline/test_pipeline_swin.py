"""A Swin backbone through the whole product: ``exitsearch run`` with LGViT's heads, ``export``
with ONNX graphs, and the exported model doing what the search predicted.

A two-stage Swin (7x7 grid of width 16, then 4x4 of width 32) with random weights and 400 real
Fashion-MNIST samples per split: small, but every stage meets a hierarchical backbone.
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

SWIN_ARGS = [
    "--model",
    "swin_tiny_patch4_window7_224",
    *("-o", "img_size=28", "-o", "patch_size=4", "-o", "in_chans=1", "-o", "num_classes=10"),
    *("-o", "embed_dim=16", "-o", "depths=2,2", "-o", "num_heads=1,2", "-o", "window_size=7"),
    *("--limit", "400", "--head-epochs", "1", "--n-trials", "30"),
]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def run_dir(runner: CliRunner, tmp_path_factory: pytest.TempPathFactory) -> Path:
    torch.manual_seed(0)
    run = tmp_path_factory.mktemp("swin") / "run"
    args = ["run", *SWIN_ARGS, "--space", "lgvit", "--budget", "80%", "--run", str(run)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    return run


def test_run_trains_lgvit_heads_sized_for_each_stage(run_dir: Path):
    pareto = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert pareto["front"], "an empty front"
    (profile_path,) = run_dir.glob("cache/profile-*/profile.json")
    blocks = [b["flops"] for b in json.loads(profile_path.read_text())["backbone"]["blocks"]]
    assert blocks[0] == blocks[1] and blocks[2] > blocks[3]  # block 3 merges patches
    with (run_dir / "heads.csv").open() as f:
        rows = [(r["head"], int(r["location"])) for r in csv.DictReader(f) if r["key"] != "final"]
    # LGViT's placement: local heads in the shallow half (stage 1), global ones in the deep half
    assert {head.split("[")[0] for head, _ in rows} == {"lph", "gah"}
    assert all(head.startswith("lph") for head, loc in rows if loc <= 2)
    assert all(head.startswith("gah") for head, loc in rows if loc > 2)


def test_exported_swin_does_what_the_search_predicted(runner: CliRunner, run_dir: Path):
    out = run_dir.parent / "bundle"
    result = runner.invoke(
        app, ["export", str(run_dir), "--out", str(out), "--onnx", "--onnx-exporter", "legacy"]
    )
    assert result.exit_code == 0, result.output
    model = load_bundle(out)
    predicted = model.manifest["predicted"]["val"]
    pareto = json.loads((run_dir / schema.PARETO_JSON).read_text())
    splits = load_splits(DataSpec.from_dict(pareto["data"]), preprocess=model.backbone.preprocess())
    val = splits.val
    transform = model.backbone.input_transform()
    pred = np.full(len(val), -1)
    onnx_pred = np.full(len(val), -1)
    onnx_model = load_onnx_bundle(out, threads=1)
    for idx, x, _ in iterate_batches(val, 64):
        xt = transform(x)
        pred[idx.numpy()] = np.asarray(model(xt).prediction)
        onnx_pred[idx.numpy()] = np.asarray(onnx_model(xt.numpy()).prediction)
    assert float((pred == val.y).mean()) == predicted["accuracy"]
    assert (onnx_pred == pred).mean() >= 0.99  # float rounding may move a threshold tie


def test_bench_times_the_swin_bundle(runner: CliRunner, run_dir: Path, tmp_path: Path):
    bundle = run_dir.parent / "bundle"
    if not bundle.is_dir():
        pytest.skip("needs the exported bundle of the test above")
    report = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(bundle),
            "--batch-size",
            "8",
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--no-stream",
            "--json-out",
            str(report),
        ],
    )
    assert result.exit_code == 0, result.output
    doc = json.loads(report.read_text())
    assert [(r["engine"], r["batch_size"]) for r in doc["rows"]] == [("torch", 8)]
    assert all(r["predicted_speedup"] > 0 and r["parts"] for r in doc["rows"])


@pytest.mark.parametrize("strategy", ["end-to-end", "classifier-wise", "layer-wise", "mevit"])
def test_swin_bundle_fine_tunes(runner: CliRunner, run_dir: Path, tmp_path: Path, strategy: str):
    bundle = run_dir.parent / "bundle"
    if not bundle.is_dir():
        pytest.skip("needs the exported bundle of the test above")
    out = tmp_path / strategy
    args = ["finetune", str(bundle), "--strategy", strategy, "--epochs", "1", "--limit", "400"]
    result = runner.invoke(app, [*args, "--out", str(out), "--no-progress"])
    assert result.exit_code == 0, result.output
    tuned = load_bundle(next(p.parent for p in out.rglob("exitsearch.json")))
    assert tuned.config.exits == load_bundle(bundle).config.exits


def test_lgvit_fine_tuning_refuses_swin_in_one_line(runner: CliRunner, run_dir: Path, tmp_path):
    bundle = run_dir.parent / "bundle"
    if not bundle.is_dir():
        pytest.skip("needs the exported bundle of the test above")
    args = ["finetune", str(bundle), "--strategy", "lgvit", "--epochs", "1", "--limit", "400"]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "lgvit"), "--no-progress"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "changes grid and width" in lines[0], result.output


def test_a_preset_without_weights_is_refused_before_any_work(runner: CliRunner, tmp_path: Path):
    run = tmp_path / "run"
    result = runner.invoke(
        app, ["run", "--model", "fmnist-swin12", "--budget", "50%", "--run", str(run)]
    )
    assert result.exit_code == 2
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and "ships no weights" in lines[0] and "--checkpoint" in lines[0]
    assert not run.exists()
