"""Swin backbones: block numbering across stages, states by location, overrides, refusals."""

from __future__ import annotations

import json

import pytest
import torch

from exitsearch.backbone import BackboneSpec, create_backbone, parse_overrides
from exitsearch.backbone.presets import PRESETS, SWIN_PRESET
from exitsearch.backbone.swin import SwinBackbone
from exitsearch.errors import ConfigError

# Three stages on a 14x14 grid: 14x14 (window 7, shifted), 7x7 (window 7 = grid: no shift),
# 4x4 (7 padded by the merge to 8, halved; window clamped to 4).
SMALL = {
    "img_size": 28,
    "patch_size": 2,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 16,
    "depths": (2, 1, 2),
    "num_heads": (1, 2, 4),
    "window_size": 7,
}


@pytest.fixture(scope="module")
def swin() -> SwinBackbone:
    bb = create_backbone("swin_tiny_patch4_window7_224", **SMALL)
    assert isinstance(bb, SwinBackbone)
    return bb


def test_blocks_are_numbered_across_stages(swin):
    assert swin.depth == sum(SMALL["depths"]) == 5
    assert swin.depths == SMALL["depths"]
    assert swin.family == "swin" and not swin.supports_pausing and not swin.uniform_states
    assert swin.num_prefix_tokens == 0 and not swin.has_class_token
    grids = [swin.state_grid(m) for m in range(swin.depth + 1)]
    assert grids == [(14, 14), (14, 14), (14, 14), (7, 7), (4, 4), (4, 4)]
    dims = [swin.state_dim(m) for m in range(swin.depth + 1)]
    assert dims == [16, 16, 16, 32, 64, 64]
    assert [swin.state_heads(m) for m in range(1, swin.depth + 1)] == [1, 1, 2, 4, 4]
    with pytest.raises(IndexError):
        swin.state_grid(swin.depth + 1)


def test_hidden_states_and_forward_equal_timms(swin):
    torch.manual_seed(0)
    x = torch.randn(3, 1, 28, 28)
    with torch.no_grad():
        states = swin.hidden_states(x)
        assert [tuple(s.shape) for s in states] == [
            (3, swin.state_tokens(m), swin.state_dim(m)) for m in range(1, swin.depth + 1)
        ]
        # timm's own stages, run whole, give the state at each stage's end
        ref = swin.model.patch_embed(x)
        for stage, last in zip(swin.model.layers, (2, 3, 5), strict=True):
            ref = stage(ref)
            assert torch.equal(states[last - 1], ref.flatten(1, 2))
        assert torch.equal(swin(x), swin.model(x))
        assert torch.equal(swin.final_head(states[-1]), swin.model(x))


@pytest.mark.parametrize(("start", "stop"), [(0, 5), (1, 3), (2, 4), (3, 3), (4, 5)])
def test_run_blocks_continues_from_any_state(swin, start, stop):
    x = torch.randn(2, 1, 28, 28)
    with torch.no_grad():
        states = [swin.embed(x), *swin.hidden_states(x)]
        assert torch.equal(swin.run_blocks(states[start], start, stop), states[stop])


def test_run_blocks_refuses_a_state_of_the_wrong_grid(swin):
    with pytest.raises(ValueError, match="7x7"):
        swin.run_blocks(torch.zeros(1, 196, 32), 3, 4)
    with pytest.raises(IndexError):
        swin.run_blocks(torch.zeros(1, 196, 16), 3, 2)


def test_patch_merging_belongs_to_the_first_block_of_its_stage(swin):
    names = [swin.block_module_names(i) for i in range(1, swin.depth + 1)]
    assert names[2] == ["model.layers.1.downsample", "model.layers.1.blocks.0"]
    assert names[3] == ["model.layers.2.downsample", "model.layers.2.blocks.0"]
    assert all(len(n) == 1 for i, n in enumerate(names) if i not in (2, 3))
    # every parameter of the model is in the stem, one block, or the final norm and head
    owned = [m for i in range(swin.depth) for m in swin.block_modules(i, i + 1)]
    counted = sum(p.numel() for m in owned for p in m.parameters())
    rest = sum(p.numel() for p in swin.model.patch_embed.parameters())
    rest += sum(p.numel() for p in swin.model.norm.parameters())
    rest += sum(p.numel() for p in swin.model.head.parameters())
    assert counted + rest == sum(p.numel() for p in swin.model.parameters())


def test_describe_gives_every_stage(swin):
    d = swin.describe()
    assert d["family"] == "swin" and d["depth"] == 5
    assert d["stage_grids"] == [[14, 14], [7, 7], [4, 4]]
    assert d["stage_dims"] == [16, 32, 64]
    assert d["window_sizes"] == [[7, 7], [7, 7], [4, 4]]
    json.dumps(d)


def test_per_stage_overrides_parse_and_round_trip():
    ov = parse_overrides(["depths=2,2,6,2", "num_heads=3,6", "window_size=7", "embed_dim=96"])
    assert ov == {"depths": (2, 2, 6, 2), "num_heads": (3, 6), "window_size": 7, "embed_dim": 96}
    assert parse_overrides(["num_heads=3"]) == {"num_heads": 3}  # one number stays one (ViT)
    spec = BackboneSpec("swin_tiny_patch4_window7_224", overrides=ov)
    back = BackboneSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert back == spec
    with pytest.raises(ConfigError, match="comma-separated ints"):
        parse_overrides(["depths=two"])


def test_impossible_stage_overrides_are_one_line_errors():
    from exitsearch.errors import BackboneError

    with pytest.raises(BackboneError, match="depths=") as info:
        create_backbone("swin_tiny_patch4_window7_224", **{**SMALL, "depths": (2, 0)})
    assert "\n" not in str(info.value)
    with pytest.raises(BackboneError, match="cannot build") as info:
        create_backbone("swin_tiny_patch4_window7_224", **{**SMALL, "depth": 4})
    assert "\n" not in str(info.value)


def test_swin_preset_builds_its_architecture():
    ov = PRESETS[SWIN_PRESET].spec.overrides
    bb = create_backbone(SWIN_PRESET)
    assert isinstance(bb, SwinBackbone)
    assert bb.depth == sum(ov["depths"]) and bb.embed_dim == ov["embed_dim"]
    assert bb.state_grid(bb.depth) == (2, 2)
    assert bb.img_size == (28, 28) and bb.in_chans == 1


def test_pausing_is_refused_with_the_reason(swin):
    from exitsearch.pausing.pause import AuxDecoder, PausingViT

    with pytest.raises(ConfigError, match="token pausing") as info:
        PausingViT(swin, AuxDecoder(swin.embed_dim, 10))
    assert "window" in str(info.value) and "\n" not in str(info.value)


def test_checkpoint_round_trip(swin, tmp_path):
    from exitsearch._io import save_safetensors

    path = tmp_path / "swin.safetensors"
    save_safetensors(path, swin.model.state_dict())
    again = create_backbone(
        BackboneSpec("swin_tiny_patch4_window7_224", overrides=SMALL, checkpoint=str(path))
    )
    assert again.weights_checksum() == swin.weights_checksum()


def test_a_small_swin_trains_and_reloads(tmp_path, tiny_splits):
    from exitsearch.training.backbone_trainer import (
        BackboneTrainConfig,
        evaluate_accuracy,
        train_backbone,
    )

    spec = BackboneSpec("swin_tiny_patch4_window7_224", overrides={**SMALL, "patch_size": 4})
    bb = create_backbone(spec)
    before = evaluate_accuracy(bb, tiny_splits.val)
    cfg = BackboneTrainConfig(epochs=2, batch_size=32, eval_batch_size=256, lr=2e-3, seed=0)
    meta = train_backbone(bb, tiny_splits, cfg, tmp_path)
    assert meta["describe"]["family"] == "swin" and meta["describe"]["depths"] == [2, 1, 2]
    # 2 epochs on 256 images: better than the random start it came from
    assert meta["val_acc"] > before + 0.1, (meta["val_acc"], before)
    again = create_backbone(
        BackboneSpec(
            spec.model, overrides=spec.overrides, checkpoint=str(tmp_path / "model.safetensors")
        )
    )
    assert again.weights_checksum() == bb.weights_checksum()


def test_lgvit_fine_tuning_is_refused_before_anything_runs(swin):
    # its distillation compares an exit's feature map with the final block's: a Swin's differ
    from exitsearch.core.config import ExitConfig
    from exitsearch.finetune import MultiExitNet, create_strategy
    from exitsearch.heads import HeadContext, HeadSpec, create_head

    spec = HeadSpec("mlp", 2)
    config = ExitConfig((spec,), "confidence", (0.9,))
    net = MultiExitNet.from_heads(
        swin, [create_head(spec, HeadContext.from_backbone(swin))], config
    )
    with pytest.raises(ConfigError, match="changes grid and width between stages; fine-tune it"):
        create_strategy("lgvit").check(net)
    create_strategy("end-to-end").check(net)  # the others take it
