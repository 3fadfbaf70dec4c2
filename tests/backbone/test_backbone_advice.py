"""A backbone that does not fit the user's data or checkpoint: the advice given works.

The embedded preset's shipped weights are for Fashion-MNIST's 10 classes; data of another
number of classes needs a backbone trained for it (``backbone train --from-scratch`` with the
user's ``-o``), and a checkpoint that does not fit says how it was built."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import timm
import torch
from exitsearch_cli.main import app
from safetensors.torch import save_file
from typer.testing import CliRunner

from exitsearch.backbone import BackboneSpec, create_backbone
from exitsearch.errors import CheckpointError


def _four_classes(path: Path, n: int = 96) -> Path:
    rng = np.random.default_rng(0)
    y = np.arange(n) % 4
    x = (rng.random((n, 28, 28)) * 60 + y[:, None, None] * 45).astype(np.uint8)
    np.savez(path, x=x, y=y)
    return path


def _last_line(result) -> str:  # type: ignore[no-untyped-def]
    return (result.stderr or result.output).strip().splitlines()[-1]


def test_the_advice_for_other_classes_leads_to_a_backbone_that_fits(tmp_path: Path):
    data = str(_four_classes(tmp_path / "four.npz"))
    runner = CliRunner()
    run = runner.invoke(
        app, ["run", "--data", data, "--budget", "50%", "--run", str(tmp_path / "r")]
    )
    assert run.exit_code == 2
    line = _last_line(run)
    assert "the shipped fmnist-vit12 weights are for fashion-mnist" in line, line
    advice = "exitsearch backbone train --model fmnist-vit12 --from-scratch -o num_classes=4"
    assert advice in line, line
    # -o alone with the shipped weights: the same advice, not a tensor shape
    with pytest.raises(CheckpointError, match="--from-scratch -o num_classes=4") as info:
        create_backbone(BackboneSpec("fmnist-vit12", overrides={"num_classes": 4}))
    assert "\n" not in str(info.value)
    # the advice, followed: --from-scratch keeps the user's -o
    out = tmp_path / "bb"
    args = ["backbone", "train", "--model", "fmnist-vit12", "--from-scratch", "-o", "num_classes=4"]
    args += ["--data", data, "--epochs", "1", "--val-size", "24", "--augment", "none"]
    torch.set_num_threads(1)
    trained = runner.invoke(app, [*args, "--out", str(out)])
    assert trained.exit_code == 0, trained.output
    record = json.loads((out / "backbone.json").read_text())
    assert record["spec"]["overrides"]["num_classes"] == 4
    bb = create_backbone(
        BackboneSpec(
            "fmnist-vit12",
            overrides={"num_classes": 4},
            checkpoint=str(out / "model.safetensors"),
        )
    )
    assert bb.num_classes == 4
    # ...and a run that forgets its -o is told what the checkpoint was trained with
    with pytest.raises(
        CheckpointError, match=r"it predicts 4 classes: pass --override num_classes=4"
    ):
        create_backbone(BackboneSpec("fmnist-vit12", checkpoint=str(out / "model.safetensors")))


def test_a_checkpoint_of_another_architecture_names_it(tmp_path: Path):
    small = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 2, "num_heads": 2}
    model = timm.create_model("vit_tiny_patch16_224", num_classes=3, **small)
    folder = tmp_path / "ckpt"
    folder.mkdir()
    save_file(model.state_dict(), str(folder / "model.safetensors"))
    spec = {"model": "vit_tiny_patch16_224", "overrides": {**small, "num_classes": 3}}
    (folder / "backbone.json").write_text(json.dumps({"spec": spec}))
    with pytest.raises(CheckpointError) as info:
        create_backbone(
            BackboneSpec(
                "vit_tiny_patch16_224",
                overrides={"img_size": 32, "patch_size": 8},
                checkpoint=str(folder / "model.safetensors"),
            )
        )
    message = str(info.value)
    assert (
        "it was trained with -o embed_dim=48 -o depth=2 -o num_heads=2 -o num_classes=3" in message
    )
    assert "\n" not in message


def test_an_image_size_the_record_left_at_its_default_is_named(tmp_path: Path):
    """``-o img_size=256`` against a checkpoint trained at the model's own 224: the record has
    no ``img_size`` override, its description has the size."""
    small = {"depth": 2, "embed_dim": 48, "num_heads": 2, "num_classes": 4}
    model = timm.create_model("deit_tiny_patch16_224", **small)
    save_file(model.state_dict(), str(tmp_path / "model.safetensors"))
    record = {
        "spec": {"model": "deit_tiny_patch16_224", "overrides": small},
        "describe": {"img_size": [224, 224], "depth": 2},
    }
    (tmp_path / "backbone.json").write_text(json.dumps(record))
    spec = BackboneSpec(
        "deit_tiny_patch16_224",
        overrides={**small, "img_size": 256},
        checkpoint=str(tmp_path / "model.safetensors"),
    )
    with pytest.raises(CheckpointError, match=r"it was trained with -o img_size=224 "):
        create_backbone(spec)


def test_a_distilled_deit_checkpoint_says_how_many_classes(tmp_path: Path):
    """DeiT's distilled models have two classifiers (``head``, ``head_dist``): the advice holds
    for them too."""
    from exitsearch.backbone.checkpoint import load_weights

    small = {"img_size": 32, "patch_size": 8, "embed_dim": 48, "depth": 1, "num_heads": 2}
    trained = timm.create_model("deit_tiny_distilled_patch16_224", num_classes=3, **small)
    path = tmp_path / "model.safetensors"
    save_file(trained.state_dict(), str(path))
    fresh = timm.create_model("deit_tiny_distilled_patch16_224", **small)
    with pytest.raises(
        CheckpointError, match=r"it predicts 3 classes: pass --override num_classes=3"
    ):
        load_weights(fresh, path)
