"""``exitsearch pause search``: the pause search from the command line, added to the report."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from exitsearch_cli.main import app
from typer.testing import CliRunner

from exitsearch.backbone import create_backbone
from exitsearch.data import DataSpec
from exitsearch.pausing import PauseConfig, ReportSeries, build_paumer, run_paumer_report
from exitsearch.pausing.report import (
    REPORT_CSV,
    REPORT_JSON,
    REPORT_PNG,
    ReportPoint,
    matched_speed,
)

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

DATA = DataSpec(limit=48)


@pytest.fixture(scope="module")
def models(tmp_path_factory, fmnist) -> Path:  # type: ignore[no-untyped-def]
    from pause_world import PAUSE_TINY

    root = tmp_path_factory.mktemp("pause-search")
    for name, mode, seed in (("entropy", "entropy", 0), ("random", "random", 1)):
        torch.manual_seed(seed)
        model = build_paumer(
            create_backbone("vit_tiny_patch16_224", **PAUSE_TINY), "segmentation", {"depth": 1}
        )
        model.save(root / name, {"data": DATA.to_dict(), "mode": mode, "layer_range": [2, 4]})
    # a small report to add the front to: one configuration besides no pausing, one round
    run_paumer_report(
        [
            ReportSeries("PAUMER (entropy)", str(root / "entropy"), "entropy"),
            ReportSeries("random pausing", str(root / "random"), "random"),
        ],
        None,
        DATA,
        root / "report",
        configs=[PauseConfig.parse("3:0.4")],
        repeats=1,
        warmup=0,
        clock="cpu",
    )
    return root


def test_search_adds_its_front_to_the_report(models):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    args = ["pause", "search", str(models / "entropy"), "--task", "segmentation"]
    args += ["--n-trials", "6", "--population", "3", "--layers", "2,3", "--taus", "0,0.5"]
    args += ["--budget", "95%", "--report", str(models / "report"), "--threads", "1"]
    result = runner.invoke(app, args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "searched front" in result.stdout and "matched images/s" in result.stdout
    search = json.loads((models / "report" / "paumer_search.json").read_text())
    assert search["metric"] == "mIoU" and search["front"] and len(search["trials"]) == 6
    assert all(p["flops"] <= search["budget_flops"] for p in search["front"])
    doc = json.loads((models / "report" / REPORT_JSON).read_text())
    searched = [p for p in doc["points"] if p["series"] == "searched front (entropy)"]
    assert sorted(p["pause"] for p in searched) == sorted(p["pause"] for p in search["front"])
    # scored again in the report's own pass: the same metric as the search found
    for p in searched:
        assert p["metric"] == doc["settings"]["searched"]["search_metric"][p["pause"]]
        assert p["images_per_s"] > 0
    # the report's other series are still there, timed in the same rounds
    assert {p["series"] for p in doc["points"]} >= {"PAUMER (entropy)", "random pausing"}
    assert doc["settings"]["configs"] == ["3:0.4"]
    assert len(doc["comparison"]["searched_vs_table1"]) == len(searched)
    assert "searched front (entropy)" in (models / "report" / REPORT_CSV).read_text()
    assert (models / "report" / REPORT_PNG).stat().st_size > 0


def test_search_refuses_a_wrong_task_and_a_missing_report(models, tmp_path):  # type: ignore[no-untyped-def]
    runner = CliRunner()
    bad = runner.invoke(
        app, ["pause", "search", str(models / "entropy"), "--task", "classification"]
    )
    assert bad.exit_code != 0 and "holds a segmentation model" in bad.output
    missing = runner.invoke(
        app, ["pause", "search", str(models / "entropy"), "--report", str(tmp_path)]
    )
    assert missing.exit_code != 0 and "no report to add the front to" in missing.output


def test_matched_speed():
    def pt(pause, metric, ips):  # type: ignore[no-untyped-def]
        return ReportPoint("s", pause, "entropy", metric, ips, 1)

    searched = [pt("a", 0.50, 100.0), pt("b", 0.40, 300.0)]
    table1 = [pt("x", 0.45, 150.0), pt("y", 0.30, 200.0), pt("z", 0.60, 90.0)]
    rows = matched_speed(searched, table1)
    assert rows[0]["reference"] == "x" and rows[0]["difference"] == pytest.approx(0.05)
    assert rows[1]["reference"] is None and rows[1]["difference"] is None
