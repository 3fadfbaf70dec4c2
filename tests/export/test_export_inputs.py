"""The exported model takes raw images in its own preprocessing, and refuses wrong tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_world import CONFIGS, World
from PIL import Image

from exitsearch.errors import ConfigError


@pytest.fixture
def model(world: World):  # type: ignore[no-untyped-def]
    m = world.model(CONFIGS["confidence"](world))
    m.preprocess = world.splits.preprocess  # what the cached predictions were made with
    return m


def _raw_val(world: World, n: int = 256) -> np.ndarray:
    return world.splits.val.batch(np.arange(n)).numpy()  # uint8 N x 1 x 28 x 28


def test_raw_uint8_images_reproduce_the_evaluator(world: World, model):  # type: ignore[no-untyped-def]
    config = CONFIGS["confidence"](world)
    out = model.predict(world.splits.val.batch(np.arange(len(world.splits.val))), batch_size=64)
    assert np.array_equal(out.exit_index.numpy(), world.ev.exit_index(config))
    val = world.ev.evaluate(config)
    labels = np.asarray(world.splits.val.y)
    assert (out.prediction.numpy() == labels).mean() == pytest.approx(val.accuracy, abs=0)


def test_raw_forms_agree_with_normalised_tensors(world: World, model, tmp_path):  # type: ignore[no-untyped-def]
    raw = _raw_val(world, 40)
    ref = model(model.inputs._normalise(torch.from_numpy(raw)))
    pil = [Image.fromarray(a[0]) for a in raw]
    paths = []
    for i, im in enumerate(pil):
        p = tmp_path / f"{i}.png"
        im.save(p)
        paths.append(p)
    for form in (raw, torch.from_numpy(raw), pil, paths, [str(p) for p in paths]):
        out = model.predict(form, batch_size=16)
        assert torch.equal(out.exit_index, ref.exit_index)
        assert torch.equal(out.prediction, ref.prediction)


def test_channels_last_arrays_are_images_not_rows(world: World, model):  # type: ignore[no-untyped-def]
    """``np.asarray(PIL image)`` is H x W x C: one image (not H images of W x C pixels), and a
    stack of them N x H x W x C, with or without an alpha channel."""
    raw = _raw_val(world, 6)
    ref = model.predict(raw).prediction
    rgb = np.repeat(np.transpose(raw, (0, 2, 3, 1)), 3, axis=-1)  # N x 28 x 28 x 3
    assert torch.equal(model.predict(rgb).prediction, ref)
    assert torch.equal(model.predict(list(rgb)).prediction, ref)
    one = model.predict(rgb[0])
    assert one.prediction.shape == (1,) and one.prediction[0] == ref[0]
    rgba = np.concatenate([rgb, np.full((*rgb.shape[:3], 1), 255, np.uint8)], axis=-1)
    assert torch.equal(model.predict(rgba).prediction, ref)
    grey = np.transpose(raw, (0, 2, 3, 1))  # N x 28 x 28 x 1
    assert torch.equal(model.predict(grey).prediction, ref)
    # one grey image (H, W), as OpenCV reads it, and a list of them
    assert model.predict(raw[0, 0]).prediction[0] == ref[0]
    assert torch.equal(model.predict(list(raw[:, 0])).prediction, ref)


def test_a_read_only_array_is_taken_without_a_warning(world: World, model):  # type: ignore[no-untyped-def]
    """``np.asarray(PIL image)`` is read-only; torch warns when it shares such memory."""
    raw = _raw_val(world, 4)
    ro = raw.copy()
    ro.flags.writeable = False
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert torch.equal(model.predict(ro).prediction, model.predict(raw).prediction)


def test_larger_raw_images_are_resized_by_the_preprocessing(world: World, model):  # type: ignore[no-untyped-def]
    raw = _raw_val(world, 8)
    big = np.repeat(np.repeat(raw, 2, axis=2), 2, axis=3)  # 56 px
    out = model.predict(big, batch_size=8)
    # what timm's transform makes of each 56-px image, normalised, run through forward
    tf = model.preprocess.image_transform()
    small = np.stack([tf(Image.fromarray(a[0])) for a in big])
    assert small.shape == (8, 1, 28, 28)
    ref = model(model.inputs._normalise(torch.from_numpy(small)))
    assert torch.equal(out.logits, ref.logits) and torch.equal(out.exit_index, ref.exit_index)


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda raw: torch.from_numpy(raw).float() / 255, r"\[0, 1\]"),
        (lambda raw: torch.from_numpy(raw).float(), "far outside"),
        (lambda raw: torch.zeros(4, 3, 28, 28), r"shape \(N, 1, 28, 28\)"),
        (lambda raw: torch.zeros(4, 1, 16, 16), r"shape \(N, 1, 28, 28\)"),
        (lambda raw: torch.from_numpy(raw), "uint8"),
        (lambda raw: torch.full((2, 1, 28, 28), float("nan")), "NaN"),
    ],
)
def test_wrong_tensors_are_clear_errors(world: World, model, make, match):  # type: ignore[no-untyped-def]
    x = make(_raw_val(world, 4))
    with pytest.raises(ConfigError, match=match):
        model(x)


def test_predict_refuses_what_it_cannot_read(model):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match="predict"):
        model.predict(42)
    with pytest.raises(ConfigError, match=r"\[0, 1\]"):
        model.predict(torch.rand(4, 1, 28, 28) * 0.5 + 0.25)


def test_bundle_carries_its_preprocessing(world: World, tmp_path):  # type: ignore[no-untyped-def]
    from exitsearch.export import export_bundle, load_bundle

    config = CONFIGS["confidence"](world)
    export_bundle(tmp_path / "b", world.backbone, world.bank, config)
    back = load_bundle(tmp_path / "b")
    assert back.preprocess == world.backbone.preprocess()
    assert back.manifest["backbone"]["preprocess"]["input_size"] == [1, 28, 28]
    raw = _raw_val(world, 32)
    assert torch.equal(back.predict(raw).exit_index, world.model(config).predict(raw).exit_index)
