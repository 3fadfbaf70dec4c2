"""The loss terms against hand computations on small tensors."""

from __future__ import annotations

import math

import pytest
import torch

from exitsearch.finetune.lgvit import AligningModule
from exitsearch.finetune.losses import (
    feature_kl,
    feature_mse,
    gram,
    gram_mse,
    inplace_distillation,
    kd_loss,
    uncertainty_loss,
)
from exitsearch.finetune.mevit import sandwich_exits
from exitsearch.heads import HeadContext, UncertaintyPredictor


def _softmax(v: list[float]) -> list[float]:
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _kl(p: list[float], q: list[float]) -> float:
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True))


def test_eq5_inplace_distillation_by_hand():
    student = torch.tensor([[1.0, 0.0, -1.0], [0.5, 0.5, 2.0]])
    teacher = torch.tensor([[2.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    want = (
        sum(
            _kl(_softmax(t), _softmax(s))
            for s, t in zip(student.tolist(), teacher.tolist(), strict=True)
        )
        / 2
    )
    assert inplace_distillation(student, teacher).item() == pytest.approx(want, rel=1e-6)


def test_eq5_teacher_gets_no_gradient():
    student = torch.tensor([[1.0, 0.0]], requires_grad=True)
    teacher = torch.tensor([[0.0, 1.0]], requires_grad=True)
    inplace_distillation(student, teacher).backward()
    assert student.grad is not None and teacher.grad is None


def test_eq14_kd_loss_by_hand():
    s = [1.0, 2.0, 0.5]
    t = [3.0, 0.0, 1.0]
    y = 1
    gamma, temp = 0.3, 2.0
    ce = -math.log(_softmax(s)[y])
    # the soft term is divided by B*C (here 1*3), as LGViT's released code reduces it
    soft = _kl(_softmax([v / temp for v in t]), _softmax([v / temp for v in s])) / 3
    want = (1 - gamma) * ce + gamma * temp**2 * soft
    got = kd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([y]), gamma, temp)
    assert got.item() == pytest.approx(want, rel=1e-6)


def test_eq14_gamma_zero_is_cross_entropy_and_one_is_soft_only():
    s, t, y = torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 1, 2, 3])
    ce = torch.nn.functional.cross_entropy(s, y)
    assert kd_loss(s, t, y, 0.0, 3.0).item() == pytest.approx(ce.item(), rel=1e-6)
    assert kd_loss(s, s, y, 1.0, 3.0).item() == pytest.approx(0.0, abs=1e-6)


def test_eq11_gram_mse_by_hand():
    # Maps with different token counts (two GAHs with different windows): 2 and 3 tokens, D=2.
    f_m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    f_last = torch.tensor([[[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]])
    g_m = [[1 * 1 + 3 * 3, 1 * 2 + 3 * 4], [2 * 1 + 4 * 3, 2 * 2 + 4 * 4]]  # F^T F
    g_last = [[2.0, 1.0], [1.0, 2.0]]
    assert gram(f_m)[0].tolist() == g_m
    assert gram(f_last)[0].tolist() == g_last
    want = (
        sum(
            (a - b) ** 2
            for ra, rb in zip(g_m, g_last, strict=True)
            for a, b in zip(ra, rb, strict=True)
        )
        / 4
    )
    assert gram_mse(f_m, f_last).item() == pytest.approx(want)


def test_eq10_feature_mse_detaches_the_last_lph():
    f_m = torch.tensor([[[1.0, 2.0]]], requires_grad=True)
    f_last = torch.tensor([[[0.0, 4.0]]], requires_grad=True)
    loss = feature_mse(f_m, f_last)
    assert loss.item() == pytest.approx((1.0 + 4.0) / 2)
    loss.backward()
    assert f_m.grad is not None and f_last.grad is None


def test_eq9_feature_kl_sums_per_token_kl_over_tokens_and_averages_over_samples():
    student = torch.tensor([[[1.0, 0.0, 0.0], [0.0, 0.0, 0.0]]])  # 1 sample, 2 tokens, D=3
    teacher = torch.tensor([[[0.0, 1.0, 0.0], [0.0, 0.0, 2.0]]])
    want = _kl(_softmax([0.0, 1.0, 0.0]), _softmax([1.0, 0.0, 0.0])) + _kl(
        _softmax([0.0, 0.0, 2.0]), _softmax([0.0, 0.0, 0.0])
    )
    assert feature_kl(student, teacher).item() == pytest.approx(want, rel=1e-6)
    # a second sample equal to the first leaves the batch mean unchanged
    assert feature_kl(student.repeat(2, 1, 1), teacher.repeat(2, 1, 1)).item() == pytest.approx(
        want, rel=1e-6
    )
    with pytest.raises(ValueError, match="shape"):
        feature_kl(student, teacher[:, :1])


def test_eq2_uncertainty_loss_by_hand():
    pred = UncertaintyPredictor(3)
    with torch.no_grad():
        pred.proj.weight.copy_(torch.tensor([[0.5, -0.5, 0.0]]))
        pred.proj.bias.fill_(0.1)
    logits = torch.tensor([[2.0, 0.0, 0.0]])
    y = torch.tensor([0])
    p = _softmax([2.0, 0.0, 0.0])
    target = math.tanh(abs(p[0] - 1) + p[1] + p[2])  # eq. 4
    u = 1 / (1 + math.exp(-(0.5 * 2.0 + 0.1)))  # eq. 3
    assert uncertainty_loss(pred, logits, y).item() == pytest.approx((u - target) ** 2, rel=1e-6)


def test_sandwich_always_holds_the_earliest_exit():
    gen = torch.Generator().manual_seed(0)
    draws = [sandwich_exits(4, 1, gen) for _ in range(50)]
    assert all(d[0] == 0 and len(d) == 2 and 1 <= d[1] <= 3 for d in draws)
    assert {d[1] for d in draws} == {1, 2, 3}
    assert sandwich_exits(3, 5, gen) == [0, 1, 2]
    assert sandwich_exits(3, 0, gen) == [0]
    assert sandwich_exits(0, 2, gen) == []


@pytest.mark.parametrize(("grid", "stride", "out"), [(4, 1, 16), (4, 2, 4), (7, 2, 16), (7, 3, 9)])
def test_aligning_module_reaches_the_heads_grid(grid, stride, out):
    ctx = HeadContext(embed_dim=8, num_prefix_tokens=1, grid_size=(grid, grid), num_classes=3)
    align = AligningModule(ctx, stride).eval()
    assert align(torch.randn(2, grid * grid, 8)).shape == (2, out, 8)


def test_aligning_module_starts_as_identity_or_average():
    ctx = HeadContext(embed_dim=2, num_prefix_tokens=1, grid_size=(2, 2), num_classes=3)
    x = torch.arange(8.0).reshape(1, 4, 2)
    ident = AligningModule(ctx, 1).eval()
    bn = ident.bn
    want = torch.nn.functional.gelu(x) / math.sqrt(1 + bn.eps)  # fresh BN: mean 0, var 1
    assert torch.allclose(ident(x), want, atol=1e-6)
    avg = AligningModule(ctx, 2).eval()
    assert torch.allclose(
        avg(x), torch.nn.functional.gelu(x.mean(1, keepdim=True)) / math.sqrt(1 + bn.eps), atol=1e-6
    )
