"""From uint8 batches to model input; augmentation; batching."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exitsearch.data import ArrayDataset, InputTransform, augment, iterate_batches


@pytest.fixture
def batch(fmnist) -> torch.Tensor:
    return torch.from_numpy(fmnist[0].x[:16].copy())


def test_resize_and_one_to_three_channels(batch):
    t = InputTransform((32, 32), 3, (0.5, 0.4, 0.3), (0.25, 0.2, 0.1))
    out = t(batch)
    assert out.shape == (16, 3, 32, 32) and out.dtype == torch.float32
    # the grey channel, scaled to [0, 1] and resized, is copied to every channel, then each
    # channel is normalised with its own mean/std
    grey = torch.nn.functional.interpolate(batch.float() / 255, size=(32, 32), mode="bilinear")
    assert torch.allclose(out[:, :1] * 0.25 + 0.5, grey, atol=1e-5)
    assert torch.allclose(out[:, 1:2] * 0.2 + 0.4, grey, atol=1e-5)
    assert torch.allclose(out[:, 2:3] * 0.1 + 0.3, grey, atol=1e-5)
    assert batch.dtype == torch.uint8  # the input batch is left alone


def test_values_scale_and_normalise():
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3)
    out = InputTransform((1, 3), 1, (0.5,), (0.5,))(x)
    assert torch.allclose(out.view(-1), torch.tensor([-1.0, -0.6, 1.0]))


def test_three_to_one_channel_averages():
    x = torch.zeros(1, 3, 2, 2, dtype=torch.uint8)
    x[:, 0] = 255
    out = InputTransform((2, 2), 1, (0.0,), (1.0,))(x)
    assert out.shape == (1, 1, 2, 2)
    assert torch.allclose(out, torch.full_like(out, 1 / 3))


def test_same_size_is_not_resampled(batch):
    out = InputTransform((28, 28), 1, (0.0,), (1.0,))(batch)
    assert torch.equal(out, batch.float() / 255)


def test_impossible_channel_mapping():
    with pytest.raises(ValueError, match="channels"):
        InputTransform((4, 4), 3, (0.5,) * 3, (0.5,) * 3)(
            torch.zeros(1, 2, 4, 4, dtype=torch.uint8)
        )


def test_augment_keeps_shape_dtype_and_is_seeded(batch):
    a = augment(batch, torch.Generator().manual_seed(11))
    b = augment(batch, torch.Generator().manual_seed(11))
    c = augment(batch, torch.Generator().manual_seed(12))
    assert a.shape == batch.shape and a.dtype == torch.uint8
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    assert not torch.equal(a, batch)


def test_augment_without_padding_only_flips(batch):
    out = augment(batch, torch.Generator().manual_seed(0), pad=0, flip=True)
    flipped = 0
    for o, x in zip(out, batch, strict=True):
        assert torch.equal(o, x) or torch.equal(o, x.flip(-1))
        flipped += int(not torch.equal(o, x))
    assert 0 < flipped < len(batch)
    assert torch.equal(augment(batch, torch.Generator(), pad=0, flip=False), batch)


def test_augment_crops_are_shifted_windows():
    x = torch.arange(1, 26, dtype=torch.uint8).view(1, 1, 5, 5).repeat(32, 1, 1, 1)
    out = augment(x, torch.Generator().manual_seed(3), pad=1, flip=False)
    padded = torch.nn.functional.pad(x[0], (1, 1, 1, 1))
    windows = [padded[:, dy : dy + 5, dx : dx + 5] for dy in range(3) for dx in range(3)]
    for o in out:
        assert any(torch.equal(o, w) for w in windows)


@pytest.mark.parametrize("shuffle", [False, True])
def test_iterate_batches_covers_every_index_once(shuffle):
    n = 23
    x = np.arange(n, dtype=np.uint8).reshape(n, 1, 1, 1).repeat(2, axis=2)
    data = ArrayDataset(x, np.arange(n) % 4, ("a", "b", "c", "d"))
    gen = torch.Generator().manual_seed(0) if shuffle else None
    batches = list(iterate_batches(data, 5, shuffle=shuffle, generator=gen))
    assert [len(i) for i, _, _ in batches] == [5, 5, 5, 5, 3]
    index = torch.cat([i for i, _, _ in batches])
    assert sorted(index.tolist()) == list(range(n))
    assert (index.tolist() == list(range(n))) is not shuffle
    for idx, xb, yb in batches:
        assert torch.equal(xb[:, 0, 0, 0], idx.to(torch.uint8))
        assert torch.equal(yb, idx % 4) and yb.dtype == torch.int64


def test_iterate_batches_start_skips_batches():
    n = 10
    data = ArrayDataset(np.zeros((n, 1, 1, 1), dtype=np.uint8), np.zeros(n, dtype=np.int64), ("a",))
    full = list(iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(4)))
    rest = list(
        iterate_batches(data, 3, shuffle=True, generator=torch.Generator().manual_seed(4), start=2)
    )
    assert len(rest) == len(full) - 2
    for (a, _, _), (b, _, _) in zip(full[2:], rest, strict=True):
        assert torch.equal(a, b)
