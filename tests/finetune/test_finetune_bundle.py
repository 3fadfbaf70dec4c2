"""A fine-tuning end to end: the new bundle, its operating points, its recipe, reruns."""

from __future__ import annotations

import dataclasses
import shutil
from pathlib import Path

import numpy as np
import pytest
from finetune_world import FAST, FinetuneWorld, Interrupt

import exitsearch
from exitsearch._io import file_sha256
from exitsearch.data import iterate_batches
from exitsearch.errors import BundleError
from exitsearch.export import read_manifest
from exitsearch.finetune import FinetuneResult, Recipe, finetune, make_recipe
from exitsearch.finetune.evaluate import cost_model
from exitsearch.search.evaluator import Evaluator
from exitsearch.training import Predictions


@pytest.fixture(scope="module")
def lgvit_run(ft_world: FinetuneWorld, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    out = tmp_path_factory.mktemp("lgvit-run") / "lgvit"
    return finetune(make_recipe(ft_world.lgvit, "lgvit", FAST), out)


@pytest.fixture(scope="module")
def mevit_run(ft_world: FinetuneWorld, tmp_path_factory: pytest.TempPathFactory) -> FinetuneResult:
    out = tmp_path_factory.mktemp("mevit-run") / "cw"
    return finetune(make_recipe(ft_world.mevit, "classifier-wise", FAST), out)


def test_the_new_bundle_loads_with_exitsearch_load(lgvit_run, ft_world):
    model = exitsearch.load(lgvit_run.bundle)
    source = exitsearch.load(ft_world.lgvit)
    assert [s.key for s in model.config.exits] == [s.key for s in source.config.exits]
    assert model.config.criterion == source.config.criterion
    # stage 1 trained the backbone
    assert model.backbone.weights_checksum() != source.backbone.weights_checksum()
    meta = model.manifest["meta"]
    assert meta["finetune"]["strategy"] == "lgvit"
    assert (
        meta["finetune"]["source"]["manifest_sha256"]
        == read_manifest(ft_world.lgvit)["manifest_sha256"]
    )


def test_classifier_wise_bundle_keeps_the_backbone(mevit_run, ft_world):
    new, old = read_manifest(mevit_run.bundle), read_manifest(ft_world.mevit)
    assert new["backbone"]["weights_sha256"] == old["backbone"]["weights_sha256"]
    assert new["files"]["heads.safetensors"] != old["files"]["heads.safetensors"]


@pytest.mark.parametrize("which", ["lgvit_run", "mevit_run"])
def test_operating_points_are_reproduced_by_the_evaluator(which, request):
    run: FinetuneResult = request.getfixturevalue(which)
    model = exitsearch.load(run.bundle)
    preds = Predictions.load(run.out_dir / "predictions")
    costs = cost_model(model.backbone, model.config)
    assert tuple(costs.exit_flops(model.config)) == model.costs.exit_flops
    val = Evaluator(preds, "val", costs)
    assert len(model.operating_points) >= 2
    for p in model.operating_points:
        acc, mean, _ = val.quick(model.config.with_thresholds(p.thresholds, p.threshold_mode))
        assert acc == pytest.approx(p.val_accuracy, abs=1e-12)
        assert mean == pytest.approx(p.mean_flops, rel=1e-12)
    # the default point is one of them, and the manifest's predictions are the evaluator's
    assert model.point_index is not None
    predicted = model.manifest["predicted"]
    for split in ("val", "test"):
        ev = Evaluator(preds, split, costs).evaluate(model.config)
        assert predicted[split]["accuracy"] == pytest.approx(ev.accuracy)
        assert predicted[split]["mean_flops"] == pytest.approx(ev.mean_flops)


def test_the_runtime_takes_the_exits_the_evaluator_predicts(lgvit_run, ft_world):
    model = exitsearch.load(lgvit_run.bundle)
    preds = Predictions.load(lgvit_run.out_dir / "predictions")
    ev = Evaluator(preds, "val", cost_model(model.backbone, model.config))
    transform = model.backbone.input_transform()
    got = np.empty(ev.n, np.int64)
    for idx, x, _ in iterate_batches(ft_world.splits.val, 64):
        got[idx.numpy()] = model(transform(x)).exit_index.numpy()
    assert np.array_equal(got, ev.exit_index(model.config))


def test_the_report_compares_before_and_after_at_the_same_cost(lgvit_run, ft_world):
    rep = lgvit_run.report
    source = read_manifest(ft_world.lgvit)
    assert rep["strategy"] == "lgvit" and rep["training"]["epochs"] == 2
    assert [p["epochs"] for p in rep["training"]["phases"]] == [1, 1]
    # the budget is the source configuration's validation cost as exported
    assert rep["budget"]["mean_flops"] == pytest.approx(source["predicted"]["val"]["mean_flops"])
    assert rep["before"]["exported"]["val"]["accuracy"] == pytest.approx(
        source["predicted"]["val"]["accuracy"]
    )
    for side in ("before", "after"):
        m = rep[side]["matched"]
        assert m["val"]["mean_flops"] <= rep["budget"]["mean_flops"] * (1 + 1e-12)
        assert len(rep[side]["exits"]) == 4 and 0 <= m["test"]["accuracy"] <= 1
    # matched on validation: at least as good as the exported thresholds
    assert (
        rep["before"]["matched"]["val"]["accuracy"] >= rep["before"]["exported"]["val"]["accuracy"]
    )
    assert (lgvit_run.out_dir / "report.json").is_file()


def test_train_yaml_is_the_recipe(lgvit_run):
    recipe = Recipe.from_yaml(lgvit_run.bundle / "train.yaml")
    reported = lgvit_run.report["recipe"]
    # the report, a result to share, names the source bundle relative to the working directory
    assert not Path(reported["source"]["bundle"]).is_absolute()
    assert Path(reported["source"]["bundle"]).resolve() == Path(recipe.source.bundle).resolve()
    assert {**recipe.to_dict(), "source": reported["source"]} == reported
    assert recipe.identity == lgvit_run.report["recipe_identity"]
    read_manifest(lgvit_run.bundle)  # the rewritten recipe's checksums hold


def test_rerunning_the_recipe_reproduces_the_weights(lgvit_run, tmp_path):
    recipe = Recipe.from_yaml(lgvit_run.bundle / "train.yaml")
    again = finetune(recipe, tmp_path / "again")
    for name in ("backbone.safetensors", "heads.safetensors", "train.yaml"):
        assert file_sha256(again.bundle / name) == file_sha256(lgvit_run.bundle / name)


def test_a_finished_folder_is_reused_and_another_recipe_refused(mevit_run, ft_world):
    recipe = Recipe.from_yaml(mevit_run.bundle / "train.yaml")
    progress = Interrupt("classifier-wise")  # any epoch that started would interrupt
    same = finetune(recipe, mevit_run.out_dir, progress=progress)
    assert same.report == mevit_run.report and not progress.tasks
    other = make_recipe(ft_world.mevit, "classifier-wise", dataclasses.replace(FAST, seed=3))
    with pytest.raises(BundleError, match="already exists from another recipe"):
        finetune(other, mevit_run.out_dir)


def test_overwrite_replaces_a_result_of_another_recipe(ft_world, tmp_path):
    first = finetune(make_recipe(ft_world.mevit, "classifier-wise", FAST), tmp_path)
    other = make_recipe(ft_world.mevit, "classifier-wise", dataclasses.replace(FAST, seed=3))
    second = finetune(other, tmp_path, overwrite=True)
    assert second.report["recipe_identity"] == other.identity != first.report["recipe_identity"]
    assert Recipe.from_yaml(second.bundle / "train.yaml").training.seed == 3


def test_the_recipe_must_find_its_own_source_bundle(lgvit_run, ft_world, tmp_path):
    recipe = Recipe.from_yaml(lgvit_run.bundle / "train.yaml")
    with pytest.raises(BundleError, match="not the bundle this recipe was made from"):
        finetune(recipe, tmp_path / "x", bundle=ft_world.mevit)
    moved = Path(shutil.copytree(ft_world.lgvit, tmp_path / "moved"))
    gone = dataclasses.replace(
        recipe, source=dataclasses.replace(recipe.source, bundle=str(tmp_path / "nowhere"))
    )
    with pytest.raises(BundleError, match="not a bundle folder"):
        finetune(gone, tmp_path / "y")
    # a moved source is found through `bundle`
    assert finetune(gone, tmp_path / "z", bundle=moved).bundle.is_dir()
