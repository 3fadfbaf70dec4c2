"""Bundles: a faithful round trip, clear errors for damaged ones, and export from a run folder."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml
from export_world import SPECS, World, make_run, spread_point

import exitsearch
from exitsearch._io import file_sha256
from exitsearch.core.config import ExitConfig
from exitsearch.errors import BundleError
from exitsearch.export import (
    BUNDLE_SCHEMA,
    OperatingPoint,
    export_bundle,
    load_bundle,
    read_manifest,
)
from exitsearch.pipeline.selection import bundle_from_run
from exitsearch.search.refine import shared_curve


@pytest.fixture(scope="module")
def exported(world: World, tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    curve = shared_curve(world.ev, ExitConfig(SPECS, "patience", (1.0,) * 3, "shared"))
    config = spread_point(curve, world.ev).config
    points = [
        OperatingPoint(p.config.thresholds, "shared", p.mean_cost, p.accuracy)
        for p in curve
        if p.config.thresholds != config.thresholds
    ]
    predicted = {"val": world.ev.evaluate(config).to_dict()}
    path = export_bundle(
        tmp_path_factory.mktemp("bundles") / "b",
        world.backbone,
        world.bank,
        config,
        points,
        predicted,
        {"run": "tiny", "head_training": {"epochs": 3}},
    )
    return path, config, points, predicted


@pytest.fixture
def bundle_copy(exported, tmp_path: Path) -> Path:  # type: ignore[no-untyped-def]
    return Path(shutil.copytree(exported[0], tmp_path / "copy"))


def _images(world: World, n: int = 64) -> torch.Tensor:
    return world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:n]))


def test_round_trip_gives_identical_outputs(world: World, exported):  # type: ignore[no-untyped-def]
    path, config, points, predicted = exported
    original = world.model(config)
    for loaded in (load_bundle(path), exitsearch.load(path)):
        assert loaded.config == config and loaded.thresholds == config.thresholds
        assert loaded.backbone.weights_checksum() == world.backbone.weights_checksum()
        a, b = original(_images(world)), loaded(_images(world))
        assert torch.equal(a.logits, b.logits) and torch.equal(a.exit_index, b.exit_index)
        assert loaded.source == path
    # the config's own thresholds join the given points as the default operating point
    loaded = load_bundle(path)
    assert len(loaded.operating_points) == len(points) + 1
    assert loaded.operating_points[loaded.point_index].val_accuracy == predicted["val"]["accuracy"]
    costs = loaded.costs.exit_flops
    assert list(costs) == list(world.costs.exit_flops(config))


def test_manifest_records_what_the_model_is(world: World, exported):  # type: ignore[no-untyped-def]
    path, config, _, _ = exported
    doc = json.loads((path / "exitsearch.json").read_text())
    assert doc["schema_version"] == BUNDLE_SCHEMA == 1
    assert doc["backbone"]["spec"] == {
        "model": "vit_tiny_patch16_224",
        "overrides": world.backbone.spec.overrides,
    }
    assert doc["backbone"]["weights_sha256"] == world.backbone.weights_checksum()
    assert "checkpoint" not in doc["backbone"]["spec"]
    assert ExitConfig.from_dict(doc["config"]) == config
    assert [e["key"] for e in doc["exits"]] == [s.key for s in SPECS]
    assert doc["config"]["criterion"] == "patience" and doc["config"]["pause"] == {}
    assert set(doc["files"]) == {"backbone.safetensors", "heads.safetensors", "train.yaml"}
    for name, digest in doc["files"].items():
        assert file_sha256(path / name) == digest
    recipe = yaml.safe_load((path / "train.yaml").read_text())
    assert recipe["strategy"] == "classifier-wise" and recipe["head_training"] == {"epochs": 3}
    assert recipe["heads"]["exits"] == [s.key for s in SPECS]
    assert not [p.name for p in path.parent.iterdir() if p.name.startswith(".")]


def _one_line_error(path: Path) -> str:
    with pytest.raises(BundleError) as info:
        load_bundle(path)
    msg = str(info.value)
    assert "\n" not in msg
    return msg


def test_missing_file(bundle_copy: Path):
    (bundle_copy / "heads.safetensors").unlink()
    msg = _one_line_error(bundle_copy)
    assert "heads.safetensors" in msg and "missing" in msg


def test_altered_byte(bundle_copy: Path):
    f = bundle_copy / "backbone.safetensors"
    data = bytearray(f.read_bytes())
    data[len(data) // 2] ^= 0x01
    f.write_bytes(bytes(data))
    msg = _one_line_error(bundle_copy)
    assert "backbone.safetensors" in msg and "checksum differs" in msg


def test_newer_schema(bundle_copy: Path):
    m = bundle_copy / "exitsearch.json"
    doc = json.loads(m.read_text())
    doc["schema_version"] = 2
    m.write_text(json.dumps(doc))
    msg = _one_line_error(bundle_copy)
    assert msg.endswith(
        "bundle schema 2 is newer than this exitsearch understands (1); upgrade exitsearch"
    )
    assert "exitsearch.json" in msg


def test_malformed_json(bundle_copy: Path):
    (bundle_copy / "exitsearch.json").write_text('{"schema_version": 1, "backbone": ')
    msg = _one_line_error(bundle_copy)
    assert "exitsearch.json" in msg and "not valid JSON" in msg


def test_edited_manifest(bundle_copy: Path):
    m = bundle_copy / "exitsearch.json"
    doc = json.loads(m.read_text())
    doc["config"]["thresholds"] = [0.0, 0.0, 0.0]
    m.write_text(json.dumps(doc))
    assert "contents differ" in _one_line_error(bundle_copy)


def test_not_a_bundle(tmp_path: Path):
    assert "not a bundle folder" in _one_line_error(tmp_path / "nowhere")
    assert "exitsearch.json" in _one_line_error(tmp_path)


def test_existing_bundle_is_kept_unless_overwritten(world: World, exported, tmp_path: Path):  # type: ignore[no-untyped-def]
    path, config, _, _ = exported
    dest = Path(shutil.copytree(path, tmp_path / "b"))
    with pytest.raises(BundleError, match="already exists"):
        export_bundle(dest, world.backbone, world.bank, config)
    other = config.with_thresholds((3.0, 3.0, 3.0))
    export_bundle(dest, world.backbone, world.bank, other, overwrite=True)
    assert load_bundle(dest).thresholds == (3.0, 3.0, 3.0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b"]  # no temporary folders left


def test_failed_export_leaves_nothing_behind(world: World, tmp_path: Path):
    config = ExitConfig(SPECS, "confidence", (0.5,) * 3)
    heads = {s.key: world.bank.head(s.key) for s in SPECS[:2]}
    with pytest.raises(BundleError, match="no trained head for exit"):
        export_bundle(tmp_path / "b", world.backbone, heads, config)
    assert list(tmp_path.iterdir()) == []


# ------------------------------------------------------------------------ from a run folder
@pytest.fixture(scope="module")
def run_dir(world: World, tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("run") / "tiny"
    make_run(world, root)
    return root


def test_bundle_from_run_takes_the_recommended_member(world: World, run_dir: Path):
    pareto = json.loads((run_dir / "pareto.json").read_text())
    sel = bundle_from_run(run_dir)
    assert sel.config_id == 1
    assert sel.config == ExitConfig.from_dict(pareto["front"][1]["config"])
    assert [s.key for s in sel.heads.specs] == [s.key for s in sel.config.exits]
    for s, head in sel.heads:
        ref = world.bank.head(s.key).state_dict()
        assert all(torch.equal(v, ref[k]) for k, v in head.state_dict().items())
    placements = json.loads((run_dir / "placements.json").read_text())
    assert [p.to_dict() for p in sel.operating_points] == placements[sel.config.placement_key]
    assert sel.predicted["test"] == pareto["front"][1]["test"]
    assert sel.meta["data"] == pareto["data"] and sel.meta["head_training"]["epochs"] == 3
    assert sel.backbone.weights_checksum() == world.backbone.weights_checksum()


def test_bundle_from_run_by_id_and_unknown_ids(run_dir: Path):
    assert bundle_from_run(run_dir, 2).config_id == 2
    with pytest.raises(BundleError) as info:
        bundle_from_run(run_dir, 7)
    assert "configuration 7 is not on the front; known ids: 0, 1, 2" in str(info.value)


def test_bundle_from_run_without_recommendation(run_dir: Path, tmp_path: Path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    doc = json.loads((run / "pareto.json").read_text())
    doc["recommended"] = None
    (run / "pareto.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match=r"no configuration is recommended.*known ids: 0, 1, 2"):
        bundle_from_run(run)


def test_bundle_from_run_notices_other_backbone_weights(run_dir: Path, tmp_path: Path):
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    doc = json.loads((run / "pareto.json").read_text())
    doc["backbone"]["weights_sha256"] = "0" * 64
    (run / "pareto.json").write_text(json.dumps(doc))
    with pytest.raises(BundleError, match="differ from those the run searched with"):
        bundle_from_run(run)


def test_bundle_from_run_missing_files(run_dir: Path, tmp_path: Path):
    with pytest.raises(BundleError, match=r"pareto\.json: file is missing"):
        bundle_from_run(tmp_path)
    run = Path(shutil.copytree(run_dir, tmp_path / "run"))
    (run / "heads" / "heads.json").unlink()
    with pytest.raises(BundleError, match=r"heads\.json: file is missing"):
        bundle_from_run(run)


def test_run_to_bundle_to_model(world: World, run_dir: Path, tmp_path: Path):
    sel = bundle_from_run(run_dir, 0)
    path = export_bundle(
        tmp_path / "b",
        sel.backbone,
        sel.heads,
        sel.config,
        sel.operating_points,
        sel.predicted,
        sel.meta,
    )
    doc = read_manifest(path)
    assert doc["meta"]["config_id"] == 0 and doc["predicted"]["val"] == sel.predicted["val"]
    model = load_bundle(path)
    idx, pred, _ = world.run_split(model, 64)
    assert float((pred == world.splits.val.y).mean()) == sel.predicted["val"]["accuracy"]
    assert list(idx) == list(world.ev.exit_index(sel.config))
