"""``exitsearch pause ...`` end to end on a tiny ViT and 48 real images per split."""

from __future__ import annotations

import json

import pytest
from exitsearch_cli.pause import app
from typer.testing import CliRunner

from exitsearch._io import read_json
from exitsearch.pausing import load_paumer

runner = CliRunner()
TINY = [
    "--model",
    "vit_tiny_patch16_224",
    "-o",
    "img_size=28",
    "-o",
    "patch_size=4",
    "-o",
    "in_chans=1",
    "-o",
    "num_classes=10",
    "-o",
    "embed_dim=32",
    "-o",
    "depth=8",
    "-o",
    "num_heads=2",
]
QUICK = ["--limit", "48", "--epochs", "1", "--batch-size", "24", "--threads", "1"]


def _ok(args: list[str]) -> str:
    res = runner.invoke(app, args)
    assert res.exit_code == 0, res.output
    return res.output


@pytest.mark.parametrize("command", [[], ["train"], ["evaluate"], ["report"]])
def test_help(command):
    assert "Usage" in _ok([*command, "--help"])


def test_train_evaluate_report(tmp_path, fmnist):
    base, ent, rep = tmp_path / "base", tmp_path / "entropy", tmp_path / "report"
    seg = ["--task", "segmentation", "--decoder-depth", "1"]
    _ok(["train", "--out", str(base), "--mode", "none", *seg, *TINY, *QUICK])
    out = _ok(["train", "--out", str(ent), "--init-from", str(base), *seg, *TINY, *QUICK])
    assert "validation mIoU" in out
    meta = read_json(ent / "paumer.json")
    assert meta["init"] == {"paumer": str(base)} and meta["mode"] == "entropy"
    assert meta["data"]["limit"] == 48 and load_paumer(ent).spec.task == "segmentation"

    res = runner.invoke(
        app,
        [
            "evaluate",
            str(ent),
            "--config",
            "3:0.2",
            "-c",
            "2:0.2,5:0.4",
            "--json",
            "--repeats",
            "2",
            "--warmup",
            "1",
        ],
    )
    assert res.exit_code == 0, res.output
    points = json.loads(res.output)
    assert [p["pause"] for p in points] == ["", "3:0.2", "2:0.2,5:0.4"]
    assert points[2]["info"]["tokens"] == [50, 50, 40, 40, 40, 20, 20, 20]
    assert points[0]["flops"] > points[1]["flops"] > points[2]["flops"]

    out = _ok(
        [
            "report",
            "--entropy",
            str(ent),
            "--baseline",
            str(base),
            "--out",
            str(rep),
            "--repeats",
            "2",
            "--warmup",
            "1",
            "--threads",
            "1",
            "--clock",
            "cpu",
            "--add-config",
            "3:0.8",
        ]
    )
    doc = read_json(rep / "paumer_report.json")
    assert doc["settings"]["clock"] == "cpu"
    assert all(p["info"]["images_per_s_cpu"] == p["images_per_s"] for p in doc["points"])
    assert all(p["info"]["images_per_s_wall"] > 0 for p in doc["points"])
    assert len(doc["points"]) == 1 + 15  # the baseline, then no pausing, Table 1 and 3:0.8
    assert doc["settings"]["beyond_table1"] == ["3:0.8"]
    assert [p["info"]["table1"] for p in doc["points"][-2:]] == [True, False]
    assert doc["settings"]["configs"][-2] == "3:0.4,5:0.24,7:0.144"
    assert "PAUMER (entropy)" in doc["summary"] and (rep / "paumer_report.png").is_file()
    assert "drop against the baseline" in out


def test_errors_are_one_line_with_status_2(tmp_path):
    res = runner.invoke(app, ["evaluate", str(tmp_path), "--config", "3:x"])
    assert res.exit_code == 2
    assert "error:" in res.output and "layer:fraction" in res.output
    res = runner.invoke(app, ["train", "--out", str(tmp_path), "--task", "detection"])
    assert res.exit_code == 2 and "unknown task 'detection'" in res.output
    res = runner.invoke(app, ["report", "--out", str(tmp_path)])
    assert res.exit_code == 2 and "at least one of" in res.output
