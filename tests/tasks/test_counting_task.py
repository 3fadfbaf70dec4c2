"""The counting task: its generator, the Laplace loss and statistics derived from the density,
and the evaluator's MAE against a hand count of exits."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.core.task import COUNTING, get_task, task_names
from exitsearch.data.sources.counting import CANVAS, ITEM, MAX_COUNT, make_canvases
from exitsearch.errors import ConfigError, DataError
from exitsearch.heads import HeadSpec
from exitsearch.profile.backbone import BackboneProfile, BlockCost
from exitsearch.search.evaluator import Evaluator
from exitsearch.training.predict import Predictions, SplitPredictions

TASK = get_task(COUNTING)


def test_tasks_are_registered():
    assert {"classification", "counting"} <= set(task_names())
    with pytest.raises(ConfigError, match="unknown task"):
        get_task("segmentation")


def test_canvases_are_deterministic_and_hold_their_count():
    white = np.full((5, 28, 28), 255, np.uint8)  # each item a full 14x14 square once downscaled
    x, y = make_canvases(white, 300, seed=3)
    x2, y2 = make_canvases(white, 300, seed=3)
    assert np.array_equal(x, x2) and np.array_equal(y, y2)
    assert x.shape == (300, 1, CANVAS, CANVAS) and x.dtype == np.uint8
    assert y.min() >= 0 and y.max() <= MAX_COUNT and len(set(y.tolist())) == MAX_COUNT + 1
    lit = (x[:, 0] > 0).sum(axis=(1, 2))
    assert (lit[y == 0] == 0).all()
    # k squares of 14x14 cover at most k * 196 pixels and, shifted at most 3 px from disjoint
    # cells, overlap a neighbour by at most 6 px on a side: at least k * 8 * 8 stay their own
    assert (lit <= y * ITEM * ITEM).all()
    assert (lit >= y * (ITEM - 6) ** 2).all()
    different = make_canvases(white, 300, seed=4)[1]
    assert not np.array_equal(different, y)


def _laplace_pdf(x: np.ndarray, mu: float, b: float) -> np.ndarray:
    return np.exp(-np.abs(x - mu) / b) / (2 * b)


@pytest.mark.parametrize(("mu", "s"), [(3.2, -1.0), (0.4, 0.3), (6.5, -2.5), (-0.7, 0.0)])
def test_statistics_follow_the_laplace_density(mu: float, s: float):
    out = torch.tensor([[mu, s]], dtype=torch.float32)
    conf, ent, pred, unc = TASK.statistics(out)
    b = math.exp(s)
    expected_pred = max(0, round(mu))
    assert int(pred) == expected_pred
    # the predicted count's unit interval, integrated numerically from the density
    low = expected_pred - 0.5 if expected_pred > 0 else mu - 60 * b  # count 0: all below 0.5
    grid = np.linspace(low, expected_pred + 0.5, 400_001)
    mass = np.trapezoid(_laplace_pdf(grid, mu, b), grid)
    assert float(conf) == pytest.approx(mass, abs=1e-5)
    # uncertainty: the mass further than half an object from mu
    far = np.linspace(mu + 0.5, mu + 60 * b + 0.5, 400_001)
    assert float(unc) == pytest.approx(2 * np.trapezoid(_laplace_pdf(far, mu, b), far), abs=1e-5)
    assert math.isnan(float(ent))
    # the ranked counts: the predicted one first, with the same mass, then its neighbours
    labels, probs = TASK.ranked(out, 3)
    assert labels[0, 0] == expected_pred and probs[0, 0] == pytest.approx(float(conf))
    assert len(set(labels[0].tolist())) == 3 and (np.diff(probs[0]) <= 0).all()


def test_loss_is_the_laplace_negative_log_likelihood():
    out = torch.tensor([[2.0, 0.5], [4.0, -1.0]])
    y = torch.tensor([3, 4])
    nll = [
        -math.log(_laplace_pdf(np.array([t]), m, math.exp(s))[0])
        for (m, s), t in zip(out.tolist(), y.tolist(), strict=True)
    ]
    # the NLL less its constant log 2
    assert float(TASK.loss(out, y)) == pytest.approx(np.mean(nll) - math.log(2), rel=1e-6)


def _predictions(pred: np.ndarray, unc: np.ndarray, labels: np.ndarray) -> Predictions:
    heads = [HeadSpec("linear", 1), HeadSpec("linear", 2)]
    rows, n = pred.shape
    nan = np.full((rows, n), np.nan, np.float32)
    sp = SplitPredictions(labels, nan + 0.5, nan, pred.astype(np.int32), unc.astype(np.float32))
    return Predictions(heads, {"val": sp}, 10, COUNTING)


def _costs() -> CostModel:
    """Stem 10, blocks of 100, 110 and 120 FLOPs, final head 5; exit heads of 3 FLOPs."""
    flops, blocks, cum = (100, 110, 120), [], 10
    for i, f in enumerate(flops):
        cum += f
        blocks.append(BlockCost(i + 1, f, 0, cum, cum / 345))
    profile = BackboneProfile("toy", (1, 56, 56), 50, 345, 10, 5, blocks, 0)
    return CostModel(profile, {"linear@1": 3, "linear@2": 3})


def test_evaluator_scores_the_mae_of_the_exits_taken():
    rng = np.random.default_rng(0)
    n = 500
    labels = rng.integers(0, 10, n)
    pred = np.stack([labels + rng.integers(-2, 3, n), labels + rng.integers(-1, 2, n), labels])
    unc = rng.uniform(0, 1, (3, n))
    ev = Evaluator(_predictions(pred, unc, labels), "val", _costs())
    config = ExitConfig(tuple(HeadSpec("linear", m) for m in (1, 2)), "uncertainty", (0.3, 0.6))
    # by hand: the first exit whose uncertainty is at most its threshold, else the final one
    exit_at = np.where(unc[0] <= 0.3, 0, np.where(unc[1] <= 0.6, 1, 2))
    mae = np.abs(pred[exit_at, np.arange(n)] - labels).mean()
    result = ev.evaluate(config)
    assert TASK.shown(result.accuracy) == pytest.approx(mae)
    assert ev.quick(config)[0] == pytest.approx(result.accuracy)
    # a sample pays every head it passed: exit 2 adds head 1's 3 FLOPs, the final exit both
    flops = np.array([10 + 100 + 3, 10 + 210 + 3 + 3, 345 + 3 + 3])[exit_at].mean()
    assert result.mean_flops == pytest.approx(flops)
    with pytest.raises(ConfigError, match="does not apply to counting"):
        ev.evaluate(config.__class__(config.exits, "entropy", (0.3, 0.6)))


def test_a_new_head_starts_at_the_best_constant_count():
    from exitsearch.heads import HeadContext, create_head

    ctx = HeadContext(embed_dim=16, num_prefix_tokens=1, grid_size=(4, 4), num_classes=2)
    labels = np.array([0, 1, 1, 2, 3, 5, 8, 9, 9])
    for head_type in ("linear", "mlp", "vit", "cnn_add"):
        head = create_head(HeadSpec(head_type, 3), ctx)
        TASK.init_head(head, labels)
        last = [m for m in head.modules() if isinstance(m, torch.nn.Linear)][-1]
        assert last.out_features == 2
        median = float(np.median(labels))
        assert float(last.bias[0].detach()) == pytest.approx(median)
        assert float(last.bias[1].detach()) == pytest.approx(
            math.log(np.abs(labels - median).mean())
        )
    untouched = create_head(HeadSpec("linear", 3), ctx)
    before = [p.clone() for p in untouched.parameters()]
    get_task("classification").init_head(untouched, labels)
    assert all(torch.equal(a, b) for a, b in zip(before, untouched.parameters(), strict=True))


def test_an_npz_names_its_task(tmp_path):
    from exitsearch.data import DataSpec, load_splits

    white = np.full((3, 28, 28), 255, np.uint8)
    x, y = make_canvases(white, 60, seed=0)
    path = tmp_path / "counts.npz"
    np.savez(path, x=x, y=y, task=np.array("counting"))
    splits = load_splits(DataSpec(str(path), val_size=20), image_size=56)
    assert splits.task == COUNTING and len(splits.val) == 20
    np.savez(tmp_path / "plain.npz", x=x, y=y)
    assert load_splits(DataSpec(str(tmp_path / "plain.npz"), val_size=20)).task == "classification"
    np.savez(tmp_path / "bad.npz", x=x, y=y, task=np.array("segmentation"))
    with pytest.raises(DataError, match="unknown task 'segmentation'"):
        load_splits(DataSpec(str(tmp_path / "bad.npz"), val_size=20))
