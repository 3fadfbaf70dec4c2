"""The edge-device workflow: `profile --latency --out TABLE.json` where the model will run,
`run --latency-table TABLE.json` elsewhere; a table of another model is a clear error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exitsearch_cli.main import app
from test_cli_run import SPACE, TINY_ARGS, needs_data
from typer.testing import CliRunner

from exitsearch.errors import ConfigError
from exitsearch.profile.table import TABLE_FORMAT, TABLE_SCHEMA, read_table
from exitsearch.report import schema

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

MODEL = TINY_ARGS[: TINY_ARGS.index("--limit")]  # --model and its overrides
OVERRIDES = MODEL[2:]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(SPACE)
    return path


@pytest.fixture(scope="module")
def table(runner, space_file, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("device") / "table.json"
    args = ["profile", "vit_tiny_patch16_224", *OVERRIDES, "--latency", "--device", "cpu"]
    args += ["--batch-size", "4", "--repeats", "3", "--warmup", "1"]
    result = runner.invoke(app, [*args, "--space", str(space_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "exitsearch run --latency-table" in " ".join(result.output.split())
    return out


def test_the_table_records_what_it_describes(table: Path):
    doc = json.loads(table.read_text())
    assert doc["format"] == TABLE_FORMAT and doc["schema_version"] == TABLE_SCHEMA
    assert doc["input_size"] == [1, 28, 28]
    assert doc["architecture"]["overrides"]["depth"] == 4
    env = doc["environment"]
    assert env["device"] == "cpu" and env["threads"] >= 1 and env["torch"] and env["engine"]
    assert doc["backbone"]["batch_size"] == 4 and len(doc["backbone"]["block_ms"]) == 4
    # linear and mlp at blocks 1-3 (free placement before the last block)
    keys = set(doc["heads_ms_per_batch"])
    assert {"linear@1", "mlp@3"} <= keys and all(v > 0 for v in doc["heads_ms_per_batch"].values())


def test_a_table_of_another_model_or_space_is_refused(table: Path):
    t = read_table(table)
    arch = dict(t.architecture)
    t.check(arch, (1, 28, 28), ["linear@1", "mlp@2"])
    with pytest.raises(
        ConfigError, match="measured at input size 1x28x28, this run's model takes 3x28x28"
    ):
        t.check(arch, (3, 28, 28), ["linear@1"])
    deeper = {**arch, "overrides": {**arch["overrides"], "depth": 6}}
    with pytest.raises(ConfigError, match="another model: overrides is"):
        t.check(deeper, (1, 28, 28), ["linear@1"])
    with pytest.raises(ConfigError, match=r"lacks 1 of this run's 2 candidate heads \(e\.g\. lph"):
        t.check(arch, (1, 28, 28), ["linear@1", "lph[k=3]@2"])


def test_unreadable_tables(tmp_path: Path, table: Path):
    with pytest.raises(ConfigError, match="not found"):
        read_table(tmp_path / "none.json")
    other = tmp_path / "other.json"
    other.write_text('{"model": "x"}')
    with pytest.raises(ConfigError, match="is not a latency table"):
        read_table(other)
    newer = json.loads(table.read_text())
    newer["schema_version"] = TABLE_SCHEMA + 1
    other.write_text(json.dumps(newer))
    with pytest.raises(ConfigError, match=f"has schema {TABLE_SCHEMA + 1}"):
        read_table(other)


def test_out_needs_one_batch_size(runner, tmp_path):
    result = runner.invoke(
        app, ["profile", "vit_tiny_patch16_224", *OVERRIDES, "--out", str(tmp_path / "t.json")]
    )
    assert result.exit_code == 2 and "one batch size" in result.output


@needs_data
def test_run_with_a_table_from_elsewhere_budgets_in_ms(runner, space_file, table, tmp_path):
    t = read_table(table)
    per_sample = t.backbone.per_sample()
    budget = f"{0.9 * per_sample.parts_ms:.6f}ms"
    run_dir = tmp_path / "run"
    args = ["run", *TINY_ARGS, "--space", str(space_file), "--run", str(run_dir)]
    result = runner.invoke(app, [*args, "--budget", budget, "--latency-table", str(table)])
    assert result.exit_code == 0, result.output
    assert "latency: the table of" in result.output
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert doc["budget"]["ms"] == pytest.approx(0.9 * per_sample.parts_ms, rel=1e-5)
    # where the milliseconds come from
    assert doc["latency"] == {
        "source": "file",
        "engine": "torch",
        "device": "cpu",
        "device_name": t.backbone.device_name,
        "threads": t.backbone.threads,
        "batch_size": 4,
    }
    assert doc["front"] and all(m["val"]["mean_ms"] > 0 for m in doc["front"])
    # milliseconds next to FLOPs, in the table and the CSV
    header = next(line for line in result.stdout.splitlines() if "MFLOPs" in line)
    assert header.split()[header.split().index("MFLOPs") + 1] == "ms"
    csv_header = (run_dir / schema.PARETO_CSV).read_text().splitlines()[0].split(",")
    assert csv_header[csv_header.index("max_flops") + 1 : csv_header.index("max_flops") + 3] == [
        "mean_ms",
        "max_ms",
    ]
    # a table of another model is refused before any work
    other = tmp_path / "other"
    wide = [a if a != "embed_dim=32" else "embed_dim=48" for a in TINY_ARGS]
    result = runner.invoke(
        app,
        [
            "run",
            *wide,
            "--space",
            str(space_file),
            "--run",
            str(other),
            "--budget",
            budget,
            "--latency-table",
            str(table),
        ],
    )
    assert result.exit_code == 2 and "the latency table is of another model" in result.output


def test_an_onnx_table_records_its_engine(runner, space_file, tmp_path):
    pytest.importorskip("onnxruntime")
    out = tmp_path / "onnx.json"
    args = ["profile", "vit_tiny_patch16_224", *OVERRIDES, "--latency", "--device", "cpu"]
    args += ["--batch-size", "2", "--repeats", "2", "--warmup", "1", "--engine", "onnx"]
    result = runner.invoke(app, [*args, "--space", str(space_file), "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "inside the onnx runtime" in " ".join(result.output.split())
    t = read_table(out)
    assert t.environment["engine"] == "onnx" and t.environment["onnxruntime"]
    assert len(t.backbone.block_ms) == 4 and all(v > 0 for v in t.heads_ms_per_batch.values())
    # a run priced on onnxruntime says so, and its export without graphs is told to add them
    run_dir = tmp_path / "run"
    budget = f"{2 * t.backbone.per_sample().parts_ms:.6f}ms"  # every member fits
    args = ["run", *TINY_ARGS, "--space", str(space_file), "--run", str(run_dir)]
    result = runner.invoke(app, [*args, "--budget", budget, "--latency-table", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert doc["latency"]["engine"] == "onnx" and doc["latency"]["source"] == "file"
    result = runner.invoke(app, ["export", str(run_dir), "--out", str(tmp_path / "bundle")])
    assert result.exit_code == 0, result.output
    assert "add --onnx to export the graphs that run there" in " ".join(result.output.split())
    # the bundle keeps where its run's milliseconds came from
    manifest = json.loads((tmp_path / "bundle" / "exitsearch.json").read_text())
    assert manifest["meta"]["latency"] == doc["latency"]


def test_an_unknown_engine_is_refused(runner):
    args = ["profile", "vit_tiny_patch16_224", *OVERRIDES, "--latency", "--engine", "tvm"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "--engine takes torch or onnx" in result.output
