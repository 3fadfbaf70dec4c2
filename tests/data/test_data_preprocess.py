"""The model's own preprocessing: timm's data config, split into a loader half and a device half."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from PIL import Image

from exitsearch.data import Augment, Preprocess
from exitsearch.errors import ConfigError


def _photo(w: int, h: int, seed: int = 0) -> Image.Image:
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))


@pytest.mark.parametrize("size", [(300, 200), (224, 224), (97, 411)])
def test_equals_timms_own_eval_transform_for_deit_small(size):
    model = timm.create_model("deit_small_patch16_224", pretrained=False, num_classes=0)
    cfg = timm.data.resolve_model_data_config(model)
    theirs = timm.data.create_transform(**cfg, is_training=False)
    mine = Preprocess.for_model(model)
    assert mine.input_size == (3, 224, 224) and mine.interpolation == cfg["interpolation"]
    assert mine.crop_pct == pytest.approx(cfg["crop_pct"])
    im = _photo(*size)
    expected = theirs(im)
    pixels = torch.from_numpy(mine.image_transform()(im))[None]  # uint8, what loaders carry
    assert pixels.dtype == torch.uint8
    got = mine.input_transform()(pixels)[0]
    assert got.shape == expected.shape
    assert torch.allclose(got, expected, atol=1e-6)


def test_overridden_size_and_channels_keep_the_config():
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, in_chans=1)
    p = Preprocess.for_model(model)
    assert p.input_size == (1, 32, 32)
    assert len(p.mean) == len(p.std) == 1


def test_identity_on_its_own_size_only_without_a_crop():
    assert Preprocess((1, 28, 28)).is_identity_on(28, 28)
    assert not Preprocess((1, 28, 28), crop_pct=0.9).is_identity_on(28, 28)
    assert not Preprocess((1, 28, 28)).is_identity_on(32, 32)


def test_round_trip_and_checks():
    p = Preprocess((3, 64, 48), "bicubic", 0.875, mean=(0.1, 0.2, 0.3), std=(1, 2, 3))
    assert Preprocess.from_dict(p.to_dict()) == p
    with pytest.raises(ConfigError, match="crop_pct"):
        Preprocess((3, 8, 8), crop_pct=0)
    with pytest.raises(ConfigError, match="interpolation"):
        Preprocess((1, 8, 8), interpolation="cubic-ish")
    with pytest.raises(ConfigError, match="mean and std"):
        Preprocess((3, 8, 8), mean=(0.5,), std=(0.5,))


@pytest.mark.parametrize(
    ("text", "crop", "flip"),
    [
        ("crop,flip", True, True),
        ("crop", True, False),
        ("flip", False, True),
        ("none", False, False),
        (True, True, True),
        (False, False, False),
    ],
)
def test_augment_per_part(text, crop, flip):
    a = Augment.parse(text)
    assert (a.crop, a.flip) == (crop, flip)
    x = torch.arange(2 * 1 * 6 * 6, dtype=torch.uint8).view(2, 1, 6, 6)
    out = a(x, torch.Generator().manual_seed(0))
    assert out.shape == x.shape
    if not a.enabled:
        assert torch.equal(out, x)


def test_augment_rejects_unknown_parts():
    with pytest.raises(ConfigError, match="rotate"):
        Augment.parse("crop,rotate")
