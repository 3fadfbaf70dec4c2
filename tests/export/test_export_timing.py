"""Latency measured inside the exported runtime: probes cover every candidate head, the parts
are the runtime's own, and bad requests are refused."""

from __future__ import annotations

import math

import pytest
import torch

from exitsearch.backbone import create_backbone
from exitsearch.core.spec import HeadSpec
from exitsearch.errors import ConfigError
from exitsearch.export.timing import measure_in_runtime, probe_layout

TINY = {"img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10, "embed_dim": 32}
SPECS = [
    HeadSpec("linear", 1),
    HeadSpec("mlp", 1),
    HeadSpec("cnn_add", 1),
    HeadSpec("mlp", 2),
    HeadSpec("mlp", 3, uncertainty=True),
]


@pytest.fixture(scope="module")
def bb():
    torch.manual_seed(0)
    return create_backbone("vit_tiny_patch16_224", **TINY, depth=4, num_heads=2)


def test_probes_hold_every_candidate_once_and_one_head_per_location():
    probes = probe_layout(SPECS, depth=4)
    # three heads at block 1: three probes without predictors, one with
    assert len(probes) == 4
    placed = [s for p in probes for s in p if s in SPECS]
    assert sorted(placed, key=lambda s: s.key) == sorted(SPECS, key=lambda s: s.key)
    for p in probes:
        assert [s.location for s in p] == [1, 2, 3]  # every block but the last has a head
        # heads with an uncertainty predictor never share a probe with heads without one
        assert len({s.uncertainty for s in p}) == 1


def test_a_probe_reaches_a_candidate_beyond_the_usual_locations():
    (probe,) = probe_layout([HeadSpec("linear", 4)], depth=4)
    assert [s.location for s in probe] == [1, 2, 3, 4]
    assert probe_layout([], depth=1) == [()]


def test_parts_heads_and_the_runtime_work_are_timed_in_the_runtime(bb):
    got = measure_in_runtime(bb, SPECS, "cpu", batch_size=2, warmup=1, repeats=3)
    t = got.table
    assert t.batch_size == 2 and len(t.block_ms) == 4
    assert t.stem_ms > 0 and t.head_ms > 0 and min(t.block_ms) > 0
    assert sorted(got.heads_ms) == sorted(s.key for s in SPECS)
    assert all(math.isfinite(v) and v > 0 for v in got.heads_ms.values())
    assert t.exit_decision_ms > 0 and t.exit_fixed_ms >= 0
    # a probe call runs every block, a head and a decision after each: more than the blocks
    assert got.call_ms > t.parts_ms > 0 and t.full_ms > 0
    assert math.isfinite(t.exit_resume_ms)


def test_the_parts_are_in_a_row_times_and_add_up_to_the_plain_forward(bb):
    got = measure_in_runtime(bb, SPECS[:2], "cpu", batch_size=2, warmup=2, repeats=15)
    t = got.table
    # the probe's parts less the cold start after each of its three exits: what a plain
    # forward takes for them, up to the scatter of medians over a few milliseconds
    assert t.parts_ms == pytest.approx(t.full_ms, rel=0.5)
    # the probe call holds every part, three heads, three decisions and three cold starts
    assert got.call_ms > t.parts_ms + 3 * t.exit_decision_ms


def test_a_one_block_backbone_still_gets_a_probe():
    bb = create_backbone("vit_tiny_patch16_224", **TINY, depth=1, num_heads=2)
    got = measure_in_runtime(bb, [], "cpu", batch_size=1, warmup=0, repeats=2)
    assert len(got.table.block_ms) == 1 and got.heads_ms == {}
    assert got.table.exit_decision_ms == 0.0  # no early exit to decide at


def test_the_onnx_runtime_is_timed_through_its_graphs(bb):
    pytest.importorskip("onnxruntime")
    specs = [HeadSpec("linear", 1), HeadSpec("mlp", 2)]
    got = measure_in_runtime(bb, specs, "cpu", batch_size=2, warmup=1, repeats=2, engine="onnx")
    assert sorted(got.heads_ms) == ["linear@1", "mlp@2"]
    # a block's time is its graph's less the cold start after an exit (about 0.16 ms between
    # ONNX graphs here), which can match a 0.13 ms block of this tiny model: such a block is
    # clamped at 0, so only the whole is sure to be positive
    t = got.table
    assert len(t.block_ms) == 4 and min(t.block_ms) >= 0 and sum(t.block_ms) > 0
    assert t.stem_ms > 0


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"engine": "tvm"}, "unknown engine 'tvm'"),
        ({"engine": "onnx", "device": "cuda"}, "runs on the CPU"),
        ({"batch_size": 0}, "batch_size >= 1"),
        ({"repeats": 0}, "repeats >= 1"),
        ({"batch_size": 10**9}, "of memory"),
    ],
)
def test_bad_requests_are_refused(bb, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        measure_in_runtime(bb, SPECS, **{"device": "cpu", **kwargs})
