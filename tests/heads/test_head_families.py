"""Head-specific behaviour, each checked against values derived by hand from the equations."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

from exitsearch.errors import ConfigError
from exitsearch.heads import ExitHead, HeadContext, HeadSpec, create_head
from exitsearch.heads.gah import PositionwiseFeatureConvergence
from exitsearch.heads.mixer import MixerLayer
from exitsearch.heads.resmlp import Affine, ResMLPLayer

D = 24
CTX = HeadContext(D, 1, (7, 7), 5, num_heads=3)
NOCLS = HeadContext(D, 0, (4, 4), 5, num_heads=3, has_class_token=False)


def head(name: str, ctx: HeadContext = CTX, **params: Any) -> ExitHead:
    torch.manual_seed(0)
    return create_head(HeadSpec(name, 1, params), ctx).eval()


def hidden(ctx: HeadContext = CTX, batch: int = 2, seed: int = 1) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(batch, ctx.num_tokens, ctx.embed_dim, generator=gen)


def with_patches(h: torch.Tensor, ctx: HeadContext, patches: torch.Tensor) -> torch.Tensor:
    return torch.cat([h[:, : ctx.num_prefix_tokens], patches], dim=1)


# ------------------------------------------------------------------------------------ mlp
def test_mlp_reads_the_normalised_class_token() -> None:
    h, x = head("mlp"), hidden()
    expected = F.layer_norm(x[:, 0], (D,), h.norm.weight, h.norm.bias)
    torch.testing.assert_close(h.features(x), expected)
    # the patches do not matter
    torch.testing.assert_close(h(with_patches(x, CTX, torch.zeros_like(x[:, 1:]))), h(x))


def test_mlp_without_class_token_normalises_the_mean_patch() -> None:
    h, x = head("mlp", NOCLS), hidden(NOCLS)
    expected = F.layer_norm(x.mean(1), (D,), h.norm.weight, h.norm.bias)
    torch.testing.assert_close(h.features(x), expected)


def test_mlp_classifier_is_three_dense_layers_with_two_dropouts() -> None:
    mlp = head("mlp").mlp
    dense = [m for m in mlp if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in dense] == [(D, 12), (12, 12), (12, 5)]
    assert sum(isinstance(m, nn.Dropout) for m in mlp) == 2
    assert head("mlp", drop=0.3).mlp[2].p == 0.3
    with pytest.raises(ConfigError, match="0 <= drop < 1"):
        head("mlp", drop=1.0)


# ------------------------------------------------------------------------------------ cnn
def test_cnn_add_equals_cnn_ignore_fed_patches_plus_class_token() -> None:
    add, ignore = head("cnn_add"), head("cnn_ignore")
    ignore.load_state_dict(add.state_dict())
    x = hidden()
    summed = with_patches(x, CTX, x[:, 1:] + x[:, :1])
    torch.testing.assert_close(add(x), ignore(summed))


def test_cnn_add_without_class_token_adds_the_mean_patch() -> None:
    add, ignore = head("cnn_add", NOCLS), head("cnn_ignore", NOCLS)
    ignore.load_state_dict(add.state_dict())
    x = hidden(NOCLS)
    torch.testing.assert_close(add(x), ignore(x + x.mean(1, keepdim=True)))


def test_cnn_project_convolves_2d_channels() -> None:
    project, ignore = head("cnn_project"), head("cnn_ignore")
    assert project.conv.in_channels == 2 * D
    assert ignore.conv.in_channels == head("cnn_add").conv.in_channels == D
    # channels [0, D) of the concatenation are the patch, [D, 2D) the class token: with the
    # class-token half of the kernel zeroed the head is CNN-Ignore with the other half
    with torch.no_grad():
        project.conv.weight[:, D:] = 0
    state = project.state_dict()
    state["conv.weight"] = state["conv.weight"][:, :D]
    ignore.load_state_dict(state)
    x = hidden()
    torch.testing.assert_close(project(x), ignore(x))


def test_cnn_ignore_discards_the_class_token() -> None:
    h, x = head("cnn_ignore"), hidden()
    y = x.clone()
    y[:, 0] += 10
    torch.testing.assert_close(h(y), h(x))


def test_cnn_shapes_follow_the_grid() -> None:
    h = head("cnn_ignore", channels=8)
    assert (h.conv.kernel_size, h.conv.padding, h.conv.out_channels) == ((3, 3), (1, 1), 8)
    assert head("cnn_ignore").conv.out_channels == D // 4
    # 7x7 -> max pool 2x2 with ceil_mode -> 4x4
    assert h.features(hidden()).shape == (2, 8 * 4 * 4)
    assert h.mlp[0].in_features == 8 * 16
    with pytest.raises(ConfigError, match="channels >= 1"):
        head("cnn_add", channels=0)


# ------------------------------------------------------------------------------------ vit
def test_vit_head_is_one_timm_block_then_norm_and_mlp() -> None:
    h, x = head("vit"), hidden()
    assert isinstance(h.block, Block)
    assert h.block.attn.num_heads == CTX.num_heads
    # the backbone layer's MLP ratio 4 (Multi-Exit ViT); vit_r2 is the named ratio-2 variant
    assert h.block.mlp.fc1.out_features == 4 * D
    assert head("vit_r2").block.mlp.fc1.out_features == 2 * D
    assert head("vit", mlp_ratio=2.0).block.mlp.fc1.out_features == 2 * D
    expected = F.layer_norm(h.block(x)[:, 0], (D,), h.norm.weight, h.norm.bias)
    torch.testing.assert_close(h.features(x), expected)
    with pytest.raises(ConfigError, match="embed_dim % num_heads == 0"):
        head("vit", num_heads=5)


def test_vit_head_without_class_token_pools_the_block_output() -> None:
    h, x = head("vit", NOCLS), hidden(NOCLS)
    expected = F.layer_norm(h.block(x).mean(1), (D,), h.norm.weight, h.norm.bias)
    torch.testing.assert_close(h.features(x), expected)


# ---------------------------------------------------------------------------------- mixer
def test_mixer_layer_is_the_identity_with_its_last_linear_layers_zeroed() -> None:
    torch.manual_seed(0)
    layer = MixerLayer(num_tokens=9, dim=D, token_hidden=4, channel_hidden=8)
    for f in (layer.f2, layer.f4):
        nn.init.zeros_(f.weight)
        nn.init.zeros_(f.bias)
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(layer(x), x)


def test_mixer_layer_follows_equations_3a_3b() -> None:
    torch.manual_seed(0)
    layer = MixerLayer(num_tokens=9, dim=D, token_hidden=4, channel_hidden=8)
    x = torch.randn(2, 9, D)

    def ln(t: torch.Tensor, norm: nn.LayerNorm) -> torch.Tensor:
        mu, var = t.mean(-1, keepdim=True), t.var(-1, unbiased=False, keepdim=True)
        return (t - mu) / torch.sqrt(var + norm.eps) * norm.weight + norm.bias

    def lin(t: torch.Tensor, f: nn.Linear) -> torch.Tensor:
        return t @ f.weight.T + f.bias

    with torch.no_grad():
        u = x + lin(F.gelu(lin(ln(x, layer.norm1).transpose(1, 2), layer.f1)), layer.f2).mT
        y = u + lin(F.gelu(lin(ln(u, layer.norm2), layer.f3)), layer.f4)
        torch.testing.assert_close(layer(x), y)


def test_mixer_head_mixes_patch_tokens_only() -> None:
    h, x = head("mixer"), hidden()
    assert (h.layer.f1.in_features, h.layer.f1.out_features) == (49, D // 2)
    assert h.layer.f3.out_features == 4 * D  # MLP-Mixer's D_C = 4D
    assert head("mixer_r2").layer.f3.out_features == 2 * D
    y = x.clone()
    y[:, 0] += 10  # the class token does not enter
    torch.testing.assert_close(h(y), h(x))
    expected = F.layer_norm(h.layer(x[:, 1:]), (D,), h.norm.weight, h.norm.bias).mean(1)
    torch.testing.assert_close(h.features(x), expected)


# --------------------------------------------------------------------------------- resmlp
def test_affine_starts_as_identity_and_is_diag_alpha_x_plus_beta() -> None:
    aff = Affine(D)
    assert torch.equal(aff.alpha, torch.ones(D)) and torch.equal(aff.beta, torch.zeros(D))
    x = torch.randn(2, 3, D)
    torch.testing.assert_close(aff(x), x)
    with torch.no_grad():
        aff.alpha.copy_(torch.arange(D, dtype=torch.float32))
        aff.beta.fill_(0.5)
    torch.testing.assert_close(aff(x), x * torch.arange(D) + 0.5)


def test_resmlp_head_affines_start_as_identity() -> None:
    affines = [m for m in head("resmlp").modules() if isinstance(m, Affine)]
    assert len(affines) == 5  # 4 in the layer (eqs. 4a, 4b), 1 before pooling
    for aff in affines:
        assert torch.equal(aff.alpha, torch.ones(D)) and torch.equal(aff.beta, torch.zeros(D))
    assert not any(isinstance(m, nn.LayerNorm) for m in head("resmlp").modules())


def test_resmlp_layer_is_the_identity_with_its_last_linear_layers_zeroed() -> None:
    torch.manual_seed(0)
    layer = ResMLPLayer(num_tokens=9, dim=D, hidden=8)
    for f in (layer.f1, layer.f3):
        nn.init.zeros_(f.weight)
        nn.init.zeros_(f.bias)
    x = torch.randn(2, 9, D)
    torch.testing.assert_close(layer(x), x)


def test_resmlp_cross_patch_sublayer_follows_equation_4a() -> None:
    torch.manual_seed(0)
    layer = ResMLPLayer(num_tokens=9, dim=D, hidden=8)
    nn.init.zeros_(layer.f3.weight)
    nn.init.zeros_(layer.f3.bias)
    x = torch.randn(2, 9, D)
    # with identity affines and no cross-channel update: U = X + W1 X + b1 (over tokens)
    expected = x + torch.einsum("mn,bnd->bmd", layer.f1.weight, x) + layer.f1.bias[:, None]
    with torch.no_grad():
        torch.testing.assert_close(layer(x), expected)


def test_resmlp_head_ignores_prefix_tokens_and_pools() -> None:
    h, x = head("resmlp"), hidden()
    assert (h.layer.f1.in_features, h.layer.f1.out_features) == (49, 49)
    assert h.layer.f2.out_features == 4 * D  # ResMLP's ratio 4
    assert head("resmlp_r2").layer.f2.out_features == 2 * D
    y = x.clone()
    y[:, 0] += 10
    torch.testing.assert_close(h(y), h(x))
    torch.testing.assert_close(h.features(x), h.layer(x[:, 1:]).mean(1))


# ------------------------------------------------------------------------------------ lph
def test_lph_with_k0_has_no_depthwise_convolution() -> None:
    k0, k3 = head("lph", k=0), head("lph", k=3)
    e = D  # expansion 1 by default (LGViT, eq. 7)
    assert isinstance(k0.pdconv, nn.Identity)
    assert not any(isinstance(m, nn.Conv2d) and m.groups > 1 for m in k0.modules())
    dw = k3.pdconv[0]
    assert (dw.groups, dw.in_channels, dw.kernel_size, dw.padding) == (e, e, (3, 3), (1, 1))
    n0 = sum(p.numel() for p in k0.parameters())
    n3 = sum(p.numel() for p in k3.parameters())
    # depth-wise kernel and bias + its BatchNorm's scale and shift
    assert n3 - n0 == e * 3 * 3 + e + 2 * e


def test_lph_layers_and_expansion() -> None:
    h = head("lph", k=5, expansion=3)
    assert (h.expand[0].in_channels, h.expand[0].out_channels) == (D, 3 * D)
    assert h.pdconv[0].kernel_size == (5, 5)
    assert (h.project[0].in_channels, h.project[0].out_channels) == (3 * D, D)
    for block in (h.expand, h.pdconv, h.project):
        assert [type(m) for m in block] == [
            nn.Conv2d,
            nn.GELU,
            nn.BatchNorm2d,
        ]  # LGViT: "GELU and BN ... after each convolution"


@pytest.mark.parametrize("name", ["lph", "gah"])
def test_lgvit_heads_add_the_class_token_to_the_pooled_output(name: str) -> None:
    h, x = head(name), hidden()
    y = x.clone()
    delta = torch.randn(2, D)
    y[:, 0] += delta
    torch.testing.assert_close(h.features(y), h.features(x) + delta)
    assert isinstance(h.classifier[0], nn.LayerNorm) and isinstance(h.classifier[1], nn.Linear)


def test_lph_features_by_hand() -> None:
    h, x = head("lph", NOCLS, k=3), hidden(NOCLS)
    grid = x.transpose(1, 2).reshape(2, D, 4, 4)
    expected = h.project(h.pdconv(h.expand(grid))).mean((2, 3))  # no class token: no sum
    torch.testing.assert_close(h.features(x), expected)


@pytest.mark.parametrize("k", [2, 4, -1, -3])
def test_lph_rejects_even_or_negative_kernels(k: int) -> None:
    with pytest.raises(ConfigError, match=r"`k == 0 or k is a positive odd integer` must hold"):
        head("lph", k=k)


@pytest.mark.parametrize("k", [3.0, True, "3"])
def test_lph_rejects_non_integer_kernels(k: Any) -> None:
    with pytest.raises(ConfigError, match="`k` must be an integer"):
        head("lph", k=k)


def test_lph_accepts_k1() -> None:
    assert head("lph", k=1).pdconv[0].kernel_size == (1, 1)


# ------------------------------------------------------------------------------------ gah
@pytest.mark.parametrize("grid", [(7, 7), (5, 5), (3, 5), (4, 4)])
@pytest.mark.parametrize("s", [1, 2, 3, 4, 8])
def test_pfc_token_count(grid: tuple[int, int], s: int) -> None:
    ctx = HeadContext(D, 1, grid, 5, 3)
    pfc = PositionwiseFeatureConvergence(ctx, s)
    out = pfc(torch.randn(2, grid[0] * grid[1], D))
    assert out.shape == (2, math.ceil(grid[0] / s) * math.ceil(grid[1] / s), D)
    assert pfc.output_grid() == (math.ceil(grid[0] / s), math.ceil(grid[1] / s))
    assert not list(pfc.parameters())


def test_pfc_averages_the_patches_each_window_covers() -> None:
    ctx = HeadContext(1, 0, (5, 5), 2, has_class_token=False)
    grid = torch.arange(25.0).reshape(5, 5)
    out = PositionwiseFeatureConvergence(ctx, 2)(grid.reshape(1, 25, 1)).reshape(3, 3)
    # windows at the right and bottom edges cover 2 or 1 patches and average only those
    expected = torch.tensor(
        [
            [(0 + 1 + 5 + 6) / 4, (2 + 3 + 7 + 8) / 4, (4 + 9) / 2],
            [(10 + 11 + 15 + 16) / 4, (12 + 13 + 17 + 18) / 4, (14 + 19) / 2],
            [(20 + 21) / 2, (22 + 23) / 2, 24.0],
        ]
    )
    torch.testing.assert_close(out, expected)


def test_pfc_with_s1_is_the_identity() -> None:
    x = torch.randn(2, 49, D)
    assert PositionwiseFeatureConvergence(CTX, 1)(x) is x


def test_gah_features_by_hand() -> None:
    h, x = head("gah", s=3), hidden()
    tokens = F.avg_pool2d(
        x[:, 1:].transpose(1, 2).reshape(2, D, 7, 7), 3, 3, ceil_mode=True
    ).flatten(2)
    expected = h.attn(tokens.transpose(1, 2)).mean(1) + x[:, 0]
    torch.testing.assert_close(h.features(x), expected)
    assert h.attn.num_heads == CTX.num_heads
    assert head("gah", num_heads=2).attn.num_heads == 2


@pytest.mark.parametrize("s", [0, -2])
def test_gah_rejects_windows_below_one(s: int) -> None:
    with pytest.raises(ConfigError, match=r"`s >= 1` must hold, but got \(s="):
        head("gah", s=s)


def test_gah_rejects_non_integer_windows() -> None:
    with pytest.raises(ConfigError, match="`s` must be an integer"):
        head("gah", s=1.5)


# ------------------------------------------------------------------------------- tokenmap
def test_tokenmap_keeps_every_normalised_patch_in_grid_order() -> None:
    h, x = head("tokenmap"), hidden()
    normed = F.layer_norm(x[:, 1:], (D,), h.norm.weight, h.norm.bias)
    # token t of row r, column c sits at channel block (d, r, c) of the flattened map
    expected = normed.transpose(1, 2).reshape(2, D * 49)
    torch.testing.assert_close(h.features(x), expected)
    assert h.fc.in_features == 49 * D
    # the class token does not matter; moving one patch changes the answer
    x2 = x.clone()
    x2[:, 0] = 0
    torch.testing.assert_close(h(x2), h(x))
    swapped = x.clone()
    swapped[:, [1, 2]] = x[:, [2, 1]]
    assert not torch.allclose(h(swapped), h(x))


def test_tokenmap_pools_larger_maps_to_the_grid() -> None:
    h, x = head("tokenmap", grid=3), hidden()
    normed = F.layer_norm(x[:, 1:], (D,), h.norm.weight, h.norm.bias)
    grid = normed.transpose(1, 2).reshape(2, D, 7, 7)
    # 7 rows into 3: windows [0, 3), [2, 5), [4, 7)
    top_left = grid[:, :, 0:3, 0:3].mean((2, 3))
    torch.testing.assert_close(h.features(x).reshape(2, D, 3, 3)[:, :, 0, 0], top_left)
    # a map no larger than the grid is left as it is; rows and columns are pooled apart
    assert head("tokenmap", NOCLS, grid=5).fc.in_features == 16 * D
    assert head("tokenmap", HeadContext(D, 1, (3, 5), 5), grid=4).fc.in_features == 12 * D


@pytest.mark.parametrize("grid", [0, -2, 2.0, True])
def test_tokenmap_rejects_bad_grids(grid: Any) -> None:
    with pytest.raises(ConfigError, match="grid"):
        head("tokenmap", grid=grid)
