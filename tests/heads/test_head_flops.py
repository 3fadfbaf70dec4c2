"""Head costs: fvcore's counts (1 multiply-accumulate = 1 FLOP) against counts derived by hand.

Conventions of :func:`exitsearch.profile.flops.count_flops`: a linear layer or convolution
costs one per multiply-accumulate (bias free), LayerNorm 5 per element, BatchNorm in eval mode
2 per element, average pooling 1 per input element, ``scaled_dot_product_attention`` its two
products; additions, activations, softmax, means and max pooling are not counted.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

import exitsearch.heads.profile as head_profile
from exitsearch.heads import HeadContext, HeadCost, HeadSpec, head_cost, list_heads, profile_heads
from exitsearch.heads.base import mlp_hidden

# the embedded default: a ViT with D = 96 on 28 px Fashion-MNIST, 4 px patches
CTX = HeadContext(
    embed_dim=96, num_prefix_tokens=1, grid_size=(7, 7), num_classes=10, num_heads=3, depth=12
)
D, N, T, C = 96, 49, 50, 10
H = mlp_hidden(CTX)  # 48
MLP_FLOPS = D * H + H * H + H * C  # the three-layer MLP on a D-vector
MLP_PARAMS = (D * H + H) + (H * H + H) + (H * C + C)


def flops(name: str, **params: Any) -> int:
    return head_cost(HeadSpec(name, 1, params), CTX).flops


def params_of(name: str, **params: Any) -> int:
    return head_cost(HeadSpec(name, 1, params), CTX).params


def test_hidden_width_of_the_mlp() -> None:
    assert H == 48


def test_linear() -> None:
    assert flops("linear") == 5 * D + D * C  # LayerNorm on one token, one dense layer
    assert params_of("linear") == 2 * D + D * C + C


def test_mlp() -> None:
    assert flops("mlp") == 5 * D + MLP_FLOPS
    assert params_of("mlp") == 2 * D + MLP_PARAMS


@pytest.mark.parametrize("s", [1, 2, 3])
def test_gah(s: int) -> None:
    n = math.ceil(7 / s) ** 2  # N' tokens after PFC: 49, 16, 9
    pfc = N * D if s > 1 else 0  # average pooling reads every patch once; s = 1 is skipped
    qkv = n * D * 3 * D
    attention = 2 * n * n * D  # QK^T and AV
    proj = n * D * D
    classifier = 5 * D + D * C
    assert flops("gah", s=s) == pfc + qkv + attention + proj + classifier
    # eq. 7 of LGViT, 4N'D² + 2N'²D, is the attention part exactly
    assert qkv + attention + proj == 4 * n * D * D + 2 * n * n * D
    assert params_of("gah", s=s) == (3 * D * D + 3 * D) + (D * D + D) + 2 * D + D * C + C


@pytest.mark.parametrize("k", [0, 3, 5])
def test_lph(k: int) -> None:
    e = D  # expansion 1 (eq. 7)
    expand = N * D * e + 2 * N * e  # 1x1 conv + BatchNorm
    pdconv = N * e * k * k + 2 * N * e if k else 0  # depth-wise k x k + BatchNorm
    project = N * e * D + 2 * N * D
    assert flops("lph", k=k) == expand + pdconv + project + 5 * D + D * C
    bn = 2  # scale and shift per channel
    # every convolution keeps its bias (GELU, not BatchNorm, follows it)
    expected_params = (
        (D * e + e + bn * e) + (e * k * k + e + bn * e if k else 0) + (e * D + D + bn * D)
    )
    assert params_of("lph", k=k) == expected_params + 2 * D + D * C + C


@pytest.mark.parametrize(
    "name, in_channels", [("cnn_ignore", D), ("cnn_add", D), ("cnn_project", 2 * D)]
)
def test_cnn(name: str, in_channels: int) -> None:
    c = D // 4
    pooled = 4 * 4  # 7x7 after 2x2 max pooling with ceil_mode
    mlp = c * pooled * H + H * H + H * C
    assert flops(name) == N * 9 * in_channels * c + mlp


@pytest.mark.parametrize("name, r", [("vit", 4), ("vit_r2", 2)])
def test_vit(name: str, r: int) -> None:
    block = 2 * 5 * T * D + T * D * 3 * D + 2 * T * T * D + T * D * D + 2 * T * D * r * D
    assert flops(name) == block + 5 * D + MLP_FLOPS


@pytest.mark.parametrize("name, r", [("mixer", 4), ("mixer_r2", 2)])
def test_mixer(name: str, r: int) -> None:
    ds, dc = D // 2, r * D
    layer = 2 * 5 * N * D + 2 * D * N * ds + 2 * N * D * dc  # two LayerNorms, eqs. 3a, 3b
    assert flops(name) == layer + 5 * N * D + MLP_FLOPS


@pytest.mark.parametrize("name, r", [("resmlp", 4), ("resmlp_r2", 2)])
def test_resmlp(name: str, r: int) -> None:
    dc = r * D
    layer = D * N * N + 2 * N * D * dc  # eq. 4a's f1 over tokens, eq. 4b's f2 and f3
    assert flops(name) == layer + MLP_FLOPS  # affine maps are elementwise: not counted


def test_tokenmap() -> None:
    # LayerNorm on every patch token, then one dense layer on the whole 7x7 map
    assert flops("tokenmap") == 5 * N * D + N * D * C
    assert params_of("tokenmap") == 2 * D + N * D * C + C
    # pooled to 4x4: average pooling reads every patch once, the layer sees 16 tokens
    assert flops("tokenmap", grid=4) == 5 * N * D + N * D + 16 * D * C
    assert params_of("tokenmap", grid=4) == 2 * D + 16 * D * C + C


def test_uncounted_ops_are_reported() -> None:
    ops = head_cost(HeadSpec("gah", 1, {"s": 2}), CTX).uncounted_ops
    assert ops.get("aten::mean") == 1


@pytest.mark.parametrize("name", list_heads())
def test_uncertainty_adds_num_classes_macs(name: str) -> None:
    plain = head_cost(HeadSpec(name, 3), CTX)
    with_u = head_cost(HeadSpec(name, 3, uncertainty=True), CTX)
    assert with_u.flops - plain.flops == C
    assert with_u.params - plain.params == C + 1


@pytest.mark.parametrize("name", list_heads())
def test_cost_does_not_depend_on_location(name: str) -> None:
    assert head_cost(HeadSpec(name, 1), CTX) == head_cost(HeadSpec(name, 12), CTX)


def test_profile_heads_counts_each_variant_once(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[str] = []
    real = head_profile.head_cost

    def counting(spec: HeadSpec, ctx: HeadContext) -> HeadCost:
        calls.append(spec.key)
        return real(spec, ctx)

    monkeypatch.setattr(head_profile, "head_cost", counting)
    specs = [HeadSpec("lph", m, {"k": 3}) for m in (1, 2, 3)]
    specs += [HeadSpec("lph", 4, {"k": 0}), HeadSpec("lph", 5, {"k": 3}, uncertainty=True)]
    specs += [HeadSpec("gah", m, {"s": 2}) for m in (7, 9)]
    costs = profile_heads(specs, CTX)
    assert list(costs) == [s.key for s in specs]
    assert calls == ["lph[k=3]@1", "lph[k=0]@4", "lph[k=3]@5+u", "gah[s=2]@7"]
    assert costs["lph[k=3]@2"] is costs["lph[k=3]@1"]
    assert costs["gah[s=2]@9"] == head_cost(HeadSpec("gah", 9, {"s": 2}), CTX)
    assert costs["lph[k=3]@5+u"].flops == costs["lph[k=3]@1"].flops + C
