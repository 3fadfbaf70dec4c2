"""Fashion-MNIST segmentation labels, patch labels, the mask decoder and mIoU."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from exitsearch.data import augment
from exitsearch.pausing import (
    GARMENT_THRESHOLD,
    MaskTransformer,
    confusion_matrix,
    create_task,
    garment_mask,
    mean_iou,
    patch_labels,
    segmentation_labels,
)
from exitsearch.pausing.metrics import MeanIoU, iou_per_class


def _rule_by_hand(img: np.ndarray, t: int = GARMENT_THRESHOLD) -> np.ndarray:
    """The documented rule, written independently, pixel by pixel: threshold, then a pixel
    whose in-image 4-neighbours all disagree with it takes their value."""
    h, w = img.shape
    raw = img >= t
    out = raw.copy()
    for r in range(h):
        for c in range(w):
            nbrs = [
                raw[rr, cc]
                for rr, cc in ((r + 1, c), (r - 1, c), (r, c + 1), (r, c - 1))
                if 0 <= rr < h and 0 <= cc < w
            ]
            if all(v != raw[r, c] for v in nbrs):
                out[r, c] = not raw[r, c]
    return out


def test_labels_follow_the_stated_rule_on_real_images(fmnist):
    train, _ = fmnist
    # the first 40 images, plus the faint shirt and the bag the module docstring names
    idx = np.r_[np.arange(40), 8184, 1990]
    x, y = train.x[idx], train.y[idx]
    labels = segmentation_labels(x, y)
    assert labels.shape == (len(idx), 28, 28) and labels.dtype == np.uint8
    for k in range(len(idx)):
        expected = np.where(_rule_by_hand(x[k, 0]), y[k] + 1, 0)
        assert np.array_equal(labels[k], expected), f"image {idx[k]}"
        assert set(np.unique(labels[k])) <= {0, int(y[k]) + 1}
    # the faint shirt (interior values 4..20) keeps far more than a threshold of 32 would ...
    assert (labels[-2] > 0).sum() == 396 and garment_mask(x[-2:-1], threshold=32).sum() == 60
    # ... and the opening of the sandal stays background (row 10, columns 13 to 20)
    assert y[-1] == 5 and (labels[-1][10, 13:21] == 0).all()


def test_rule_on_a_hand_made_image():
    img = np.zeros((1, 9, 9), np.uint8)
    img[0, 1:7, 1:7] = 200  # a square garment ...
    img[0, 3, 3] = 0  # ... with a one-pixel white speck: garment
    img[0, 4:6, 4:6] = 3  # ... and a 2 x 2 opening: background
    img[0, 8, 8] = 255  # an isolated bright pixel in the corner: background
    img[0, 1, 7] = GARMENT_THRESHOLD - 1  # below the threshold, next to the outline
    img[0, 6, 7] = GARMENT_THRESHOLD  # at the threshold, next to the outline: garment
    m = garment_mask(img)[0]
    expected = np.zeros((9, 9), bool)
    expected[1:7, 1:7] = True
    expected[4:6, 4:6] = False
    expected[6, 7] = True
    assert np.array_equal(m, expected)
    assert np.array_equal(m, _rule_by_hand(img[0]))
    assert segmentation_labels(img, np.array([4]))[0, 3, 3] == 5


def test_patch_labels_take_the_majority_and_ties_go_to_background():
    px = torch.zeros(1, 8, 8, dtype=torch.long)
    px[0, :4, :4] = 3  # patch 0: all 3
    px[0, :2, 4:] = 7  # patch 1: 8 of 16 are 7, a tie -> background 0
    px[0, 4:, :3] = 2  # patch 2: 12 of 16 -> 2
    assert patch_labels(px, 4, 11).tolist() == [[3, 0, 2, 0]]


def test_mask_transformer_shapes():
    torch.manual_seed(0)
    dec = MaskTransformer(32, 11, (7, 7), (28, 28), depth=1, num_heads=2)
    out = dec(torch.randn(2, 49, 32))
    assert out.shape == (2, 11, 28, 28)
    with pytest.raises(ValueError, match="7x7=49"):
        dec(torch.randn(2, 48, 32))


def test_miou_on_a_hand_made_confusion_matrix():
    # rows: true class, columns: predicted
    cm = np.array([[5, 1, 0, 0], [2, 3, 0, 0], [0, 0, 0, 0], [0, 1, 0, 0]])
    # IoU_0 = 5 / (5 + 1 + 2) = 5/8, IoU_1 = 3 / (3 + 2 + 1 + 1) = 3/7, class 2 absent from
    # labels and predictions (NaN, skipped), class 3 true once and never predicted: 0
    iou = iou_per_class(cm)
    assert iou[:2].tolist() == pytest.approx([5 / 8, 3 / 7]) and np.isnan(iou[2]) and iou[3] == 0
    assert mean_iou(cm) == pytest.approx((5 / 8 + 3 / 7 + 0) / 3)
    pred = np.array([0, 0, 0, 0, 0, 1, 0, 0, 1, 1, 1, 1])
    true = np.array([0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 1, 3])
    assert np.array_equal(confusion_matrix(pred, true, 4), cm)
    # the accumulator sums the matrix over batches before dividing
    metric = MeanIoU(4)
    for sl in (slice(0, 5), slice(5, 12)):
        logits = torch.nn.functional.one_hot(torch.from_numpy(pred[sl]), 4).float()
        metric.update(logits.T.unsqueeze(0), torch.from_numpy(true[sl]).unsqueeze(0))
    assert metric.value() == pytest.approx(mean_iou(cm))


def test_batches_augment_images_and_labels_alike(make_pause_tiny, pause_splits):
    task = create_task("segmentation", make_pause_tiny())
    data = pause_splits.train
    gen = torch.Generator().manual_seed(5)
    batch = next(task.batches(data, 16, shuffle=True, generator=gen, augment=True))
    masks = task.masks(data)[batch.index]
    # replaying the same draws on the images alone and on the labels alone gives the batch
    replay = torch.Generator().manual_seed(5)
    torch.randperm(len(data), generator=replay)
    state = replay.get_state()
    assert torch.equal(augment(torch.from_numpy(data.x)[batch.index], replay), batch.images)
    replay.set_state(state)
    assert torch.equal(augment(masks, replay)[:, 0].long(), batch.target)
    assert torch.equal(batch.aux_target, patch_labels(batch.target, 4, 11))
    assert batch.target.shape == (16, 28, 28) and batch.aux_target.shape == (16, 49)
