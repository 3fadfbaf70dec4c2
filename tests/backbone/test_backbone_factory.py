"""create_backbone: names, overrides, presets, unsupported families, pretrained offline."""

from __future__ import annotations

import contextlib

import pytest

from exitsearch.backbone import (
    DEFAULT_PRESET,
    PRESETS,
    BackboneSpec,
    create_backbone,
    list_backbones,
    preset_dir,
    resolve_spec,
)
from exitsearch.errors import BackboneError, ExitSearchError


def test_unknown_name_suggests_close_matches():
    with pytest.raises(BackboneError, match="vit_tiny_patch16_22'") as info:
        create_backbone("vit_tiny_patch16_22")
    assert "did you mean" in str(info.value)
    assert "vit_tiny_patch16_224" in str(info.value)


def test_unknown_name_without_close_match_points_to_the_list():
    with pytest.raises(BackboneError, match="backbone list"):
        create_backbone("qqqqqqqqqqqq")


def test_a_family_without_an_adapter_is_refused():
    # a CNN has no blocks of tokens to attach exits to; the message names what is supported
    with pytest.raises(BackboneError, match="resnet18 is a ResNet") as info:
        create_backbone("resnet18")
    assert "ViT/DeiT" in str(info.value) and "Swin" in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"img_size": 30, "patch_size": 7}, "not a multiple of patch_size"),
        ({"embed_dim": 100, "num_heads": 3}, "not divisible by num_heads"),
        ({"embed_dim": 100}, "divisible"),  # against the model's own 3 heads
        ({"depth": -1}, "depth=-1"),
        ({"depth": 0}, "depth=0"),
        ({"img_size": 0}, "img_size=0"),
        ({"num_classes": -1}, "num_classes=-1"),
    ],
)
def test_impossible_overrides(overrides, message):
    with pytest.raises(BackboneError, match=message) as info:
        create_backbone("vit_tiny_patch16_224", **overrides)
    assert "\n" not in str(info.value)


def test_img_size_not_a_multiple_of_the_models_own_patch_size():
    with pytest.raises(BackboneError, match="multiple"):
        create_backbone("vit_tiny_patch16_224", img_size=200, depth=1)


def test_num_classes_zero_gives_features():
    bb = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=16, depth=1, num_classes=0)
    assert bb.num_classes == 0


def test_overrides_reach_the_model(tiny_overrides, make_tiny):
    bb = make_tiny()
    assert bb.depth == tiny_overrides["depth"]
    assert bb.embed_dim == tiny_overrides["embed_dim"]
    assert bb.num_heads == tiny_overrides["num_heads"]
    assert bb.in_chans == tiny_overrides["in_chans"]
    assert bb.num_classes == tiny_overrides["num_classes"]
    assert bb.img_size == (tiny_overrides["img_size"],) * 2
    grid = tiny_overrides["img_size"] // tiny_overrides["patch_size"]
    assert bb.grid_size == (grid, grid)
    assert bb.num_tokens == grid * grid + 1
    assert bb.spec.overrides == tiny_overrides


def test_pretrained_offline_is_a_backbone_error(monkeypatch, tmp_path):
    import huggingface_hub.constants

    # HF_HUB_OFFLINE and HF_HUB_CACHE are read once, when huggingface_hub is imported; the
    # constants are their in-process form. Without offline mode the hub client retries for most
    # of a minute; the empty cache makes sure no earlier download is found.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    spec = BackboneSpec("vit_tiny_patch16_224", {"depth": 1}, pretrained=True)
    with pytest.raises(BackboneError, match="pretrained") as info:
        create_backbone(spec)
    assert "--checkpoint" in str(info.value)


# ------------------------------------------------------------------------------------ presets
def test_preset_resolves_to_its_timm_model():
    preset = PRESETS[DEFAULT_PRESET]
    resolved = resolve_spec(BackboneSpec(DEFAULT_PRESET))
    assert resolved.model == preset.spec.model
    assert resolved.overrides == preset.spec.overrides
    shipped = preset_dir(DEFAULT_PRESET) / "model.safetensors"
    assert resolved.checkpoint == (str(shipped) if shipped.is_file() else None)


def test_preset_user_overrides_and_flags_win():
    resolved = resolve_spec(
        BackboneSpec(DEFAULT_PRESET, {"depth": 4}, checkpoint="mine.pt", pretrained=True)
    )
    assert resolved.overrides["depth"] == 4
    assert resolved.overrides["embed_dim"] == PRESETS[DEFAULT_PRESET].spec.overrides["embed_dim"]
    assert resolved.checkpoint == "mine.pt"
    assert resolved.pretrained is True


def test_plain_names_are_not_resolved():
    spec = BackboneSpec("vit_tiny_patch16_224", {"depth": 2})
    assert resolve_spec(spec) is spec


def test_preset_builds_its_architecture():
    ov = PRESETS[DEFAULT_PRESET].spec.overrides
    bb = create_backbone(DEFAULT_PRESET)
    assert bb.spec.model == PRESETS[DEFAULT_PRESET].spec.model
    assert (bb.depth, bb.embed_dim, bb.num_heads) == (ov["depth"], ov["embed_dim"], ov["num_heads"])
    assert (bb.in_chans, bb.num_classes) == (ov["in_chans"], ov["num_classes"])
    assert bb.img_size == (ov["img_size"], ov["img_size"])
    assert PRESETS[DEFAULT_PRESET].data == "fashion-mnist"


# ------------------------------------------------------------------------------------ listing
def test_list_backbones():
    names = list_backbones()
    assert names[0] == DEFAULT_PRESET
    assert {"vit_base_patch16_224", "deit_tiny_distilled_patch16_224"} <= set(names)
    assert "swin_base_patch4_window7_224" in names  # the hierarchical family
    assert not any(n.startswith("resnet") for n in names)
    small = list_backbones("*small*")
    assert "vit_small_patch16_224" in small and DEFAULT_PRESET not in small
    assert DEFAULT_PRESET in list_backbones("fmnist*")


def test_listed_backbones_can_be_built():
    # one sample of each timm module that contributes vit_* names
    samples = ["vit_relpos_small_patch16_224", "vit_small_patch16_rope_224"]
    listed = set(list_backbones())
    for name in samples:
        if name in listed:
            create_backbone(name, depth=1)


def test_hybrid_vit_is_supported_or_refused():
    try:
        bb = create_backbone("vit_tiny_r_s16_p8_224", img_size=64, depth=1)
    except BackboneError:
        return
    from exitsearch.profile import profile_backbone

    assert bb.in_chans == 3
    with contextlib.suppress(ExitSearchError):  # a typed refusal is fine too
        profile_backbone(bb)
