"""Numerical faults on purpose: a head whose loss turns NaN, and evaluations that raise.

A test-only head type (``nan_after``) is registered for this module only, in a copy of the head
registry that is put back afterwards (so the head contract tests never see it): a linear
classifier whose logits become NaN after a given number of training steps. It goes through the
real ``exitsearch heads train`` command, search-space file and all.
"""

from __future__ import annotations

import functools
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from exitsearch_cli.main import app
from fault_world import SPACE, TINY_MODEL, as_in_a_fresh_process, finished_trials, heads_folder
from safetensors.torch import load_file
from torch import nn
from typer.testing import CliRunner

import exitsearch.heads.registry as head_registry
import exitsearch.pipeline.run as pipeline_run
from exitsearch.backbone import create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.data import FASHION_MNIST_DIR
from exitsearch.heads import ExitHead, HeadContext, HeadSpec, register_head
from exitsearch.heads.bank import HeadBank
from exitsearch.report import schema
from exitsearch.search.study import run_search

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"),
]

BATCH = 64
STEPS_PER_EPOCH = 7  # 400 training samples in batches of 64


class NanAfter(ExitHead):
    """Linear on the class token; NaN logits from training step ``after + 1`` on."""

    def __init__(self, ctx: HeadContext, after: int = 1) -> None:
        super().__init__(ctx)
        self.after = after
        self.steps = 0
        self.fc = nn.Linear(ctx.embed_dim, ctx.num_classes)

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        return hidden[:, 0]

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        logits = self.fc(features)
        if self.training and torch.is_grad_enabled():
            self.steps += 1
            if self.steps > self.after:
                return logits * float("nan")
        return logits


@pytest.fixture(scope="module")
def nan_head() -> Iterator[str]:
    with head_registry.REGISTRY.scoped():
        register_head("nan_after")(NanAfter)
        yield "nan_after"


def _space(path: Path, after: int | None) -> Path:
    text = "heads:\n  linear: {}\n"
    if after is not None:
        text += f"  nan_after: {{params: {{after: {after}}}}}\n"
    path.write_text(text + "locations: [1, 2]\nuncertainty: false\ncriteria: [confidence]\n")
    return path


def _train(root: Path, name: str, after: int | None, epochs: int) -> Any:
    args = [
        *("heads", "train", *TINY_MODEL, "--limit", "400", "--head-epochs", str(epochs)),
        *("--head-batch-size", str(BATCH), "--space", str(_space(root / f"{name}.yaml", after))),
        *("--run", str(root / name), "--no-predict"),
    ]
    torch.set_num_threads(1)
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    return result


def _weights(run_dir: Path, key: str) -> dict[str, torch.Tensor]:
    """One head's weights from the run's bank (``heads.<i>.`` prefix removed)."""
    summary = json.loads((heads_folder(run_dir) / "heads.json").read_text())
    i = [h["key"] for h in summary["heads"]].index(key)
    prefix = f"heads.{i}."
    tensors = load_file(str(heads_folder(run_dir) / "heads.safetensors"))
    return {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}


def _states(run_dir: Path) -> dict[str, dict[str, Any]]:
    summary = json.loads((heads_folder(run_dir) / "heads.json").read_text())
    return {h["key"]: h for h in summary["heads"]}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.fixture(scope="module")
def runs(nan_head: str, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("nan")
    return {
        "root": root,
        # NaN at the second step of epoch 1: nothing better than the initial weights yet
        "early": _train(root, "early", after=1, epochs=3),
        # NaN at the third step of epoch 2: epoch 1 was its best
        "late": _train(root, "late", after=STEPS_PER_EPOCH + 2, epochs=3),
        "late-1-epoch": _train(root, "late-1-epoch", after=STEPS_PER_EPOCH + 2, epochs=1),
        "linear-only": _train(root, "linear-only", after=None, epochs=3),
    }


def test_a_nan_head_is_marked_diverged_and_the_others_finish(runs):
    root = runs["root"]
    states = _states(root / "early")
    for m in (1, 2):
        nan, linear = states[f"nan_after[after=1]@{m}"], states[f"linear@{m}"]
        assert nan["state"] == "diverged" and nan["best_epoch"] == 0
        assert linear["state"] == "finished" and linear["epochs"] == 3
    log = " ".join(runs["early"].stderr.split())
    assert (
        "head nan_after[after=1]@1: loss became non-finite at epoch 1, batch 2; stopped and "
        "restored to its best weights, the others train on" in log
    )
    assert "2 of 4 heads still training" in log


def test_the_other_heads_are_exactly_what_they_are_without_it(runs):
    root = runs["root"]
    for m in (1, 2):
        key = f"linear@{m}"
        assert _same(_weights(root / "early", key), _weights(root / "linear-only", key))
        assert (
            _states(root / "early")[key]["val_acc"] == _states(root / "linear-only")[key]["val_acc"]
        )


def test_a_head_diverging_in_epoch_1_keeps_its_initial_weights(runs):
    root = runs["root"]
    summary = json.loads((heads_folder(root / "early") / "heads.json").read_text())
    specs = [HeadSpec.from_dict(h) for h in summary["heads"]]
    overrides = {k: int(v) for k, v in (a.split("=") for a in TINY_MODEL if "=" in a)}
    ctx = HeadContext.from_backbone(create_backbone("vit_tiny_patch16_224", **overrides))
    fresh = HeadBank(specs, ctx, seed=summary["config"]["seed"])
    i = [s.key for s in specs].index("nan_after[after=1]@1")
    initial = {k: v for k, v in fresh.heads[i].state_dict().items()}
    assert _same(_weights(root / "early", "nan_after[after=1]@1"), initial)


def test_a_head_diverging_later_is_restored_to_its_best_epoch(runs):
    root = runs["root"]
    key = f"nan_after[after={STEPS_PER_EPOCH + 2}]@1"
    late = _states(root / "late")[key]
    assert late["state"] == "diverged" and late["best_epoch"] == 1
    assert "loss became non-finite at epoch 2, batch 3" in " ".join(runs["late"].stderr.split())
    # its best weights are those after epoch 1, as a one-epoch training leaves them
    assert _states(root / "late-1-epoch")[key]["state"] == "finished"
    assert _same(_weights(root / "late", key), _weights(root / "late-1-epoch", key))
    assert all(torch.isfinite(v).all() for v in _weights(root / "late", key).values())


def test_heads_json_stays_valid_json_with_a_diverged_head(runs):
    text = (heads_folder(runs["root"] / "early") / "heads.json").read_text()

    def refuse(constant: str) -> Any:
        raise ValueError(f"{constant} is not JSON")

    json.loads(text, parse_constant=refuse)


# ------------------------------------------------------------------- failing evaluations
@pytest.fixture(scope="module")
def failing_evaluations(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """``exitsearch run`` whose evaluation raises for every configuration with an exit at
    block 2 (an objective hook, the search's own injection point)."""
    root = tmp_path_factory.mktemp("failing")
    (root / "space.yaml").write_text(SPACE)
    run_dir = root / "run"
    args = [
        *("run", *TINY_MODEL, "--limit", "400", "--head-epochs", "1", "--n-trials", "30"),
        *("--space", str(root / "space.yaml"), "--budget", "70%", "--run", str(run_dir)),
    ]

    def hook(config: ExitConfig) -> None:
        if 2 in config.locations:
            raise RuntimeError("simulated evaluation failure at block 2")

    torch.set_num_threads(1)
    with as_in_a_fresh_process(), pytest.MonkeyPatch.context() as mp:
        mp.setattr(pipeline_run, "run_search", functools.partial(run_search, objective_hook=hook))
        result = CliRunner().invoke(app, args)
    return {"result": result, "run_dir": run_dir}


def test_a_failing_evaluation_is_a_failed_trial_and_the_search_goes_on(failing_evaluations):
    result, run_dir = failing_evaluations["result"], failing_evaluations["run_dir"]
    assert result.exit_code == 0, result.output
    trials = finished_trials(run_dir / schema.STUDY_DB)
    failed = sorted(n for n, (state, _, _) in trials.items() if state == "FAIL")
    complete = sorted(n for n, (state, _, _) in trials.items() if state == "COMPLETE")
    assert len(trials) == 30 and failed and complete
    assert complete[-1] > failed[0]  # trials went on after the first failure
    for n, (state, params, _) in trials.items():
        at_2 = dict(params).get("exit@2", 0.0) != 0.0  # categorical index 0 is "none"
        assert (state == "FAIL") == at_2, (n, state, params)
    doc = json.loads((run_dir / schema.PARETO_JSON).read_text())
    assert doc["search"]["failed_trials"] == len(failed)
    assert doc["search"]["n_trials"] == 30
    assert doc["front"] and doc["recommended"] is not None
    assert all(math.isfinite(m["val"]["accuracy"]) for m in doc["front"])


def test_failed_trials_print_no_traceback(failing_evaluations):
    result = failing_evaluations["result"]
    assert result.exit_code == 0, result.output
    assert "Traceback" not in result.stderr
    assert "simulated evaluation failure" not in result.stderr
