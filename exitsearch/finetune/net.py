"""The configuration being fine-tuned: backbone, its exit heads and strategy-owned modules.

A :class:`MultiExitNet` holds what a bundle holds (the backbone with its final classifier, one
head per early exit of the :class:`~exitsearch.core.config.ExitConfig`) plus ``aux``, the
modules a strategy needs only while training (LGViT's aligning modules). It names the parts
the training strategies of Multi-Exit ViT and LGViT freeze and train: the stem (patch embedding,
prefix tokens, position embedding), the blocks, the final classifier (final norm, pooling and
classifier), and each exit head. It reaches the model through the backbone's own API
(:meth:`~exitsearch.backbone.Backbone.embed`, ``run_blocks``, ``final_head``), never hooks.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from exitsearch.backbone import Backbone
from exitsearch.core.config import ExitConfig
from exitsearch.data import ArrayDataset, iterate_batches
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext
from exitsearch.heads.bank import HeadBank

__all__ = ["MultiExitNet"]

# Submodules of a timm VisionTransformer that make up its final classifier: the final norm,
# the attention pooling (when configured), the norm after pooling, and the classifier.
_FINAL = ("norm", "attn_pool", "fc_norm", "head_drop", "head")


class MultiExitNet(nn.Module):
    """A backbone with the early exits of ``config``, trainable as one module.

    Args:
        backbone: the backbone, final classifier included.
        bank: one head per early exit, ``bank.specs == config.exits`` (exit order).
        config: the exit configuration.

    Raises:
        ConfigError: the heads do not match the exits, or an exit lies beyond the backbone.
    """

    def __init__(self, backbone: Backbone, bank: HeadBank, config: ExitConfig) -> None:
        super().__init__()
        if [s.key for s in bank.specs] != [s.key for s in config.exits]:
            raise ConfigError(
                f"heads {[s.key for s in bank.specs]} do not match the exits "
                f"{[s.key for s in config.exits]}"
            )
        beyond = [s.key for s in config.exits if s.location > backbone.depth]
        if beyond:
            raise ConfigError(
                f"exit(s) {', '.join(beyond)} lie beyond the {backbone.depth}-block backbone"
            )
        self.backbone = backbone
        self.bank = bank
        self.config = config
        self.aux = nn.ModuleDict()

    @classmethod
    def from_heads(
        cls, backbone: Backbone, heads: Sequence[nn.Module], config: ExitConfig
    ) -> MultiExitNet:
        """Copy ``heads`` (one per exit, exit order, e.g. a loaded bundle's) into a new bank."""
        bank = HeadBank(list(config.exits), HeadContext.from_backbone(backbone))
        for mine, theirs in zip(bank.heads, heads, strict=True):
            mine.load_state_dict(theirs.state_dict())
        return cls(backbone, bank, config)

    # ------------------------------------------------------------------ structure
    @property
    def heads(self) -> nn.ModuleList:
        return self.bank.heads

    @property
    def num_exits(self) -> int:
        return len(self.config.exits)

    @property
    def locations(self) -> tuple[int, ...]:
        return self.config.locations

    @property
    def depth(self) -> int:
        return self.backbone.depth

    def final_modules(self) -> list[nn.Module]:
        """The final classifier: final norm, attention pooling, norm after pooling, classifier."""
        model = self.backbone.model
        return [m for name in _FINAL if isinstance(m := getattr(model, name, None), nn.Module)]

    def final_parameters(self) -> list[nn.Parameter]:
        return [p for m in self.final_modules() for p in m.parameters()]

    def block_parameters(self, start: int, stop: int) -> list[nn.Parameter]:
        """Parameters of blocks ``[start, stop)`` (0-based, half-open, as ``run_blocks``)."""
        return [p for m in self.backbone.block_modules(start, stop) for p in m.parameters()]

    def stem_parameters(self) -> list[nn.Parameter]:
        """Everything of the backbone before block 1: patch embedding, prefix tokens, position
        embedding, pre-norm (whatever is neither a block nor the final classifier)."""
        inner = {id(p) for p in self.block_parameters(0, self.depth)}
        inner |= {id(p) for p in self.final_parameters()}
        return [p for p in self.backbone.parameters() if id(p) not in inner]

    def body_parameters(self) -> list[nn.Parameter]:
        """The backbone without its final classifier: stem and blocks."""
        return self.stem_parameters() + self.block_parameters(0, self.depth)

    def head_parameters(self, index: int | None = None) -> list[nn.Parameter]:
        """Parameters of exit head ``index`` (all heads when None)."""
        heads = self.heads if index is None else [self.heads[index]]
        return [p for h in heads for p in h.parameters()]

    # -------------------------------------------------------------------- forward
    def hidden_states(self, x: torch.Tensor, upto: int | None = None) -> list[torch.Tensor]:
        """Hidden states after blocks ``1..upto`` (default: all) of transformed input ``x``."""
        return self.backbone.hidden_states(x, upto=upto)

    def exit_logits(self, states: Sequence[torch.Tensor], k: int) -> torch.Tensor:
        """Logits of early exit ``k`` from the hidden states of :meth:`hidden_states`."""
        return self.heads[k](states[self.config.exits[k].location - 1])

    def final_logits(self, states: Sequence[torch.Tensor]) -> torch.Tensor:
        """Logits of the backbone's own final exit; ``states`` must reach the last block."""
        if len(states) < self.depth:
            raise ValueError(f"the final exit needs all {self.depth} hidden states")
        return self.backbone.final_head(states[self.depth - 1])

    @torch.no_grad()
    def accuracies(self, data: ArrayDataset, batch_size: int = 500) -> list[float]:
        """Top-1 accuracy of every early exit, then of the final exit, on ``data``."""
        was_training = self.training
        self.eval()
        transform = self.backbone.input_transform()
        correct = torch.zeros(self.num_exits + 1, dtype=torch.int64)
        device = next(self.parameters()).device
        for _, x, y in iterate_batches(data, batch_size):
            x, y = x.to(device), y.to(device)
            states = self.hidden_states(transform(x))
            for k in range(self.num_exits):
                correct[k] += int((self.exit_logits(states, k).argmax(-1) == y).sum())
            correct[-1] += int((self.final_logits(states).argmax(-1) == y).sum())
        self.train(was_training)
        return [float(c) / max(len(data), 1) for c in correct]
