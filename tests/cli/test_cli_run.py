"""``exitsearch run`` through typer's CliRunner: help, usage errors, and a tiny real run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from exitsearch_cli.main import app
from typer.testing import CliRunner

from exitsearch.data import FASHION_MNIST_DIR
from exitsearch.report import schema
from exitsearch.search.space import builtin_spaces
from exitsearch.units import format_flops

pytestmark = pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")

needs_data = pytest.mark.skipif(
    not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"
)

TINY_ARGS = [
    "--model",
    "vit_tiny_patch16_224",
    *("-o", "img_size=28", "-o", "patch_size=7", "-o", "in_chans=1", "-o", "num_classes=10"),
    *("-o", "embed_dim=32", "-o", "depth=4", "-o", "num_heads=2"),
    *("--limit", "400", "--head-epochs", "1", "--n-trials", "40"),
]
SPACE = """\
name: tiny
placement: free
heads:
  linear: {}
  mlp: {}
uncertainty: false
criteria: [confidence]
thresholds: [shared, per_exit]
"""
BAD_BUDGETS = ["8GFLOP", "-1GFLOPs", "8 parsecs", "0", ""]


@pytest.fixture(scope="module")
def runner() -> CliRunner:
    return CliRunner()


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(SPACE)
    return path


def _lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


# -------------------------------------------------------------------------------- help
def test_run_help_names_the_budget_forms_and_the_unit(runner):
    # wide enough that rich does not cut the help column short ("multiply-accumulat…" at 80)
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    text = " ".join(result.stdout.split())
    assert "Usage" in text
    for word in ("--budget", "--budget-kind", "--space", "--n-trials", "--json", "8GFLOPs", "45%"):
        assert word in text, word
    assert "multiply-accumulates" in text


def test_heads_help_lists_its_commands(runner):
    result = runner.invoke(app, ["heads", "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage" in result.stdout
    assert "train" in result.stdout and "predict" in result.stdout


# -------------------------------------------------------------------------- bad budgets
@pytest.fixture(scope="module")
def bad_budget_runs(runner, space_file, tmp_path_factory):
    """One invocation per bad budget: (result, run folder)."""
    out = {}
    for i, budget in enumerate(BAD_BUDGETS):
        run_dir = tmp_path_factory.mktemp(f"bad{i}") / "run"
        args = ["run", *TINY_ARGS, "--space", str(space_file), "--run", str(run_dir)]
        out[budget] = (runner.invoke(app, [*args, "--budget", budget]), run_dir)
    return out


@needs_data
@pytest.mark.parametrize("budget", BAD_BUDGETS)
def test_bad_budget_is_a_one_line_usage_error(bad_budget_runs, budget):
    result, run_dir = bad_budget_runs[budget]
    assert result.exit_code == 2, result.output
    lines = _lines(result.stderr)
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error: ")
    assert "budget" in lines[0]
    assert "Traceback" not in result.output
    assert result.stdout == ""
    # no training started: no heads or predictions were cached
    cache = run_dir / schema.CACHE_DIR
    assert not list(cache.glob("heads-*")) and not list(cache.glob("predict-*"))
    assert not (run_dir / schema.PARETO_JSON).exists()


@needs_data
@pytest.mark.parametrize(
    "budget",
    BAD_BUDGETS,
)
def test_bad_budget_message_says_what_is_accepted(bad_budget_runs, budget):
    result, _ = bad_budget_runs[budget]
    message = " ".join(result.stderr.split())
    assert "accepted: 8GFLOPs, 8 GFLOPs, 750MFLOPs, 8e9" in message
    assert "45%" in message


@needs_data
@pytest.mark.parametrize("budget", BAD_BUDGETS)
def test_bad_budget_is_rejected_before_anything_is_cached(bad_budget_runs, budget):
    _, run_dir = bad_budget_runs[budget]
    assert not (run_dir / schema.CACHE_DIR).exists()


@needs_data
def test_unknown_space_lists_the_shipped_ones(runner, tmp_path):
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app,
        ["run", *TINY_ARGS, "--space", "no-such-space", "--budget", "70%", "--run", str(run_dir)],
    )
    assert result.exit_code == 2, result.output
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: ")
    assert "no-such-space" in lines[0]
    for name in builtin_spaces():
        assert name in lines[0]
    assert "Traceback" not in result.output
    assert not (run_dir / schema.CACHE_DIR).exists()


@pytest.mark.parametrize("option", ["--sampler", "--strategy"])
def test_an_unknown_sampler_is_refused_before_any_stage(runner, tmp_path, option):
    run_dir = tmp_path / "run"
    result = runner.invoke(
        app, ["run", *TINY_ARGS, option, "annealing", "--budget", "70%", "--run", str(run_dir)]
    )
    assert result.exit_code == 2, result.output
    lines = _lines(result.stderr)
    assert len(lines) == 1 and lines[0].startswith("error: unknown sampler 'annealing'")
    assert "nsga2" in lines[0] and "exhaustive" in lines[0]
    assert not run_dir.exists()


def test_run_help_names_the_sampler_not_its_former_name(runner):
    result = runner.invoke(app, ["run", "--help"], env={"COLUMNS": "250"})
    assert "--sampler" in result.stdout and "--strategy" not in result.stdout


# --------------------------------------------------------------------------- a real run
@needs_data
def test_tiny_run_prints_the_front_and_json(runner, space_file, tmp_path, capsys):
    run_dir = tmp_path / "run"
    args = ["run", *TINY_ARGS, "--space", str(space_file), "--budget", "70%", "--run", str(run_dir)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    out = " ".join(result.stdout.split())
    # the budget as typed, and what it amounts to for this backbone
    pareto = json.loads((run_dir / schema.PARETO_JSON).read_text())
    amount = format_flops(pareto["budget"]["flops"])
    assert f"Pareto front within budget 70% = {amount} (mean)" in out
    assert "recommended (the member whose gain over the backbone has the highest 95 % lower" in out
    assert "baselines" in out and "ryu@2" in out
    for name in (schema.PARETO_JSON, schema.PARETO_CSV, schema.STUDY_DB):
        assert name in out
        assert (run_dir / name).is_file()
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert doc["front"]
    # one table row per front member: its id, with " *" on the recommended one
    rec = doc["recommended"]
    assert f"{rec} *" in result.stdout

    again = runner.invoke(app, [*args, "--json"])
    assert again.exit_code == 0, again.output
    parsed = json.loads(again.stdout)  # stdout is exactly one JSON object
    assert isinstance(parsed, dict)
    assert parsed["budget"] == {
        "text": "70%",
        "kind": "mean",
        "flops": doc["budget"]["flops"],
        "ms": None,
    }
    assert parsed["search"]["n_trials"] == 40
    assert parsed["front"]
    assert all(m["val"]["mean_flops"] <= parsed["budget"]["flops"] for m in parsed["front"])
    assert parsed == json.loads((run_dir / schema.PARETO_JSON).read_text())
    # the same front again replaces nothing worth a word; another budget (or space, seed,
    # backbone: any other front) says what it replaced
    assert "replaced the front" not in " ".join(result.stderr.split())
    other = runner.invoke(app, [*args[:-4], "--budget", "60%", "--run", str(run_dir)])
    assert other.exit_code == 0, other.output
    said = " ".join(other.stderr.split())
    members = len(doc["front"])
    held = f"({members} members at budget 70%, mean, space {doc['space']})"
    assert f"this replaced the front {run_dir} held {held}" in said
    # the whole front (no budget), twice: the second replaces a front of the same budget
    whole = [*args[:-4], "--run", str(run_dir)]
    assert "replaced the front" in " ".join(runner.invoke(app, whole).stderr.split())
    again_whole = runner.invoke(app, whole)
    assert again_whole.exit_code == 0, again_whole.output
    assert "replaced the front" not in " ".join(again_whole.stderr.split())
    # under a worst-case budget the table shows the worst case, which that budget bounds
    from exitsearch_cli.run import print_front

    worst = {**doc, "budget": {**doc["budget"], "kind": "max"}}
    capsys.readouterr()
    print_front(worst)
    shown = capsys.readouterr().out
    assert "max MF" in shown and "the most one sample costs" in " ".join(shown.split())
    rec = next(m for m in doc["front"] if m["recommended"])
    row = next(line for line in shown.splitlines() if line.lstrip().startswith(f"{rec['id']} *"))
    assert f"{rec['val']['max_flops'] / 1e6:.2f}" in row
