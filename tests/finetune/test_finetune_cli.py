"""``exitsearch finetune`` and ``exitsearch finetune-compare`` through typer's CliRunner."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
import typer
from exitsearch_cli.finetune import finetune, finetune_compare
from finetune_world import FinetuneWorld
from typer.testing import CliRunner

import exitsearch
from exitsearch._io import file_sha256
from exitsearch.finetune import Recipe

app = typer.Typer()
app.command("finetune")(finetune)
app.command("finetune-compare")(finetune_compare)
FAST = ["--epochs", "1", "--batch-size", "64", "--lr", "0.001", "--no-progress"]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def cli_run(runner: CliRunner, ft_world: FinetuneWorld, tmp_path_factory) -> Path:  # type: ignore[no-untyped-def]
    out = tmp_path_factory.mktemp("cli") / "mevit"
    result = runner.invoke(
        app,
        [
            "finetune",
            str(ft_world.mevit),
            "--strategy",
            "mevit",
            "--set",
            "num_sampled=2",
            "--set",
            "distill_weight=0.5",
            "--limit",
            "192",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "accuracy before -> after" in result.output
    return out


def _one_line_error(result) -> str:  # type: ignore[no-untyped-def]
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1, result.output
    return lines[0]


def test_finetune_writes_a_bundle_with_its_recipe(cli_run):
    model = exitsearch.load(cli_run / "bundle")
    recipe = Recipe.from_yaml(cli_run / "bundle" / "train.yaml")
    assert recipe.strategy == "mevit"
    assert recipe.hyperparameters["num_sampled"] == 2
    assert recipe.hyperparameters["distill_weight"] == 0.5
    assert recipe.data.limit == 192 and recipe.training.epochs == 1
    assert model.config.criterion == "uncertainty"
    report = json.loads((cli_run / "report.json").read_text())
    assert report["training"]["epochs"] == 1


def test_finetune_reruns_a_recipe(runner, cli_run, tmp_path):
    out = tmp_path / "again"
    recipe = str(cli_run / "bundle" / "train.yaml")
    result = runner.invoke(
        app, ["finetune", "--recipe", recipe, "--out", str(out), "--no-progress"]
    )
    assert result.exit_code == 0, result.output
    for name in ("backbone.safetensors", "heads.safetensors"):
        assert file_sha256(out / "bundle" / name) == file_sha256(cli_run / "bundle" / name)
    clash = runner.invoke(
        app, ["finetune", "--recipe", recipe, "--strategy", "lgvit", "--epochs", "2"]
    )
    assert "leave out --strategy, --epochs" in _one_line_error(clash)


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--strategy", "sandwich"], "unknown fine-tuning strategy 'sandwich'; known: "),
        ([], "give --strategy; known: classifier-wise"),
        (["--strategy", "lgvit", "--set", "alpha"], "--set takes key=value"),
        (["--strategy", "lgvit", "--set", "alpha=high"], "`alpha` must be a number"),
        (["--strategy", "lgvit", "--set", "beta2=1"], "no hyperparameter 'beta2'"),
        (["--strategy", "lgvit", "--epochs", "0"], "`epochs >= 1` must hold"),
    ],
)
def test_finetune_errors_are_one_line(runner, ft_world, tmp_path, args, match):
    result = runner.invoke(app, ["finetune", str(ft_world.lgvit), *args, "--out", str(tmp_path)])
    assert match in _one_line_error(result)


def test_finetune_needs_a_bundle_and_a_readable_recipe(runner, tmp_path):
    assert "give a BUNDLE folder" in _one_line_error(runner.invoke(app, ["finetune"]))
    assert "not a bundle folder" in _one_line_error(
        runner.invoke(app, ["finetune", str(tmp_path / "none"), "--strategy", "lgvit"])
    )
    bad = tmp_path / "r.yaml"
    bad.write_text("format: exitsearch-finetune-recipe\nversion: 1\nstrategy: mevit\n")
    assert "`source` is missing" in _one_line_error(
        runner.invoke(app, ["finetune", "--recipe", str(bad)])
    )


def test_divergence_is_a_one_line_error(runner, ft_world, tmp_path):
    result = runner.invoke(
        app,
        [
            "finetune",
            str(ft_world.mevit),
            "--strategy",
            "test-diverges",
            "--out",
            str(tmp_path),
            *FAST,
            "--epochs",
            "2",
        ],
    )
    # the epoch before is reported as it finished; the error itself is one line, the last
    assert result.exit_code == 2 and "Traceback" not in result.output
    errors = [x for x in result.output.splitlines() if x.startswith("error:")]
    assert len(errors) == 1 and result.output.strip().splitlines()[-1] == errors[0]
    line = errors[0]
    assert "loss became nan" in line and "the checkpoint of epoch 1" in line
    assert (tmp_path / "checkpoint" / "state.json").is_file()


def test_compare_writes_table_json_and_plot(runner, ft_world, tmp_path):
    out = tmp_path / "compare"
    result = runner.invoke(
        app,
        [
            "finetune-compare",
            str(ft_world.lgvit),
            "--strategies",
            "classifier-wise,lgvit",
            "--set",
            "lgvit.alpha=0.1",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert result.exit_code == 0, result.output
    with open(out / "comparison.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert [r["strategy"] for r in rows] == ["source (no fine-tuning)", "classifier-wise", "lgvit"]
    assert float(rows[1]["matched_test_vs_classifier_wise"]) == 0.0
    doc = json.loads((out / "comparison.json").read_text())
    assert set(doc["fronts"]) == {"source (no fine-tuning)", "classifier-wise", "lgvit"}
    assert (out / "comparison.png").stat().st_size > 10_000
    assert Recipe.from_yaml(out / "lgvit" / "bundle" / "train.yaml").hyperparameters["alpha"] == 0.1
    # the same strategies, data, epochs and seed
    a, b = (
        Recipe.from_yaml(out / s / "bundle" / "train.yaml") for s in ("classifier-wise", "lgvit")
    )
    assert a.training == b.training and a.data == b.data
    # a rerun reuses every finished strategy
    again = runner.invoke(
        app,
        [
            "finetune-compare",
            str(ft_world.lgvit),
            "--strategies",
            "classifier-wise,lgvit",
            "--set",
            "lgvit.alpha=0.1",
            "--out",
            str(out),
            *FAST,
        ],
    )
    assert again.exit_code == 0 and "nothing to do" in again.output


def test_compare_records_a_diverged_strategy(runner, ft_world, tmp_path):
    out = tmp_path / "c"
    result = runner.invoke(
        app,
        [
            "finetune-compare",
            str(ft_world.mevit),
            "--strategies",
            "classifier-wise,test-diverges",
            "--out",
            str(out),
            *FAST,
            "--epochs",
            "2",
        ],
    )
    assert result.exit_code == 0, result.output
    rows = json.loads((out / "comparison.json").read_text())["rows"]
    assert rows[-1]["strategy"] == "test-diverges" and rows[-1]["status"].startswith("diverged")


@pytest.mark.parametrize(
    ("args", "match"),
    [
        (["--strategies", "lgvit,nope"], "unknown fine-tuning strategy 'nope'"),
        (["--strategies", ","], "--strategies names no strategy"),
        (["--set", "alpha=1"], "--set takes STRATEGY.key=value"),
        (["--strategies", "mevit", "--set", "lgvit.alpha=1"], "not compared: lgvit"),
    ],
)
def test_compare_errors_are_one_line(runner, ft_world, tmp_path, args, match):
    result = runner.invoke(
        app, ["finetune-compare", str(ft_world.lgvit), *args, "--out", str(tmp_path)]
    )
    assert match in _one_line_error(result)
