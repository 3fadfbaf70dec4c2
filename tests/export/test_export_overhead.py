"""The runtime's work beyond a latency table's parts, measured on a probe model."""

from __future__ import annotations

import math

import torch

from exitsearch.backbone import create_backbone
from exitsearch.export.overhead import measure_exit_overhead, with_exit_overhead
from exitsearch.profile import measure_latency
from exitsearch.profile.latency import EXIT_DECISION, EXIT_FIXED

TINY = {"img_size": 28, "patch_size": 7, "in_chans": 1, "num_classes": 10, "embed_dim": 32}


def test_decision_and_fixed_work_are_measured():
    bb = create_backbone("vit_tiny_patch16_224", **TINY, depth=4, num_heads=2)
    decision, fixed = measure_exit_overhead(bb, "cpu", batch_size=2, warmup=1, repeats=5)
    assert math.isfinite(decision) and decision > 0
    assert math.isfinite(fixed) and fixed >= 0
    table = measure_latency(bb, "cpu", 2, warmup=1, repeats=3)
    # a decision, and the work once per batch, are small parts of the forward of four blocks
    assert decision < table.full_ms and fixed < table.full_ms
    timed = with_exit_overhead(table, bb, warmup=1, repeats=3)
    assert timed.extra[EXIT_DECISION] > 0 and EXIT_FIXED in timed.extra
    assert timed.block_ms == table.block_ms  # the parts are left as they were


def test_a_one_block_backbone_still_gets_a_probe():
    bb = create_backbone("vit_tiny_patch16_224", **TINY, depth=1, num_heads=2)
    with torch.no_grad():
        decision, _ = measure_exit_overhead(bb, "cpu", batch_size=1, warmup=0, repeats=2)
    assert decision > 0
