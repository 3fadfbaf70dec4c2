"""Checkpoints each epoch, exact resume after an interruption, and divergence."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest
import torch
from finetune_world import FAST, FinetuneWorld, Interrupt

from exitsearch.errors import ConfigError, TrainingDivergedError
from exitsearch.export import load_bundle
from exitsearch.finetune import (
    ClassifierWise,
    MultiExitNet,
    create_strategy,
    load_checkpoint,
    register_sampler,
    train_configuration,
)
from exitsearch.finetune.base import Batch


def _net(bundle: Path) -> MultiExitNet:
    model = load_bundle(bundle)
    return MultiExitNet.from_heads(model.backbone, model.heads, model.config)


def _run(
    world: FinetuneWorld, bundle: Path, name: str, folder: Path, settings, progress=None, **hp
):  # type: ignore[no-untyped-def]
    net = _net(bundle)
    log = train_configuration(
        net, create_strategy(name, hp), settings, world.splits, folder, progress=progress
    )
    return net.state_dict(), log


@pytest.mark.parametrize(
    ("bundle", "name", "hp", "epochs", "where", "kept"),
    [
        # mid-epoch in the second of two epochs: optimiser state, random exit draws
        ("mevit", "mevit", {}, 2, ("sandwich epoch 2/2", 2), 1),
        # mid-way through stage 1's second epoch: the alternation, the optimiser state
        ("lgvit", "lgvit", {"stage1_epochs": 2}, 1, ("objectives) epoch 2/2", 3), 1),
        # mid-way through stage 2: a new optimiser, the aligning modules' BatchNorm
        ("lgvit", "lgvit", {}, 1, ("stage 2 (heads, self-distillation) epoch 1/1", 2), 1),
    ],
)
def test_resume_is_exact(ft_world, tmp_path, bundle, name, hp, epochs, where, kept):
    settings = dataclasses.replace(FAST, augment=True, epochs=epochs)
    path = getattr(ft_world, bundle)
    want, full_log = _run(ft_world, path, name, tmp_path / "full", settings, **hp)
    with pytest.raises(KeyboardInterrupt):
        _run(ft_world, path, name, tmp_path / "cut", settings, Interrupt(*where), **hp)
    assert json.loads((tmp_path / "cut" / "state.json").read_text())["epoch"] == kept
    # a crash while saving the next epoch left a partial tensors file: state.json still
    # names the last complete one
    (tmp_path / "cut" / f"state-epoch{kept + 1}.safetensors").write_bytes(b"partial")
    progress = Interrupt("never")
    got, log = _run(ft_world, path, name, tmp_path / "cut", settings, progress, **hp)
    assert any("resuming after epoch" in m for m in progress.messages)
    assert len(progress.tasks) == len(full_log.history) - kept  # finished epochs are not rerun
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)
    assert [h["train"] for h in log.history] == [h["train"] for h in full_log.history]
    assert sorted(p.name for p in (tmp_path / "cut").iterdir()) == [
        "state-epoch" + str(len(full_log.history)) + ".safetensors",
        "state.json",
    ]


def test_a_finished_checkpoint_is_not_trained_again(ft_world, tmp_path):
    want, _ = _run(ft_world, ft_world.mevit, "classifier-wise", tmp_path, FAST)
    progress = Interrupt("classifier-wise")  # would interrupt any epoch that starts
    got, log = _run(ft_world, ft_world.mevit, "classifier-wise", tmp_path, FAST, progress)
    assert all(torch.equal(got[k], want[k]) for k in want) and log.epochs == 1


def test_a_checkpoint_of_other_training_is_refused(ft_world, tmp_path):
    _run(ft_world, ft_world.mevit, "classifier-wise", tmp_path, FAST)
    with pytest.raises(ConfigError, match="holds a checkpoint of another fine-tuning"):
        _run(
            ft_world, ft_world.mevit, "classifier-wise", tmp_path, dataclasses.replace(FAST, seed=1)
        )


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(ft_world, tmp_path):
    settings = dataclasses.replace(FAST, epochs=3)
    with pytest.raises(TrainingDivergedError) as err:
        _run(ft_world, ft_world.mevit, "test-diverges", tmp_path, settings)
    msg = str(err.value)
    assert "\n" not in msg
    assert "loss became nan" in msg and "epoch 2, step 1" in msg
    assert f"the checkpoint of epoch 1 in {tmp_path} is kept" in msg
    state = json.loads((tmp_path / "state.json").read_text())
    assert state["epoch"] == 1
    # the kept checkpoint is that of the healthy first epoch (the loss is classifier-wise's)
    with pytest.raises(KeyboardInterrupt):
        _run(
            ft_world,
            ft_world.mevit,
            "classifier-wise",
            tmp_path / "ok",
            settings,
            Interrupt("epoch 2/3"),
        )
    healthy = load_checkpoint(tmp_path / "ok")
    kept = load_checkpoint(tmp_path)
    assert all(torch.equal(kept[k], healthy[k]) for k in healthy)


@register_sampler("test-poisons")
class Poisons(ClassifierWise):
    """Classifier-wise whose last step leaves an infinite weight behind a finite loss, as an
    overflowing optimiser step would (tests only)."""

    def skip_update(self, net: MultiExitNet, batch: Batch) -> list[torch.nn.Parameter]:
        if batch.step == 3:  # the last of the epoch's four steps
            with torch.no_grad():
                net.heads[0].fc.weight[0, 0] = float("inf")
        return []


def test_non_finite_weights_are_caught_before_a_checkpoint(ft_world, tmp_path):
    with pytest.raises(TrainingDivergedError, match="weights became non-finite") as err:
        _run(ft_world, ft_world.mevit, "test-poisons", tmp_path, FAST)
    assert "bank.heads.0.fc.weight" in str(err.value)
    assert "no epoch had finished yet, so no checkpoint" in str(err.value)
    assert not (tmp_path / "state.json").exists()
