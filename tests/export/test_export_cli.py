"""``exitsearch export`` and ``exitsearch bench`` through typer's CliRunner on a small run."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import typer
from exitsearch_cli.bench import bench
from exitsearch_cli.export import export
from export_world import World, make_run
from typer.testing import CliRunner

from exitsearch.export import load_bundle, read_manifest

app = typer.Typer()
app.command("export")(export)
app.command("bench")(bench)


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def run_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("cli") / "run"
    make_run(world, root)
    return root


@pytest.fixture(scope="module")
def onnx_bundle(runner: CliRunner, run_dir: Path) -> Path:
    out = run_dir.parent / "onnx-bundle"
    result = runner.invoke(
        app,
        [
            "export",
            str(run_dir),
            "--config",
            "2",
            "--out",
            str(out),
            "--onnx",
            "--onnx-exporter",
            "legacy",
        ],
    )
    assert result.exit_code == 0, result.output
    return out


def test_export_recommended_by_default(runner: CliRunner, run_dir: Path):
    result = runner.invoke(app, ["export", str(run_dir)])
    assert result.exit_code == 0, result.output
    path = run_dir / "export" / "config-1"
    assert "config-1" in " ".join(result.stdout.split())
    assert "predicted" in result.stdout and "operating point" in result.stdout
    assert read_manifest(path)["meta"]["config_id"] == 1
    again = runner.invoke(app, ["export", str(run_dir), "--best"])
    assert again.exit_code == 2 and "already exists" in again.output
    assert runner.invoke(app, ["export", str(run_dir), "--overwrite"]).exit_code == 0


def test_export_errors_are_one_line(runner: CliRunner, run_dir: Path):
    result = runner.invoke(app, ["export", str(run_dir), "--config", "9"])
    assert result.exit_code == 2
    assert "known ids: 0, 1, 2" in result.output and "Traceback" not in result.output
    assert len(result.output.strip().splitlines()) == 1
    result = runner.invoke(app, ["export", str(run_dir), "--config", "0", "--best"])
    assert result.exit_code == 2 and "exclude each other" in result.output


def test_export_onnx_then_bench(runner: CliRunner, onnx_bundle: Path, tmp_path: Path):
    assert load_bundle(onnx_bundle).manifest["onnx"]["exporter"] == "legacy"
    out = tmp_path / "bench.json"
    result = runner.invoke(
        app,
        [
            "bench",
            str(onnx_bundle),
            "--batch-size",
            "1,8",
            "--repeats",
            "3",
            "--warmup",
            "1",
            "--onnx",
            "--json-out",
            str(out),
            "--plot",
            str(tmp_path / "bench.png"),
        ],
    )
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert (
        "speed-up" in text and "95 %" in text and "FLOPs" in text and "where the time goes" in text
    )
    doc = json.loads(out.read_text())
    assert [(r["engine"], r["mode"], r["batch_size"]) for r in doc["rows"]] == [
        ("torch", "batch", 1),
        ("onnx", "batch", 1),
        ("torch", "batch", 8),
        ("torch", "stream", 8),
        ("onnx", "batch", 8),
        ("onnx", "stream", 8),
    ]
    assert "torch stream b=8" in text
    assert (tmp_path / "bench.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert all(r["predicted_speedup"] > 0 and r["parts"] for r in doc["rows"])
    assert doc["inputs"].startswith("fashion-mnist validation")


def test_bench_with_one_shared_onnx_thread_pool(onnx_bundle: Path, tmp_path: Path):
    # the real command in a process of its own: onnxruntime's global pool is made once per
    # process and would hold every later session of this test process
    out = tmp_path / "bench.json"
    exe = Path(sys.executable).with_name("exitsearch")
    args = [str(exe), "bench", str(onnx_bundle), "--batch-size", "1", "--repeats", "2"]
    args += ["--warmup", "1", "--threads", "2", "--onnx", "--onnx-shared-threads"]
    done = subprocess.run(
        [*args, "--json-out", str(out)], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "onnxruntime thread pool: shared (2 threads)" in " ".join(done.stdout.split())
    doc = json.loads(out.read_text())
    assert doc["onnx_thread_pool"] == "shared (2 threads)"
    assert [r["engine"] for r in doc["rows"]] == ["torch", "onnx"]


def test_shared_onnx_threads_need_onnx(runner: CliRunner, onnx_bundle: Path):
    result = runner.invoke(app, ["bench", str(onnx_bundle), "--onnx-shared-threads"])
    assert result.exit_code == 2
    assert "add --onnx" in result.output and len(result.output.strip().splitlines()) == 1


def test_bench_at_a_budget_and_on_a_damaged_bundle(
    runner: CliRunner, onnx_bundle: Path, tmp_path: Path
):
    args = ["--batch-size", "4", "--repeats", "2", "--warmup", "0"]
    result = runner.invoke(app, ["bench", str(onnx_bundle), "--budget", "1FLOPs", *args])
    assert result.exit_code == 2 and "no operating point fits" in result.output
    result = runner.invoke(app, ["bench", str(onnx_bundle), "--budget", "100%", *args])
    assert result.exit_code == 0, result.output
    broken = Path(shutil.copytree(onnx_bundle, tmp_path / "b"))
    (broken / "onnx" / "stem.onnx").unlink()
    result = runner.invoke(app, ["bench", str(broken), *args])
    assert result.exit_code == 2 and "stem.onnx" in result.output and "missing" in result.output
    assert "Traceback" not in result.output
    result = runner.invoke(app, ["bench", str(onnx_bundle), "--batch-size", "0"])
    assert result.exit_code == 2 and "--batch-size" in result.output
