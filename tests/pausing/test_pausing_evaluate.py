"""Scoring pause configurations: metric, FLOPs, images/s, the process pool, exit predictions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from exitsearch.data import DataSpec
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.pausing import (
    AuxDecoder,
    PauseConfig,
    PauseJob,
    PausingViT,
    build_paumer,
    evaluate_metric,
    evaluate_pause_config,
    evaluate_pause_jobs,
    measure_throughputs,
    pause_cost,
    predict_under_pause,
    timing_batch,
)
from exitsearch.training import HeadBank, predict

DATA = DataSpec(limit=96)  # the data of the pause_splits fixture


@pytest.fixture
def seg_model(make_pause_tiny):
    torch.manual_seed(0)
    return build_paumer(make_pause_tiny(), "segmentation", {"depth": 1}).eval()


def test_evaluate_pause_config(seg_model, pause_splits):
    ev = evaluate_pause_config(seg_model, pause_splits.val, "3:0.4", "entropy", repeats=3)
    assert ev.pause == "3:0.4" and ev.mode == "entropy" and ev.metric_name == "mIoU"
    assert 0.0 <= ev.metric <= 1.0
    assert ev.metric == evaluate_metric(seg_model, pause_splits.val, {3: 0.4})
    assert ev.flops == pause_cost(seg_model, {3: 0.4}).total
    assert ev.images_per_s is not None and ev.images_per_s > 0 and ev.batch_size == 64
    assert (
        evaluate_pause_config(seg_model, pause_splits.val, {}, measure=False).images_per_s is None
    )


def test_timing_uses_the_same_inputs_for_every_configuration(seg_model, pause_splits):
    x = timing_batch(seg_model, pause_splits.val, 64)
    assert torch.equal(x, timing_batch(seg_model, pause_splits.val, 64)) and x.shape[0] == 64
    # fewer images than the batch: repeated up to it
    small = pause_splits.val.subset(np.arange(10))
    assert timing_batch(seg_model, small, 64).shape[0] == 64
    ips = measure_throughputs(
        [(seg_model, {}, "entropy"), (seg_model, {3: 0.6}, "random")], x, warmup=1, repeats=3
    )
    assert len(ips) == 2 and all(math.isfinite(v) and v > 0 for v in ips)
    cpu = measure_throughputs([(seg_model, {3: 0.6}, "entropy")], x, 1, 2, clock="cpu")
    assert cpu[0] > 0
    with pytest.raises(ConfigError, match="unknown clock"):
        measure_throughputs([(seg_model, {}, "entropy")], x, 1, 2, clock="sundial")


def test_the_process_pool_returns_what_sequential_evaluation_does(
    tmp_path, seg_model, pause_splits
):
    seg_model.save(tmp_path / "model")
    jobs = [
        PauseJob(
            str(tmp_path / "model"),
            DATA.to_dict(),
            "val",
            PauseConfig.parse(text).to_dict(),
            mode,
            label=text,
        )
        for text, mode in (("", "entropy"), ("3:0.4", "entropy"), ("2:0.2,4:0.4", "random"))
    ]
    sequential = evaluate_pause_jobs(jobs, workers=1)
    parallel = evaluate_pause_jobs(jobs, workers=2)
    assert parallel == sequential
    assert [e.label for e in parallel] == ["", "3:0.4", "2:0.2,4:0.4"]
    assert sequential[1].metric == evaluate_metric(seg_model, pause_splits.val, {3: 0.4})


@pytest.fixture
def bank_and_vit(make_pause_tiny):
    bb = make_pause_tiny().eval()
    torch.manual_seed(3)
    bank = HeadBank(
        [HeadSpec("linear", 2), HeadSpec("mlp", 4), HeadSpec("linear", 5, {}, True)],
        HeadContext.from_backbone(bb),
    )
    return bank, PausingViT(bb, AuxDecoder(bb.embed_dim, 10))


def test_predict_under_an_empty_pause_equals_predict(bank_and_vit, pause_splits):
    bank, vit = bank_and_vit
    plain = predict(vit.backbone, bank, pause_splits, batch_size=40)
    paused = predict_under_pause(vit, bank, pause_splits, {}, batch_size=40)
    assert paused.heads == plain.heads and paused.num_classes == plain.num_classes
    for name in ("val", "test"):
        a, b = plain.splits[name], paused.splits[name]
        for field in ("labels", "confidence", "entropy", "pred", "uncertainty"):
            assert np.array_equal(getattr(a, field), getattr(b, field), equal_nan=True), field


def test_predict_under_pause_changes_what_follows_the_pause(bank_and_vit, pause_splits):
    bank, vit = bank_and_vit
    plain = predict_under_pause(vit, bank, pause_splits, {}, names=("val",))
    paused = predict_under_pause(vit, bank, pause_splits, {3: 0.6}, names=("val",))
    a, b = plain.splits["val"], paused.splits["val"]
    # the head after block 2 sees the same state; those after the pause at 3 do not
    assert np.array_equal(a.confidence[0], b.confidence[0])
    assert not np.array_equal(a.confidence[1], b.confidence[1])
    assert not np.array_equal(a.confidence[-1], b.confidence[-1])


def test_predict_under_pause_needs_a_classifier(seg_model, pause_splits, bank_and_vit):
    bank, _ = bank_and_vit
    with pytest.raises(ConfigError, match="not classification"):
        predict_under_pause(seg_model, bank, pause_splits, {})
