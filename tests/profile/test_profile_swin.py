"""Swin's per-block FLOPs against an analytic count: windowed attention, padding, patch merging.

Derived from the model object (fvcore's convention: one multiply-accumulate is one FLOP,
LayerNorm 5 per element; additions, softmax, the relative position bias and the shift mask are
not counted).
"""

from __future__ import annotations

import math

import pytest

from exitsearch.backbone import create_backbone
from exitsearch.backbone.swin import SwinBackbone
from exitsearch.profile import profile_backbone


def analytic_block(bb: SwinBackbone, index: int) -> int:
    """Block ``index`` (1-based) on its stage's grid, with the patch merging in front of it."""
    rows, cols = bb.state_grid(index)
    c = bb.state_dim(index)
    n = rows * cols
    wr, wc = bb.window_size(index)
    # the grid is padded up to whole windows; every window attends within itself
    windows = math.ceil(rows / wr) * math.ceil(cols / wc)
    area = wr * wc
    blk = bb._block(index)
    hidden = blk.mlp.fc1.out_features
    flops = 2 * 5 * n * c  # two LayerNorms
    flops += windows * area * c * 3 * c  # qkv on the padded grid
    flops += windows * area * area * c * 2  # Q K^T and A V in every window
    flops += windows * area * c * c  # output projection (padded tokens too)
    flops += 2 * n * c * hidden  # MLP
    names = bb.block_module_names(index)
    if len(names) == 2:  # patch merging: 2x2 neighbours (odd grids padded), norm, reduction
        prev_rows, prev_cols = bb.state_grid(index - 1)
        cin = bb.state_dim(index - 1)
        merged = math.ceil(prev_rows / 2) * math.ceil(prev_cols / 2)
        assert merged == n
        flops += 5 * merged * 4 * cin + merged * 4 * cin * c
    return flops


def analytic_stem(bb: SwinBackbone) -> int:
    conv = bb.model.patch_embed.proj
    kh, kw = conv.kernel_size
    rows, cols = bb.grid_size
    n, c = rows * cols, bb.embed_dim
    return n * c * conv.in_channels * kh * kw + 5 * n * c  # convolution and its LayerNorm


def analytic_head(bb: SwinBackbone) -> int:
    rows, cols = bb.state_grid(bb.depth)
    c = bb.state_dim(bb.depth)
    return 5 * rows * cols * c + c * bb.num_classes  # final norm, then the classifier


CASES = [
    # three stages, the last window clamped to its 4x4 grid
    {"embed_dim": 16, "depths": (2, 1, 2), "num_heads": (1, 2, 4), "window_size": 7},
    # windows of 4 on a 14x14 grid: padded to 16x16, and a padded merge 7 -> 4
    {"embed_dim": 24, "depths": (2, 2), "num_heads": (2, 4), "window_size": 4},
]


@pytest.mark.parametrize("arch", CASES, ids=["window7", "window4-padded"])
def test_swin_blocks_match_the_analytic_count(arch):
    bb = create_backbone(
        "swin_tiny_patch4_window7_224",
        img_size=28,
        patch_size=2,
        in_chans=1,
        num_classes=10,
        **arch,
    )
    prof = profile_backbone(bb)
    assert [b.flops for b in prof.blocks] == [analytic_block(bb, i) for i in range(1, bb.depth + 1)]
    assert prof.stem_flops == analytic_stem(bb)
    assert prof.head_flops == analytic_head(bb)
    assert prof.total_flops == prof.stem_flops + sum(b.flops for b in prof.blocks) + prof.head_flops
    assert prof.cumulative(bb.depth) + prof.head_flops == prof.total_flops
    # blocks of one stage cost the same; the first of a later stage adds its patch merging
    assert prof.blocks[0].flops == prof.blocks[1].flops
    assert sum(b.params for b in prof.blocks) < prof.params


def test_block_flops_on_other_token_counts_is_refused():
    from exitsearch.errors import ConfigError
    from exitsearch.profile.backbone import block_flops

    bb = create_backbone(
        "swin_tiny_patch4_window7_224", img_size=28, patch_size=2, in_chans=1, **CASES[0]
    )
    with pytest.raises(ConfigError, match="whole grid"):
        block_flops(bb, 1, 100)


def test_a_swin_latency_table_reads_back_as_the_same_model(tmp_path):
    from exitsearch._io import atomic_write_json
    from exitsearch.backbone import BackboneSpec, resolve_spec
    from exitsearch.export.timing import measure_in_runtime
    from exitsearch.heads import HeadSpec
    from exitsearch.profile.table import device_table, read_table

    spec = BackboneSpec(
        "swin_tiny_patch4_window7_224",
        overrides={"img_size": 28, "patch_size": 2, "in_chans": 1, **CASES[0]},
    )
    bb = create_backbone(spec)
    arch = {**resolve_spec(spec).to_dict(), "checkpoint": None, "pretrained": False}
    heads = [HeadSpec("linear", m) for m in (1, 5)]
    measured = measure_in_runtime(bb, heads, "cpu", 2, warmup=0, repeats=1)
    # every Swin block timed inside the runtime, patch merging included
    assert len(measured.table.block_ms) == bb.depth and min(measured.table.block_ms) > 0
    assert sorted(measured.heads_ms) == sorted(h.key for h in heads)
    table = device_table(bb, arch, measured.table, measured.heads_ms)
    atomic_write_json(tmp_path / "t.json", table.to_json())
    # per-stage overrides come back from JSON as lists: still the same model
    read_table(tmp_path / "t.json").check(arch, table.input_size, [h.key for h in heads])
