"""``lph``: LGViT's local perception head (LGViT, §3.3, eqs. 1-2)."""

from __future__ import annotations

import torch
from torch import nn

from exitsearch.heads.base import ExitHead, HeadContext, split_tokens, tokens_to_grid
from exitsearch.heads.common import NormLinearClassifier, check, check_int
from exitsearch.heads.registry import register_head

__all__ = ["LocalPerceptionHead", "conv_gelu_bn"]


def conv_gelu_bn(
    in_channels: int, out_channels: int, kernel_size: int = 1, groups: int = 1
) -> nn.Sequential:
    """Convolution, GELU, BatchNorm, in the order LGViT gives ("GELU and BN are employed after
    each convolution") and its released code builds; "same" padding. The convolution keeps its
    bias: a GELU, not a BatchNorm, follows it."""
    return nn.Sequential(
        nn.Conv2d(
            in_channels,
            out_channels,
            kernel_size,
            padding=kernel_size // 2,
            groups=groups,
        ),
        nn.GELU(),
        nn.BatchNorm2d(out_channels),
    )


@register_head("lph")
class LocalPerceptionHead(ExitHead):
    """LPH (LGViT, eq. 2): ``Pool(Conv1x1(PDConv(Conv1x1(X_en), m))) + X_CLS``.

    The patch tokens go back on their grid; a 1x1 convolution expands D to ``expansion * D``;
    the position-wise depth-wise convolution (PDConv, eq. 1) is a ``k x k`` depth-wise
    convolution, or the identity when ``k = 0``; a 1x1 convolution projects back to D. Every
    convolution is followed by GELU, then BatchNorm ("GELU and BN are employed after each
    convolution"). Global average pooling, plus the class token (skipped when the backbone has
    none), gives the features; the classifier is LayerNorm and one linear layer.

    ``k`` is fixed per head; :class:`~exitsearch.heads.mappings.KernelMapping` gives the ``k``
    of LGViT's ``f(m)`` for a location. Cost on N patches: ``2·e·ND² + e·NDk²`` for the
    convolutions (eq. 7 with ``e = 1``), plus BatchNorm.

    Args:
        ctx: the backbone the head is attached to.
        k: PDConv kernel size: 0 (bypass) or a positive odd integer.
        expansion: ``e``, the width of the expanded features over D; 1 by default, the width
            of eq. 7's cost ``2ND² + NDk²``.

    Raises:
        ConfigError: ``k`` is neither 0 nor a positive odd integer, or ``expansion < 1``.
    """

    def __init__(self, ctx: HeadContext, k: int = 3, expansion: int = 1) -> None:
        super().__init__(ctx)
        check_int("k", k)
        check(k == 0 or (k > 0 and k % 2 == 1), "k == 0 or k is a positive odd integer", k=k)
        check_int("expansion", expansion)
        check(expansion >= 1, "expansion >= 1", expansion=expansion)
        d, hidden = ctx.embed_dim, expansion * ctx.embed_dim
        self.k = k
        self.expand = conv_gelu_bn(d, hidden)
        self.pdconv = conv_gelu_bn(hidden, hidden, k, groups=hidden) if k > 0 else nn.Identity()
        self.project = conv_gelu_bn(hidden, d)
        self.classifier = NormLinearClassifier(d, ctx.num_classes)
        # Depth-wise convolutions run several times faster on CPU in channels-last layout.
        self.to(memory_format=torch.channels_last)

    def _projected(self, hidden: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor]:
        """``(class token, projected grid (B, D, rows, cols))``: eq. 2 before the pooling."""
        cls_tok, patches = split_tokens(hidden, self.ctx)
        grid = tokens_to_grid(patches, self.ctx).contiguous(memory_format=torch.channels_last)
        return cls_tok, self.project(self.pdconv(self.expand(grid)))

    def features(self, hidden: torch.Tensor) -> torch.Tensor:
        cls_tok, projected = self._projected(hidden)
        pooled = projected.mean((2, 3))
        return pooled if cls_tok is None else pooled + cls_tok

    def feature_map(self, hidden: torch.Tensor) -> torch.Tensor:
        """LGViT's feature map ``F_m`` of this head (LGViT, eqs. 9-10): the output of the
        projecting 1x1 convolution before pooling, as tokens (B, N, D) in grid order."""
        return self.forward_with_feature_map(hidden)[1]

    def forward_with_feature_map(self, hidden: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(logits, feature map)`` from one pass; the logits equal ``forward(hidden)``."""
        cls_tok, projected = self._projected(hidden)
        pooled = projected.mean((2, 3))
        logits = self.classify(pooled if cls_tok is None else pooled + cls_tok)
        return logits, projected.flatten(2).transpose(1, 2)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.classifier(features)
