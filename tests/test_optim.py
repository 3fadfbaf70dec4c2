"""The shared optimiser set-up: parameter groups and the warm-up + cosine schedule."""

from __future__ import annotations

import itertools
import math

import pytest
from torch import nn

from exitsearch.optim import adamw, warmup_cosine


def test_schedule_warms_up_linearly_then_decays_to_zero():
    lr = warmup_cosine(1.0, warmup_steps=4, total_steps=12)
    assert [lr(s) for s in range(4)] == pytest.approx([0.25, 0.5, 0.75, 1.0])
    # halfway through the 8 decay steps the cosine is at 1/2
    assert lr(8) == pytest.approx(0.5)
    assert lr(12) == pytest.approx(0.0, abs=1e-12)
    decay = [lr(s) for s in range(4, 13)]
    assert all(a >= b for a, b in itertools.pairwise(decay))
    assert lr(6) == pytest.approx(0.5 * (1 + math.cos(math.pi * 2 / 8)))


class _Tiny(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 2)
        self.norm = nn.LayerNorm(2)
        self.pos_embed = nn.Parameter(nn.init.zeros_(nn.Linear(2, 2).weight))


def test_only_matrices_are_decayed():
    model = _Tiny()
    opt = adamw(model, lr=1e-3, weight_decay=0.05)
    decayed, flat = opt.param_groups
    assert decayed["weight_decay"] == 0.05 and flat["weight_decay"] == 0.0
    assert [p.shape for p in decayed["params"]] == [model.fc.weight.shape]
    assert {id(p) for p in flat["params"]} == {
        id(model.fc.bias),
        id(model.norm.weight),
        id(model.norm.bias),
        id(model.pos_embed),
    }
