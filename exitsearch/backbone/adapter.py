"""A timm Vision Transformer seen as a stack of blocks that exits can be attached to.

:class:`Backbone` is the plain ViT/DeiT family (one token sequence of one width through every
block); :class:`exitsearch.backbone.swin.SwinBackbone` is the hierarchical family, whose hidden
states change grid and width from stage to stage. Everything downstream asks a backbone for the
shape of its state after block m (:meth:`Backbone.state_grid`, :meth:`Backbone.state_dim`) instead
of assuming one.
"""

from __future__ import annotations

import hashlib

import torch
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from exitsearch.backbone.spec import BackboneSpec
from exitsearch.data.preprocess import Preprocess
from exitsearch.data.transforms import InputTransform

__all__ = ["Backbone"]


class Backbone(nn.Module):
    """Wraps a timm ``VisionTransformer`` and exposes what early exits need.

    Block locations are 1-based as in the papers: the hidden state "after block m" is
    ``run_blocks(embed(x), 0, m)``. Hidden states always hold every token, prefix tokens (class,
    distillation, registers) first, in timm's ``NLC`` layout.

    Example:
        >>> from exitsearch.backbone import create_backbone
        >>> bb = create_backbone("vit_tiny_patch16_224", img_size=32, patch_size=8, depth=4)
        >>> states = bb.hidden_states(torch.zeros(2, 3, 32, 32))
        >>> len(states), tuple(states[0].shape)
        (4, (2, 17, 192))
    """

    family = "vit"
    """The backbone family's name (``exitsearch backbone list`` groups models by it)."""

    supports_pausing = True
    """Whether PAUMER's token pausing applies: it needs global attention over one sequence."""

    def __init__(
        self,
        model: VisionTransformer,
        spec: BackboneSpec,
        preprocess: dict | None = None,
        record: dict | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        self.spec = spec
        # Overrides of timm's data config (a preset's, or what a checkpoint's training recorded)
        self.preprocess_overrides = dict(preprocess or {})
        # backbone.json written by `exitsearch backbone train` next to the checkpoint, if any
        self.record = record

    # ----------------------------------------------------------------- structure
    @property
    def depth(self) -> int:
        return len(self.model.blocks)

    @property
    def embed_dim(self) -> int:
        return int(self.model.embed_dim)

    @property
    def num_heads(self) -> int:
        return int(self.model.blocks[0].attn.num_heads)

    @property
    def num_prefix_tokens(self) -> int:
        return int(self.model.num_prefix_tokens)

    @property
    def has_class_token(self) -> bool:
        return bool(self.model.has_class_token)

    @property
    def grid_size(self) -> tuple[int, int]:
        gh, gw = self.model.patch_embed.grid_size
        return int(gh), int(gw)

    @property
    def num_patches(self) -> int:
        gh, gw = self.grid_size
        return gh * gw

    @property
    def num_tokens(self) -> int:
        return self.num_prefix_tokens + self.num_patches

    @property
    def num_classes(self) -> int:
        return int(self.model.num_classes)

    @property
    def img_size(self) -> tuple[int, int]:
        size = self.model.patch_embed.img_size
        return int(size[0]), int(size[1])

    @property
    def in_chans(self) -> int:
        return int(self.model.patch_embed.proj.in_channels)

    # -------------------------------------------------------- state after block m
    def _check_location(self, location: int) -> None:
        if not 0 <= location <= self.depth:
            raise IndexError(f"`0 <= location <= {self.depth}` must hold, got {location=}")

    def state_grid(self, location: int) -> tuple[int, int]:
        """Patch grid (rows, cols) of the hidden state after block ``location`` (0: embedding)."""
        self._check_location(location)
        return self.grid_size

    def state_dim(self, location: int) -> int:
        """Width of the hidden state after block ``location`` (0: the embedding)."""
        self._check_location(location)
        return self.embed_dim

    def state_heads(self, location: int) -> int:
        """Attention heads of the block that produced the state after ``location`` (0: block 1's)."""
        self._check_location(location)
        return self.num_heads

    def state_tokens(self, location: int) -> int:
        """Tokens of the hidden state after block ``location``, prefix tokens included."""
        rows, cols = self.state_grid(location)
        return self.num_prefix_tokens + rows * cols

    def state_example(
        self, location: int, batch: int = 1, device: torch.device | str | None = None
    ) -> torch.Tensor:
        """Zeros shaped like the hidden state after block ``location``: (batch, tokens, dim)."""
        return torch.zeros(
            batch, self.state_tokens(location), self.state_dim(location), device=device
        )

    def attention_span(self, location: int) -> int:
        """Keys each query of block ``location + 1`` attends to (all tokens for global attention)."""
        return self.state_tokens(location)

    @property
    def uniform_states(self) -> bool:
        """Whether every block's hidden state has the embedding's shape (plain ViT: yes)."""
        return True

    def stem_module_names(self) -> list[str]:
        """Qualified names (under this module) of what runs before block 1."""
        return ["model.patch_embed", "model.norm_pre"]

    def block_module_names(self, index: int) -> list[str]:
        """Qualified names of what block ``index`` (1-based) runs, in order."""
        if not 1 <= index <= self.depth:
            raise IndexError(f"`1 <= index <= {self.depth}` must hold, but got {index=}")
        return [f"model.blocks.{index - 1}"]

    def block_modules(self, start: int, stop: int) -> list[nn.Module]:
        """The modules blocks ``[start, stop)`` (0-based, as :meth:`run_blocks`) run."""
        return [
            self.get_submodule(n)
            for i in range(start, stop)
            for n in self.block_module_names(i + 1)
        ]

    def preprocess(self) -> Preprocess:
        """The model's own preprocessing: timm's data config, fitted to its size and channels."""
        return Preprocess.for_model(self.model, **self.preprocess_overrides)

    def input_transform(self) -> InputTransform:
        """How uint8 batches at the model's size become its input (channels, mean/std)."""
        return self.preprocess().input_transform()

    # ------------------------------------------------------------------- forward
    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patch embedding, prefix tokens and position embedding: the input of block 1."""
        m = self.model
        x = m.patch_embed(x)
        x = m._pos_embed(x)
        x = m.patch_drop(x)
        return m.norm_pre(x)

    def run_blocks(self, tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        """Run blocks ``[start, stop)`` (0-based, half-open) on ``tokens``.

        ``run_blocks(t, 0, m)`` turns the embedding into the hidden state after block m;
        ``run_blocks(h_m, m, n)`` continues from there to the state after block n.
        """
        if not 0 <= start <= stop <= self.depth:
            raise IndexError(
                f"`0 <= start <= stop <= {self.depth}` must hold, got ({start=}, {stop=})"
            )
        blocks = self.model.blocks
        for i in range(start, stop):  # by index: slicing a Sequential builds a new module
            tokens = blocks[i](tokens)
        return tokens

    def hidden_states(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """The hidden states after blocks ``1..upto`` (default: all), from one forward pass."""
        upto = self.depth if upto is None else upto
        tokens = self.embed(x)
        out = []
        for i in range(upto):
            tokens = self.run_blocks(tokens, i, i + 1)
            out.append(tokens)
        return out

    def final_head(self, tokens: torch.Tensor) -> torch.Tensor:
        """The backbone's own exit: final norm, pooling and classifier on the last hidden state."""
        return self.model.forward_head(self.model.norm(tokens))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.final_head(self.run_blocks(self.embed(x), 0, self.depth))

    # ------------------------------------------------------------------ identity
    def weights_checksum(self) -> str:
        """SHA-256 over every parameter and buffer, by name: identifies the weights exactly."""
        h = hashlib.sha256()
        for name, tensor in sorted(self.model.state_dict().items()):
            t = tensor.detach().cpu().contiguous()
            h.update(f"{name}:{t.dtype}:{tuple(t.shape)}".encode())
            if t.numel():
                h.update(t.view(torch.uint8).numpy().tobytes())
        return h.hexdigest()

    def describe(self) -> dict[str, object]:
        return {
            "model": self.spec.model,
            "family": self.family,
            "depth": self.depth,
            "embed_dim": self.embed_dim,
            "num_heads": self.num_heads,
            "num_prefix_tokens": self.num_prefix_tokens,
            "grid_size": list(self.grid_size),
            "img_size": list(self.img_size),
            "in_chans": self.in_chans,
            "num_classes": self.num_classes,
            "class_token": self.has_class_token,
            "global_pool": self.model.global_pool,
        }
