"""count_flops: fvcore plus the attention handle, with uncounted ops reported."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

from exitsearch.profile import EXTRA_HANDLES, count_flops

SDPA = "aten::scaled_dot_product_attention"


def _fvcore_total_without_extra_handles(module: nn.Module, x: torch.Tensor) -> tuple[int, dict]:
    """The same count as fvcore gives out of the box (no SDPA handle)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fvcore.nn import FlopCountAnalysis

        analysis = FlopCountAnalysis(module.eval(), x)
        analysis.unsupported_ops_warnings(False).uncalled_modules_warnings(False)
        analysis.tracer_warnings("none")
        with torch.no_grad():
            return int(analysis.total()), dict(analysis.unsupported_ops())


def test_attention_products_are_counted(vit_base):
    blk = vit_base.model.blocks[0]
    if not blk.attn.fused_attn:
        pytest.skip("timm runs attention unfused here (TIMM_FUSED_ATTN=0): no SDPA op to count")
    n, d = vit_base.num_tokens, vit_base.embed_dim
    x = torch.zeros(1, n, d)
    with_handle = count_flops(blk, x)
    without, unsupported = _fvcore_total_without_extra_handles(blk, x)
    assert SDPA in unsupported  # plain fvcore really skips it...
    assert SDPA not in with_handle.uncounted_ops  # ...and count_flops does not
    assert with_handle.total - without == 2 * n * n * d


def test_sdpa_handle_counts_both_products_per_head():
    # 3 heads of width 8, 5 query and 7 key tokens, value width 4, batch 2
    q, k, v = torch.zeros(2, 3, 5, 8), torch.zeros(2, 3, 7, 8), torch.zeros(2, 3, 7, 4)

    class Attend(nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v)

    got = count_flops(Attend(), q, k, v)
    assert got.total == 2 * 3 * (5 * 7 * 8 + 5 * 7 * 4)
    assert "aten::scaled_dot_product_attention" in EXTRA_HANDLES


def test_linear_and_layernorm_follow_the_mac_convention():
    model = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 24), nn.GELU())
    got = count_flops(model, torch.zeros(3, 10, 16))
    assert got.total == 5 * 3 * 10 * 16 + 3 * 10 * 16 * 24
    assert got.module("0") == 5 * 3 * 10 * 16
    assert got.module("1") == 3 * 10 * 16 * 24
    assert got.module("no-such-module") == 0
    assert got.uncounted_ops == {"aten::gelu": 1}


def test_count_flops_restores_training_mode():
    model = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5))
    model.train()
    count_flops(model, torch.zeros(1, 4))
    assert model.training and model[1].training
    model.eval()
    count_flops(model, torch.zeros(1, 4))
    assert not model.training
