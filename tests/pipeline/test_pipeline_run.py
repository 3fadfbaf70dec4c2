"""``run_pipeline`` end to end on a tiny 4-block ViT and 400 real Fashion-MNIST samples per split.

One first run is shared by the module; tests that rerun work on a copy of its run folder, so
the cache they find is that run's and nothing they write leaks into another test.

The tiny backbone has no checkpoint: its weights are timm's random initialisation, drawn from
torch's global generator. Every run below seeds that generator first (``_run``), so "the same
settings" means the same weights; without it, see
``test_same_settings_give_the_same_random_backbone``.
"""

from __future__ import annotations

import csv
import math
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import optuna
import pytest
import torch

from exitsearch._io import read_json
from exitsearch.backbone import BackboneSpec
from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.data import FASHION_MNIST_DIR, DataSpec
from exitsearch.errors import BudgetError, DataError
from exitsearch.intervals import paired_difference, wilson_interval
from exitsearch.pipeline.cache import MANIFEST, StageStore
from exitsearch.pipeline.run import (
    RunSettings,
    prepare,
    run_pipeline,
    stage_heads,
    stage_profile,
)
from exitsearch.profile import BackboneProfile
from exitsearch.report import schema
from exitsearch.report.run_report import config_of_column
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.pareto import hypervolume
from exitsearch.search.study import SearchSettings
from exitsearch.training.head_training import SUMMARY, HeadTrainConfig
from exitsearch.training.predict import Predictions
from exitsearch.units import format_flops

pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.skipif(not FASHION_MNIST_DIR.is_dir(), reason="dataset-fashion-mnist missing"),
]

TINY = BackboneSpec(
    "vit_tiny_patch16_224",
    {
        "img_size": 28,
        "patch_size": 7,
        "in_chans": 1,
        "num_classes": 10,
        "embed_dim": 32,
        "depth": 4,
        "num_heads": 2,
    },
)
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
LIMIT = 400
BATCH = 128
N_TRIALS = 60
HEADS = 6  # linear and mlp after blocks 1, 2 and 3


class RecordingProgress:
    def __init__(self) -> None:
        self.logs: list[str] = []

    def start(self, task: str, total: int | None) -> None:
        pass

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        pass

    def finish(self, task: str) -> None:
        pass

    def log(self, message: str) -> None:
        self.logs.append(message)


@pytest.fixture(autouse=True)
def quiet_optuna():
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture(autouse=True)
def one_torch_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def space_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("space") / "tiny.yaml"
    path.write_text(SPACE)
    return path


def _settings(run_dir: Path, space_file: Path, **changes: Any) -> RunSettings:
    base = RunSettings(
        run_dir=run_dir,
        backbone=TINY,
        data=DataSpec(limit=LIMIT),
        space=str(space_file),
        budget="70%",
        heads=HeadTrainConfig(epochs=1, batch_size=BATCH),
        search=SearchSettings(n_trials=N_TRIALS),
    )
    return replace(base, **changes)


def _run(settings: RunSettings, progress: RecordingProgress | None = None):
    torch.manual_seed(0)  # the random-init backbone's weights
    return run_pipeline(settings, progress)


@pytest.fixture(scope="module")
def first(tmp_path_factory, space_file):
    torch.set_num_threads(1)
    run_dir = tmp_path_factory.mktemp("first") / "run"
    progress = RecordingProgress()
    result = _run(_settings(run_dir, space_file), progress)
    return result, progress, run_dir


@pytest.fixture
def copy_of_first(first, tmp_path) -> Path:
    _, _, run_dir = first
    dst = tmp_path / "run"
    shutil.copytree(run_dir, dst)
    return dst


def _doc(run_dir: Path) -> dict:
    return read_json(run_dir / schema.PARETO_JSON)


def _cost_model(run_dir: Path, doc: dict) -> CostModel:
    prof = read_json(run_dir / doc["artifacts"]["profile"])
    return CostModel(
        BackboneProfile.from_json(prof["backbone"]),
        {k: int(v["flops"]) for k, v in prof["heads"].items()},
    )


def _stage_folders(run_dir: Path, stage: str) -> list[Path]:
    return sorted((run_dir / schema.CACHE_DIR).glob(f"{stage}-*"))


# --------------------------------------------------------------------------- the files
def test_run_folder_holds_every_file_of_the_schema(first):
    _, _, run_dir = first
    for name in (
        schema.PARETO_JSON,
        schema.PARETO_CSV,
        schema.PARETO_PNG,
        schema.PLACEMENTS_JSON,
        schema.BASELINES_JSON,
        schema.HEADS_PNG,
        schema.HEADS_CSV,
        schema.RUN_JSON,
        schema.STUDY_DB,
    ):
        assert (run_dir / name).is_file(), name
    for png in (schema.PARETO_PNG, schema.HEADS_PNG):
        assert (run_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    store = StageStore(run_dir / schema.CACHE_DIR)
    for stage in ("profile", "heads", "predict"):
        (folder,) = _stage_folders(run_dir, stage)
        assert store.verify(folder) is None
        assert (folder / MANIFEST).is_file()


def test_pareto_json_has_the_documented_keys(first):
    _, _, run_dir = first
    doc = _doc(run_dir)
    assert {
        "schema",
        "run",
        "unit",
        "backbone",
        "data",
        "budget",
        "artifacts",
        "front",
        "recommended",
        "baselines",
        "hypervolume",
        "search",
    } <= set(doc)
    assert doc["schema"] == schema.PARETO_SCHEMA
    assert doc["run"] == "run"
    assert "FLOPs" in doc["unit"]
    assert {"spec", "weights_sha256", "flops", "val_accuracy", "test_accuracy"} <= set(
        doc["backbone"]
    )
    assert doc["backbone"]["spec"] == TINY.to_dict()
    assert doc["data"] == DataSpec(limit=LIMIT).to_dict()
    assert doc["budget"]["text"] == "70%" and doc["budget"]["kind"] == "mean"
    assert doc["budget"]["flops"] == pytest.approx(0.7 * doc["backbone"]["flops"])
    for key in ("heads", "predictions", "profile"):
        assert (run_dir / doc["artifacts"][key]).exists(), key
    for m in doc["front"]:
        assert {"id", "config", "placement", "val", "test", "speedup", "recommended"} <= set(m)
    for b in doc["baselines"]:
        assert {
            "name",
            "description",
            "points",
            "best_val_accuracy",
            "hypervolume",
            "ratio",
        } <= set(b)
    assert {"front", "reference"} <= set(doc["hypervolume"])
    assert set(doc["hypervolume"]["reference"]) == {"accuracy", "cost_fraction"}
    assert {"sampler", "n_trials", "seconds"} <= set(doc["search"])
    assert doc["search"]["sampler"] == "nsga2"
    assert doc["search"]["n_trials"] == N_TRIALS
    run = read_json(run_dir / schema.RUN_JSON)
    assert run["budget"] == "70%" and run["stage_keys"] == doc["stage_keys"]
    env = run["environment"]  # what a same-seed rerun on another machine may differ by
    assert env["torch_threads"] >= 1 and env["torch"] and env["machine"]


def test_front_is_within_budget_and_rescored_on_val_and_test(first):
    result, _, run_dir = first
    doc = _doc(run_dir)
    budget = doc["budget"]["flops"]
    costs = _cost_model(run_dir, doc)
    preds = Predictions.load(run_dir / doc["artifacts"]["predictions"])
    val, test = Evaluator(preds, "val", costs), Evaluator(preds, "test", costs)
    assert preds.splits["val"].num_samples == preds.splits["test"].num_samples == LIMIT
    front = doc["front"]
    assert front and len(front) == len(result.search.front)
    assert [m["id"] for m in front] == list(range(len(front)))
    assert [m["val"]["mean_flops"] for m in front] == sorted(m["val"]["mean_flops"] for m in front)
    for m in front:
        config = ExitConfig.from_dict(m["config"])
        assert m["val"]["mean_flops"] <= budget * (1 + 1e-12)
        assert m["placement"] == config.placement_key
        for name, ev in (("val", val), ("test", test)):
            want = ev.evaluate(config).to_dict()
            assert m[name]["exit_counts"] == want["exit_counts"]
            for key in ("accuracy", "mean_flops", "p95_flops", "max_flops", "speedup"):
                assert m[name][key] == pytest.approx(want[key], rel=1e-12), (name, key)
            assert sum(m[name]["exit_counts"]) == LIMIT
    # each member's intervals, recomputed from its per-sample outcomes
    bb_ok = val.correct[-1].astype(bool)
    for m in front:
        ok = val.correct_of(ExitConfig.from_dict(m["config"]))
        low, high = wilson_interval(int(ok.sum()), ok.size)
        assert (m["val"]["accuracy_low"], m["val"]["accuracy_high"]) == (low, high)
        assert low <= m["val"]["accuracy"] <= high
        gain = paired_difference(ok, bb_ok)
        assert m["val"]["vs_backbone"]["difference"] == pytest.approx(
            m["val"]["accuracy"] - doc["backbone"]["val_accuracy"], abs=1e-12
        )
        assert (m["val"]["vs_backbone"]["low"], m["val"]["vs_backbone"]["high"]) == (
            gain.low,
            gain.high,
        )
    # the recommendation: the highest lower bound of the gain over the backbone, cheaper on ties
    best = max(front, key=lambda m: (m["val"]["vs_backbone"]["low"], -m["val"]["mean_flops"]))
    assert doc["recommended"] == best["id"]
    assert [m["recommended"] for m in front].count(True) == 1
    # the validation front is non-dominated
    for a in front:
        for b in front:
            assert not (
                b["val"]["accuracy"] >= a["val"]["accuracy"]
                and b["val"]["mean_flops"] < a["val"]["mean_flops"]
            )
    placements = read_json(run_dir / schema.PLACEMENTS_JSON)
    assert set(placements) == {m["placement"] for m in front}
    for points in placements.values():
        costs_of = [p["mean_flops"] for p in points]
        assert costs_of == sorted(costs_of)
        assert 1 <= len(points) <= 64
        assert {"thresholds", "threshold_mode", "val_accuracy", "mean_flops"} <= set(points[0])


def test_baselines_and_hypervolume_ratios(first):
    _, _, run_dir = first
    doc = _doc(run_dir)
    scale = doc["backbone"]["flops"]
    ref = doc["hypervolume"]["reference"]
    assert ref == {"accuracy": pytest.approx(0.1), "cost_fraction": pytest.approx(0.7)}
    front_hv = hypervolume(
        [m["val"]["accuracy"] for m in doc["front"]],
        [m["val"]["mean_flops"] / scale for m in doc["front"]],
        0.1,
        0.7,
    )
    assert doc["hypervolume"]["front"] == pytest.approx(front_hv, rel=1e-12)
    names = [b["name"] for b in doc["baselines"]]
    # 4 blocks: paper002 after L/4, L/2, 3L/4 = 1, 2, 3; mlp at every location; MEViT's linear
    # exits after 2..3 with confidence (no predictors); no lph/gah heads, so no LGViT baseline
    assert names == ["backbone", "ryu@1", "ryu@2", "ryu@3", "multiexit-vit-mlp", "mevit"]
    backbone = doc["baselines"][0]
    assert backbone["points"] == 0 and backbone["ratio"] is None  # 100% > 70%
    preds = Predictions.load(run_dir / doc["artifacts"]["predictions"])
    test = Evaluator(preds, "test", _cost_model(run_dir, doc))
    fronts = read_json(run_dir / schema.BASELINES_JSON)  # each baseline's own front, as columns
    assert list(fronts) == names
    with_area = 0
    for b in doc["baselines"]:
        f = fronts[b["name"]]
        assert len(f["val_accuracy"]) == b["points"]
        assert b["best_val_accuracy"] == max(f["val_accuracy"], default=None)
        hv = hypervolume(f["val_accuracy"], [c / scale for c in f["val_mean_flops"]], 0.1, 0.7)
        assert b["hypervolume"] == pytest.approx(hv, rel=1e-12, abs=1e-15)
        assert all(c <= doc["budget"]["flops"] * (1 + 1e-12) for c in f["val_mean_flops"])
        for i in range(b["points"]):  # every point re-scores to what the file says
            config = config_of_column(f, i)
            if f["threshold_mode"][i] == "shared":  # written once, however many exits
                assert isinstance(f["thresholds"][i], float)
            assert test.quick(config)[:2] == (f["test_accuracy"][i], f["test_mean_flops"][i])
        if hv > 0:
            with_area += 1
            assert b["ratio"] == pytest.approx(front_hv / hv, rel=1e-12)
            # the baselines' placements seed the search, so its front is never worse
            assert b["ratio"] >= 1 - 1e-9
        else:
            assert b["ratio"] is None
    assert with_area >= 1


def test_heads_table_marks_practical_exits(first):
    _, _, run_dir = first
    doc = _doc(run_dir)
    prof = read_json(run_dir / doc["artifacts"]["profile"])
    blocks = prof["backbone"]["blocks"]
    with open(run_dir / schema.HEADS_CSV) as fh:
        rows = list(csv.DictReader(fh))
    assert len(rows) == HEADS + 1
    for r in rows:
        loc = int(r["location"])
        if r["key"] == "final":
            assert int(r["cumulative_flops"]) == prof["backbone"]["total_flops"]
        else:
            assert int(r["cumulative_flops"]) == (
                blocks[loc - 1]["cumulative_flops"] + prof["heads"][r["key"]]["flops"]
            )
    costs = [int(r["cumulative_flops"]) for r in rows]
    assert len(set(costs)) == len(costs)
    for r in rows:
        cheaper = [
            float(o["val_accuracy"])
            for o in rows
            if int(o["cumulative_flops"]) < int(r["cumulative_flops"])
        ]
        practical = all(float(r["val_accuracy"]) > a for a in cheaper)
        assert (r["practical"] == "True") == practical, r["key"]


# ------------------------------------------------------------------ one backbone pass
def test_backbone_runs_once_per_batch_for_all_heads(tmp_path, space_file):
    settings = _settings(tmp_path / "run", space_file)
    torch.manual_seed(0)
    ctx = prepare(settings)
    stage_profile(ctx)
    calls = []
    hook = ctx.backbone.model.blocks[0].register_forward_pre_hook(
        lambda m, a: calls.append(a[0].shape[0])
    )
    try:
        bank = stage_heads(ctx)
    finally:
        hook.remove()
    assert len(bank) == HEADS
    train_batches = math.ceil(LIMIT / BATCH)  # 400 samples in batches of 128: 4
    val_batches = math.ceil(LIMIT / settings.heads.eval_batch_size)  # one validation pass: 1
    assert len(calls) == train_batches + val_batches
    assert sum(calls) == 2 * LIMIT  # every training and every validation sample once
    summary = read_json(ctx.folders["heads"] / SUMMARY)
    assert summary["backbone_passes"] == len(calls)


# ------------------------------------------------------------------------------ reruns
def test_rerun_reuses_every_stage_and_gives_the_same_front(first, copy_of_first, space_file):
    result, first_progress, first_dir = first
    assert not any("reusing" in m for m in first_progress.logs)
    manifests = {
        p.parent.name: read_json(p)["created"]
        for p in (copy_of_first / schema.CACHE_DIR).glob(f"*/{MANIFEST}")
    }
    weights = next(iter(_stage_folders(copy_of_first, "heads"))) / "heads.safetensors"
    mtime = weights.stat().st_mtime_ns
    progress = RecordingProgress()
    again = _run(_settings(copy_of_first, space_file), progress)
    logs = "\n".join(progress.logs)
    assert "profile: reusing the cached profile" in logs
    assert f"heads: reusing {HEADS} heads trained" in logs
    assert "predict: reusing cached predictions" in logs
    assert f"search: {N_TRIALS} finished trial(s) kept, 0 to go" in logs
    assert "heads epoch" not in logs  # no training
    assert {
        p.parent.name: read_json(p)["created"]
        for p in (copy_of_first / schema.CACHE_DIR).glob(f"*/{MANIFEST}")
    } == manifests
    assert weights.stat().st_mtime_ns == mtime
    assert [(p.config, p.accuracy, p.mean_cost) for p in again.search.front] == [
        (p.config, p.accuracy, p.mean_cost) for p in result.search.front
    ]
    assert _doc(copy_of_first)["front"] == _doc(first_dir)["front"]


def test_a_handful_of_validation_samples_is_refused_before_any_work(tmp_path, space_file):
    settings = _settings(tmp_path / "run", space_file, data=DataSpec(limit=LIMIT, val_size=7))
    with pytest.raises(DataError, match=r"validation has 7 samples; .* give at least 10"):
        _run(settings)
    assert _stage_folders(tmp_path / "run", "profile") == []


def test_a_study_db_from_elsewhere_is_not_resumed(first, copy_of_first, space_file):
    """A study.db copied without the caches that made it (a committed result, another
    machine's run) holds trials this folder did not make: the search starts afresh."""
    result, _, _ = first
    assert result.report["search"]["trials_per_second"] > 0
    shutil.rmtree(copy_of_first / schema.CACHE_DIR)
    progress = RecordingProgress()
    again = _run(_settings(copy_of_first, space_file), progress)
    logs = "\n".join(progress.logs)
    assert "was not started by this run folder" in logs
    assert "finished trial(s) kept" not in logs
    assert again.search.n_trials == N_TRIALS and again.search.ran_now == N_TRIALS
    # the same seed gives the same trials, hence the same front
    assert _doc(copy_of_first)["front"] == _doc(first[2])["front"]
    # a third run on the folder resumes its own study and runs nothing: no rate to report
    progress = RecordingProgress()
    third = _run(_settings(copy_of_first, space_file), progress)
    assert f"search: {N_TRIALS} finished trial(s) kept, 0 to go" in progress.logs
    assert third.report["search"]["trials_per_second"] is None
    assert _doc(copy_of_first)["search"]["trials_per_second"] is None  # JSON: null, never 1e9


def test_new_split_seed_retrains_heads_but_reuses_the_profile(first, copy_of_first, space_file):
    result, _, _ = first
    progress = RecordingProgress()
    settings = _settings(copy_of_first, space_file, data=DataSpec(limit=LIMIT, seed=1))
    again = _run(settings, progress)
    logs = "\n".join(progress.logs)
    assert "profile: reusing the cached profile" in logs
    assert "heads: reusing" not in logs and "predict: reusing" not in logs
    assert "heads epoch 1" in logs
    assert len(_stage_folders(copy_of_first, "profile")) == 1
    assert len(_stage_folders(copy_of_first, "heads")) == 2
    assert len(_stage_folders(copy_of_first, "predict")) == 2
    assert again.ctx.keys["profile"] == result.ctx.keys["profile"]
    assert again.ctx.keys["heads"] != result.ctx.keys["heads"]
    assert again.ctx.keys["predict"] != result.ctx.keys["predict"]
    assert again.search.front


def test_a_tighter_budget_reuses_the_heads_it_keeps(first, copy_of_first, space_file, tmp_path):
    """A max budget that rules out some candidates takes the others from the bank trained for
    all of them, and its run equals one that trained only the kept heads."""
    result, _, first_dir = first
    tight = {"budget": "45%", "budget_kind": "max"}
    progress = RecordingProgress()
    again = _run(_settings(copy_of_first, space_file, **tight), progress)
    logs = "\n".join(progress.logs)
    kept = [s.key for s in again.ctx.candidates]
    assert 0 < len(kept) < HEADS and "candidate heads not trained" in logs
    assert f"heads: reusing {len(kept)} of the {HEADS} heads trained with the same" in logs
    assert "heads epoch" not in logs and "predict: taking these heads' rows" in logs
    # the kept heads, copied into a bank of the run's own: its files name exactly its heads
    assert len(_stage_folders(copy_of_first, "heads")) == 2
    assert len(_stage_folders(copy_of_first, "predict")) == 2
    assert again.ctx.keys["heads"] != result.ctx.keys["heads"]
    doc = _doc(copy_of_first)
    assert doc["artifacts"]["heads"] != _doc(first_dir)["artifacts"]["heads"]
    assert again.ctx.keys["heads"].startswith(Path(doc["artifacts"]["heads"]).parent.name[6:])
    own = read_json(copy_of_first / doc["artifacts"]["heads_summary"])
    assert [h["key"] for h in own["heads"]] == kept
    assert own["reused"]["from"] == Path(_doc(first_dir)["artifacts"]["heads"]).parent.name

    fresh = _run(_settings(tmp_path / "fresh", space_file, **tight))
    assert fresh.ctx.keys["heads"] == again.ctx.keys["heads"]
    assert (
        [s.key for s in fresh.predictions.heads] == [s.key for s in again.predictions.heads] == kept
    )
    for split, sp in fresh.predictions.splits.items():
        for name in ("confidence", "entropy", "pred", "uncertainty"):
            a, b = getattr(sp, name), getattr(again.predictions.splits[split], name)
            assert a.tobytes() == b.tobytes(), (split, name)
    assert _doc(tmp_path / "fresh")["front"] == _doc(copy_of_first)["front"]
    # a bank of the same family made for the tight budget now serves it directly
    progress = RecordingProgress()
    _run(_settings(tmp_path / "fresh", space_file, **tight), progress)
    assert f"heads: reusing {len(kept)} heads trained" in progress.logs

    # the first run's looser budget there trains only the heads the tight bank lacks
    progress = RecordingProgress()
    loose = _run(_settings(tmp_path / "fresh", space_file), progress)
    logs = "\n".join(progress.logs)
    assert f"heads: {len(kept)} of the {HEADS} heads come from heads-" in logs
    assert f"training the other {HEADS - len(kept)}" in logs
    assert f"predict: {len(kept)} heads' rows from the cached predict-" in logs
    assert f"predicting the other {HEADS - len(kept)}" in logs
    assert loose.ctx.keys["heads"] == result.ctx.keys["heads"]
    for split, sp in loose.predictions.splits.items():
        for name in ("confidence", "entropy", "pred", "uncertainty"):
            a, b = getattr(sp, name), getattr(result.predictions.splits[split], name)
            assert a.tobytes() == b.tobytes(), (split, name)
    assert _doc(tmp_path / "fresh")["front"] == _doc(first_dir)["front"]
    summary = read_json(tmp_path / "fresh" / _doc(tmp_path / "fresh")["artifacts"]["heads_summary"])
    assert [h["key"] for h in summary["heads"]] == [s.key for s in result.predictions.heads]
    assert sorted(summary["reused"]["heads"]) == sorted(kept)


def test_budget_below_the_cheapest_exit_fails_before_training(tmp_path, space_file):
    run_dir = tmp_path / "run"
    with pytest.raises(BudgetError) as info:
        _run(_settings(run_dir, space_file, budget="1%"))
    (profile_dir,) = _stage_folders(run_dir, "profile")
    prof = read_json(profile_dir / "profile.json")
    first_block = prof["backbone"]["blocks"][0]["cumulative_flops"]
    cheapest = min(first_block + prof["heads"][k]["flops"] for k in ("linear@1", "mlp@1"))
    message = str(info.value)
    assert "cheapest" in message
    assert format_flops(cheapest) in message
    assert format_flops(0.01 * prof["backbone"]["total_flops"]) in message
    assert _stage_folders(run_dir, "heads") == []  # no training started


def test_budget_above_the_backbone_is_a_note(copy_of_first, space_file):
    result = _run(_settings(copy_of_first, space_file, budget="100%"))
    assert "above the backbone's own cost" in result.notes[0]
    # the tiny test backbone has random weights: the run says so instead of trusting its exits
    assert len(result.notes) == 2 and "no better than chance on validation" in result.notes[1]
    assert _doc(copy_of_first)["notes"][: len(result.notes)] == result.notes
    assert result.search.front


def test_worst_case_budget_cuts_every_member(copy_of_first, space_file):
    result = _run(_settings(copy_of_first, space_file, budget_kind="max"))
    doc = _doc(copy_of_first)
    budget = doc["budget"]["flops"]
    assert doc["budget"]["kind"] == "max"
    assert doc["front"]
    for m in doc["front"]:
        assert m["config"]["cut"] is True
        # the cut makes the bound structural: it holds on test too, not only where tuned
        assert m["val"]["max_flops"] <= budget * (1 + 1e-12)
        assert m["test"]["max_flops"] <= budget * (1 + 1e-12)
    assert all(p.config.cut for p in result.search.front)


def test_same_settings_give_the_same_random_backbone(tmp_path, space_file):
    settings = _settings(tmp_path / "run", space_file)
    torch.manual_seed(1)
    a = prepare(settings).backbone.weights_checksum()
    torch.manual_seed(2)  # whatever state the process is in
    b = prepare(settings).backbone.weights_checksum()
    assert a == b
