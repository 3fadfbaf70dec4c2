"""Semantic segmentation derived from Fashion-MNIST, and a Segmenter mask-transformer decoder.

**Labels.** Every Fashion-MNIST image shows one garment on a black background, so a pixel is
labelled ``class + 1`` (1..10) where the garment is and ``0`` (background) elsewhere: 11 classes.
A pixel belongs to the garment when

1. its intensity is ``>= 8`` (of 255), except that
2. a pixel whose in-image 4-neighbours all disagree with it takes their side: an isolated
   garment pixel becomes background, a one-pixel hole becomes garment.

Why these values (measured on the first 3,000 training images; reproducible with
:func:`garment_mask`): the intensity histogram falls steeply from 1 to about 8 (78,608 pixels of
value 1 against 7,863 of value 10 in 10,000 images) and is flat above, so 1..7 is the
anti-aliasing halo around garments, while values from 8 up occur inside garments.
Light-coloured garments are dark after the dataset's inversion: interiors of 6..30 are common
(training image 8,184, a shirt, keeps 396 garment pixels at 8 but 60 at 32), so a threshold such
as 32 breaks them up (10 % of images then have more than one garment region); thresholds of 4 or
less keep the halo (35 % of images with stray regions even after rule 2). At 8, rule 2 leaves
5 % of images with more than one region (sneakers 11 %, sandals 8 %, whose parts can really be
separate). Larger holes are not filled on purpose: 62 % of the enclosed
below-threshold pixels lie in bags (40 %) and sandals (23 %), i.e. handle openings and gaps
between straps, which are background. Garments cover 47 % of the pixels.

**Patch labels** for the auxiliary decoder: the majority pixel label of each patch (4x4 pixels
for the default backbone); a tie (8 of 16) goes to the lower label, background.

**Decoder.** :class:`MaskTransformer` follows Segmenter (Strudel et al. 2021, the architecture
PAUMER builds on): learnable class embeddings are processed jointly with the patch tokens by a
few transformer layers, masks are the scalar products of L2-normalised patch features and
L2-normalised class features, normalised per patch, and upsampled bilinearly to the image size.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from timm.models.vision_transformer import Block
from torch import nn

__all__ = [
    "BACKGROUND",
    "GARMENT_THRESHOLD",
    "NUM_SEGMENTATION_CLASSES",
    "MaskTransformer",
    "garment_mask",
    "patch_labels",
    "segmentation_labels",
]

GARMENT_THRESHOLD = 8
BACKGROUND = 0
NUM_SEGMENTATION_CLASSES = 11  # background + the 10 Fashion-MNIST classes

_SHIFTS = ((1, 0), (-1, 0), (0, 1), (0, -1))


def garment_mask(images: np.ndarray, threshold: int = GARMENT_THRESHOLD) -> np.ndarray:
    """Boolean ``(N, H, W)`` garment masks of uint8 images ``(N, H, W)`` or ``(N, 1, H, W)``:
    the two rules of the module docstring (threshold, then one-pixel specks flipped)."""
    x = np.asarray(images)
    if x.ndim == 4:
        if x.shape[1] != 1:
            raise ValueError(f"expected single-channel images, got shape {x.shape}")
        x = x[:, 0]
    if x.ndim != 3:
        raise ValueError(f"expected images of shape (N, H, W) or (N, 1, H, W), got {x.shape}")
    fg = x >= threshold
    _, h, w = fg.shape
    agree = np.zeros(fg.shape, dtype=np.int8)  # in-image 4-neighbours with the same value
    for dr, dc in _SHIFTS:
        dst = (slice(None), slice(max(-dr, 0), h - max(dr, 0)), slice(max(-dc, 0), w - max(dc, 0)))
        src = (slice(None), slice(max(dr, 0), h - max(-dr, 0)), slice(max(dc, 0), w - max(-dc, 0)))
        agree[dst] += fg[src] == fg[dst]
    return fg ^ (agree == 0)


def segmentation_labels(images: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Pixel labels ``(N, H, W)`` uint8: ``label + 1`` on the garment, 0 (background) elsewhere."""
    mask = garment_mask(images)
    y = np.asarray(labels, dtype=np.int64).reshape(-1, 1, 1)
    if len(y) != len(mask):
        raise ValueError(f"{len(mask)} images but {len(y)} labels")
    return np.where(mask, y + 1, BACKGROUND).astype(np.uint8)


def patch_labels(pixels: torch.Tensor, patch_size: int, num_classes: int) -> torch.Tensor:
    """Majority label of each ``patch_size`` square: ``(B, H, W)`` -> ``(B, N)`` in row-major
    patch order (the order of ViT patch tokens); ties go to the lower label."""
    b, h, w = pixels.shape
    if h % patch_size or w % patch_size:
        raise ValueError(f"a {h}x{w} label map is not a whole number of {patch_size}-px patches")
    gh, gw = h // patch_size, w // patch_size
    blocks = pixels.long().reshape(b, gh, patch_size, gw, patch_size).permute(0, 1, 3, 2, 4)
    votes = F.one_hot(blocks.reshape(b, gh * gw, -1), num_classes).sum(2)
    return votes.argmax(-1)  # the first maximum: the lowest label among tied ones


class MaskTransformer(nn.Module):
    """Segmenter's mask transformer on patch tokens ``(B, N, D)`` -> masks ``(B, C, H, W)``.

    Args:
        embed_dim: width of the encoder's tokens.
        num_classes: segmentation classes ``C`` (one learnable class embedding each).
        grid_size: patch grid (rows, cols) of the encoder.
        out_size: image size the masks are upsampled to.
        depth: transformer layers processing patches and class embeddings jointly.
        num_heads: attention heads of those layers.
        d_model: decoder width (default ``embed_dim``).
    """

    def __init__(
        self,
        embed_dim: int,
        num_classes: int,
        grid_size: tuple[int, int],
        out_size: tuple[int, int],
        depth: int = 2,
        num_heads: int = 3,
        d_model: int | None = None,
        mlp_ratio: float = 4.0,
    ) -> None:
        super().__init__()
        d = d_model or embed_dim
        self.num_classes = num_classes
        self.grid_size = (int(grid_size[0]), int(grid_size[1]))
        self.out_size = (int(out_size[0]), int(out_size[1]))
        self.proj_dec = nn.Linear(embed_dim, d)
        self.cls_emb = nn.Parameter(torch.randn(1, num_classes, d) * 0.02)
        self.blocks = nn.Sequential(
            *(Block(d, num_heads, mlp_ratio, qkv_bias=True) for _ in range(depth))
        )
        self.decoder_norm = nn.LayerNorm(d)
        self.proj_patch = nn.Parameter(d**-0.5 * torch.randn(d, d))
        self.proj_classes = nn.Parameter(d**-0.5 * torch.randn(d, d))
        self.mask_norm = nn.LayerNorm(num_classes)
        self.apply(_init_weights)

    def forward(self, patches: torch.Tensor) -> torch.Tensor:
        b, n, _ = patches.shape
        gh, gw = self.grid_size
        if n != gh * gw:
            raise ValueError(f"expected {gh}x{gw}={gh * gw} patch tokens, got {n}")
        c = self.num_classes
        x = torch.cat([self.proj_dec(patches), self.cls_emb.expand(b, -1, -1)], dim=1)
        x = self.decoder_norm(self.blocks(x))
        feats, classes = x[:, :-c] @ self.proj_patch, x[:, -c:] @ self.proj_classes
        feats = feats / feats.norm(dim=-1, keepdim=True)
        classes = classes / classes.norm(dim=-1, keepdim=True)
        masks = self.mask_norm(feats @ classes.transpose(1, 2))  # (B, N, C)
        masks = masks.transpose(1, 2).reshape(b, c, gh, gw)
        return F.interpolate(masks, size=self.out_size, mode="bilinear", align_corners=False)


def _init_weights(m: nn.Module) -> None:
    # Segmenter's initialisation: truncated normal linear weights, zero biases, unit LayerNorms.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
