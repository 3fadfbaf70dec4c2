"""The ``exitsearch`` command through typer's CliRunner: help, profile, backbone."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
import typer
from exitsearch_cli.main import app
from typer.testing import CliRunner

from exitsearch._io import read_json
from exitsearch.backbone import DEFAULT_PRESET, create_backbone
from exitsearch.profile import UNIT, profile_backbone

PRESET = DEFAULT_PRESET


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


def _command_paths(cmd: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[str, ...]]:
    """Every command of the tree; groups are recognised by their ``commands`` (typer vendors
    its own click, so isinstance checks against the click package do not hold)."""
    yield path
    for name, sub in (getattr(cmd, "commands", None) or {}).items():
        yield from _command_paths(sub, (*path, name))


ALL_COMMANDS = list(_command_paths(typer.main.get_command(app)))


def test_command_tree_is_complete():
    assert {("profile",), ("backbone",), ("backbone", "train"), ("backbone", "list")} <= set(
        ALL_COMMANDS
    )


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "exitsearch")
def test_help_works_everywhere(runner, path):
    result = runner.invoke(app, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    assert "Traceback" not in result.output


def _option_names(cmd: Any) -> set[str]:
    shown = [p for p in cmd.params if not getattr(p, "hidden", False)]
    return {o for p in shown for o in (*p.opts, *p.secondary_opts) if o.startswith("--")}


def _command(path: tuple[str, ...]) -> Any:
    cmd = typer.main.get_command(app)
    for name in path:
        cmd = cmd.commands[name]
    return cmd


@pytest.mark.parametrize("path", ALL_COMMANDS, ids=lambda p: " ".join(p) or "exitsearch")
def test_help_fits_80_columns_whole(runner, path):
    # narrower than 100 columns, help is laid out plainly: typer's framed table cut option
    # names (`--head-train-lim`) and words of their help (`multiply-accumu…`) at 80
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "80", "TERMINAL_WIDTH": ""})
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert "…" not in result.stdout
    words = set(result.stdout.replace(",", " ").split())
    missing = _option_names(_command(path)) - words
    assert not missing, f"{' '.join(path)} --help at 80 columns lacks {sorted(missing)}"
    # wide terminals keep typer's panels
    wide = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "120", "TERMINAL_WIDTH": ""})
    assert "╭─ Options" in wide.stdout


def test_top_level_help_names_the_flop_unit(runner):
    result = runner.invoke(app, ["--help"])
    assert "multiply-accumulate" in " ".join(result.stdout.split())


def test_profile_json(runner):
    result = runner.invoke(app, ["profile", PRESET, "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)  # exactly one JSON object on stdout, nothing else
    assert isinstance(doc, dict)
    assert {"model", "unit", "total_flops", "blocks", "stem_flops", "head_flops"} <= set(doc)
    assert doc["unit"] == UNIT
    expected = profile_backbone(create_backbone(PRESET))
    assert doc["total_flops"] == expected.total_flops
    assert doc["model"] == expected.model
    assert [b["index"] for b in doc["blocks"]] == list(range(1, expected.depth + 1))
    for got, want in zip(doc["blocks"], expected.blocks, strict=True):
        assert (got["flops"], got["params"]) == (want.flops, want.params)
    assert doc["stem_flops"] == expected.stem_flops and doc["head_flops"] == expected.head_flops
    assert (
        doc["total_flops"]
        == doc["stem_flops"] + sum(b["flops"] for b in doc["blocks"]) + (doc["head_flops"])
    )
    # ops without a FLOP handle are reported (on stderr, so stdout stays one JSON object)
    assert "aten::gelu" in result.stderr


def test_profile_with_overrides_latency_and_save(runner, tmp_path):
    out = tmp_path / "profile.json"
    args = ["profile", "vit_tiny_patch16_224", "-o", "img_size=32", "-o", "patch_size=8"]
    args += ["-o", "depth=2", "--json", "--latency", "--batch-size", "1,2"]
    args += ["--repeats", "2", "--warmup", "0", "--save", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert len(doc["blocks"]) == 2
    assert [t["batch_size"] for t in doc["latency"]] == [1, 2]
    assert all(len(t["block_ms"]) == 2 for t in doc["latency"])
    assert read_json(out) == doc


def test_profile_table(runner):
    result = runner.invoke(app, ["profile", PRESET])
    assert result.exit_code == 0, result.output
    assert "block 12" in result.stdout and "norm+head" in result.stdout
    assert "FLOPs" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["profile", "vit_tiny_patch16_22"], "unknown model"),
        (["profile", PRESET, "-o", "img_size=abc"], "img_size"),
        (["profile", PRESET, "-o", "colour=red"], "unknown override"),
        (["profile", "vit_tiny_patch16_224", "-o", "depth=-1"], "depth=-1"),
        (["profile", PRESET, "--batch-size", "1,x", "--latency"], "--batch-size"),
        (["profile", PRESET, "--batch-size", "0", "--latency"], "--batch-size"),
        (["profile", PRESET, "--checkpoint", "/nonexistent/w.safetensors"], "not found"),
    ],
)
def test_user_errors_are_one_line_with_status_2(runner, args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and message in lines[0]
    assert result.stdout == ""


def test_backbone_list(runner):
    result = runner.invoke(app, ["backbone", "list"])
    assert result.exit_code == 0, result.output
    assert PRESET in result.stdout and "preset" in result.stdout
    assert "vit_base_patch16_224" in result.stdout
    filtered = runner.invoke(app, ["backbone", "list", "*small*"])
    assert "vit_small_patch16_224" in filtered.stdout and PRESET not in filtered.stdout
    # each model's family: a Swin says so, a ViT says so
    wide = runner.invoke(app, ["backbone", "list", "*tiny*"], env={"COLUMNS": "200"})
    rows = {line.split("│")[1].strip(): line for line in wide.stdout.splitlines() if "│" in line}
    assert "│ swin " in rows["swin_tiny_patch4_window7_224"]
    assert "│ vit " in rows["vit_tiny_patch16_224"]


def test_backbone_train_with_data_dir(runner, tmp_path, small_fmnist_dir, tiny_overrides):
    out = tmp_path / "run"
    args = ["backbone", "train", "--out", str(out), "--model", "vit_tiny_patch16_224"]
    for key, value in tiny_overrides.items():
        args += ["-o", f"{key}={value}"]
    args += ["--data-dir", str(small_fmnist_dir), "--limit", "64", "--epochs", "1"]
    args += ["--batch-size", "32", "--no-augment"]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "test accuracy" in result.stdout
    meta = read_json(out / "backbone.json")
    assert meta["data"]["data_dir"] == str(small_fmnist_dir)
    assert meta["data"]["limit"] == 64
    assert meta["spec"]["overrides"] == tiny_overrides
    assert meta["config"]["augment"] is False
    assert (out / "model.safetensors").is_file()


def test_backbone_train_bad_data_dir(runner, tmp_path, tiny_overrides):
    args = ["backbone", "train", "--out", str(tmp_path / "run"), "--model", "vit_tiny_patch16_224"]
    for key, value in tiny_overrides.items():
        args += ["-o", f"{key}={value}"]
    args += ["--data-dir", str(tmp_path / "nowhere")]
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert "Traceback" not in result.output
    assert "Fashion-MNIST folder not found" in result.stderr


def test_data_given_as_a_relative_path_is_recorded_absolute(tmp_path, monkeypatch):
    """What a run records (its fronts, its bundles) must find the data from another folder."""
    from exitsearch_cli._options import data_spec

    (tmp_path / "imgs" / "a").mkdir(parents=True)
    monkeypatch.chdir(tmp_path)
    spec = data_spec("imgs", "idx", None, 0, None)
    assert spec.source == str(tmp_path / "imgs") and spec.data_dir == str(tmp_path / "idx")
    assert data_spec("fashion-mnist", None, None, 0, None).source == "fashion-mnist"
    # what is not there stays as the user wrote it, for the error that names it
    assert data_spec("missing", None, None, 0, None).source == "missing"
    assert data_spec("~no-such-user-x/imgs", None, None, 0, None).source == "~no-such-user-x/imgs"
    # a folder that happens to bear a source's name is read as the folder it is when so typed
    (tmp_path / "fashion-mnist" / "a").mkdir(parents=True)
    assert data_spec("fashion-mnist", None, None, 0, None).source == "fashion-mnist"
    local = data_spec("./fashion-mnist", None, None, 0, None).source
    assert local == str(tmp_path / "fashion-mnist")
