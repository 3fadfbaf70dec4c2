"""A timm Swin Transformer seen as one stack of blocks that exits can be attached to.

Swin (Liu et al., 2021) runs its blocks in stages: windowed self-attention with shifted windows
on a patch grid, and between stages a patch merging that halves the grid and doubles the width.
Here the stages' blocks are numbered 1..L in order, as LGViT numbers Swin's exits; the patch
merging in front of a stage belongs to that stage's first block, so the hidden state after block
m is what the stage holding m has computed through m. Hidden states are token sequences (B, H*W,
C) in row-major order of the stage's grid, without prefix tokens, so heads see them as they see a
ViT's (LGViT replaces the class token by the pooled encoder output on Swin; heads pool patches
when there is no class token).
"""

from __future__ import annotations

import torch
from timm.models.swin_transformer import SwinTransformer
from torch import nn

from exitsearch.backbone.adapter import Backbone
from exitsearch.backbone.spec import BackboneSpec

__all__ = ["SwinBackbone"]


class SwinBackbone(Backbone):
    """Wraps a timm ``SwinTransformer``; see the module docstring for the block numbering.

    Example:
        >>> from exitsearch.backbone import create_backbone
        >>> bb = create_backbone("swin_tiny_patch4_window7_224", img_size=28, patch_size=2,
        ...                      embed_dim=16, depths=(2, 2), num_heads=(1, 2), window_size=7)
        >>> [tuple(s.shape) for s in bb.hidden_states(torch.zeros(2, 3, 28, 28))]
        [(2, 196, 16), (2, 196, 16), (2, 49, 32), (2, 49, 32)]
    """

    family = "swin"
    supports_pausing = False

    def __init__(
        self,
        model: SwinTransformer,
        spec: BackboneSpec,
        preprocess: dict | None = None,
        record: dict | None = None,
    ) -> None:
        super().__init__(model, spec, preprocess, record)  # type: ignore[arg-type]
        # (stage, block within the stage) of blocks 1..L
        self._where = [
            (s, j) for s, stage in enumerate(model.layers) for j in range(len(stage.blocks))
        ]

    def _block(self, index: int) -> nn.Module:
        s, j = self._where[index - 1]
        return self.model.layers[s].blocks[j]

    # ----------------------------------------------------------------- structure
    @property
    def depth(self) -> int:
        return len(self._where)

    @property
    def depths(self) -> tuple[int, ...]:
        return tuple(len(stage.blocks) for stage in self.model.layers)

    @property
    def embed_dim(self) -> int:
        return self.state_dim(0)

    @property
    def num_heads(self) -> int:
        return self.state_heads(0)

    @property
    def num_prefix_tokens(self) -> int:
        return 0

    @property
    def has_class_token(self) -> bool:
        return False

    @property
    def uniform_states(self) -> bool:
        return len(self.model.layers) == 1

    def state_grid(self, location: int) -> tuple[int, int]:
        self._check_location(location)
        if location == 0:
            return self.grid_size
        rows, cols = self._block(location).input_resolution
        return int(rows), int(cols)

    def state_dim(self, location: int) -> int:
        self._check_location(location)
        return int(self._block(max(location, 1)).norm1.normalized_shape[0])

    def state_heads(self, location: int) -> int:
        self._check_location(location)
        return int(self._block(max(location, 1)).attn.num_heads)

    def window_size(self, index: int) -> tuple[int, int]:
        """Attention window (rows, cols) of block ``index`` (1-based)."""
        ws = self._block(index).window_size
        return int(ws[0]), int(ws[1])

    def attention_span(self, location: int) -> int:
        rows, cols = self.window_size(min(location + 1, self.depth))
        return rows * cols

    def stem_module_names(self) -> list[str]:
        return ["model.patch_embed"]

    def block_module_names(self, index: int) -> list[str]:
        if not 1 <= index <= self.depth:
            raise IndexError(f"`1 <= index <= {self.depth}` must hold, but got {index=}")
        s, j = self._where[index - 1]
        names = [f"model.layers.{s}.blocks.{j}"]
        if j == 0 and not isinstance(self.model.layers[s].downsample, nn.Identity):
            names.insert(0, f"model.layers.{s}.downsample")
        return names

    # ------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding (with its norm): the input of block 1, as (B, H*W, C)."""
        return self.model.patch_embed(x).flatten(1, 2)

    def _grid(self, tokens: torch.Tensor, location: int) -> torch.Tensor:
        rows, cols = self.state_grid(location)
        b, n, c = tokens.shape
        if n != rows * cols:
            raise ValueError(f"the state after block {location} has {rows}x{cols} tokens, got {n}")
        return tokens.reshape(b, rows, cols, c)

    def run_blocks(self, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        if not 0 <= start <= stop <= self.depth:
            raise IndexError(
                f"`0 <= start <= stop <= {self.depth}` must hold, got ({start=}, {stop=})"
            )
        if start == stop:
            return tokens
        x = self._grid(tokens, start)
        for i in range(start, stop):
            s, j = self._where[i]
            stage = self.model.layers[s]
            if j == 0:
                x = stage.downsample(x)  # patch merging (identity in stage 1)
            x = stage.blocks[j](x)
        return x.flatten(1, 2)

    def final_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """Final norm, average pooling and classifier on the state after the last block."""
        return self.model.forward_head(self.model.norm(self._grid(tokens, self.depth)))

    def describe(self) -> dict[str, object]:
        d = super().describe()
        d.update(
            depths=list(self.depths),
            stage_dims=[self.state_dim(self._first(s)) for s in range(len(self.depths))],
            stage_grids=[list(self.state_grid(self._first(s))) for s in range(len(self.depths))],
            stage_heads=[self.state_heads(self._first(s)) for s in range(len(self.depths))],
            window_sizes=[list(self.window_size(self._first(s))) for s in range(len(self.depths))],
        )
        return d

    def _first(self, stage: int) -> int:
        """1-based index of the first block of ``stage``."""
        return sum(self.depths[:stage]) + 1
