"""A bank of exit heads: many candidate heads held together, saved as one safetensors file."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exitsearch._io import derive_seed, load_safetensors, save_safetensors
from exitsearch.errors import CacheError
from exitsearch.heads.base import ExitHead, HeadContext, HeadSpec
from exitsearch.heads.registry import create_head

__all__ = ["HeadBank"]


class HeadBank(nn.Module):
    """Heads for a list of :class:`HeadSpec`, in that order (``heads[i]`` serves ``specs[i]``)."""

    def __init__(
        self, specs: Sequence[HeadSpec], ctx: HeadContext, seed: int | None = None
    ) -> None:
        """With ``seed``, every head is initialised from a seed of its own (derived from ``seed``
        and its key), so a head's weights do not depend on which other heads share the bank."""
        super().__init__()
        keys = [s.key for s in specs]
        if len(set(keys)) != len(keys):
            dup = next(k for k in keys if keys.count(k) > 1)
            raise ValueError(f"head {dup} is listed twice")
        self.specs = list(specs)
        self.ctx = ctx
        self.heads = nn.ModuleList(_create(s, ctx, seed) for s in specs)

    def __len__(self) -> int:
        return len(self.specs)

    def __iter__(self) -> Iterator[tuple[HeadSpec, ExitHead]]:
        return iter(zip(self.specs, self.heads, strict=True))  # type: ignore[arg-type]

    def index(self, key: str) -> int:
        for i, s in enumerate(self.specs):
            if s.key == key:
                return i
        raise KeyError(key)

    def head(self, key: str) -> ExitHead:
        return self.heads[self.index(key)]  # type: ignore[return-value]

    @property
    def max_location(self) -> int:
        return max(s.location for s in self.specs)

    def save(self, path: str | Path, metadata: dict[str, str] | None = None) -> None:
        save_safetensors(path, self.state_dict(), metadata)

    def load(self, path: str | Path) -> None:
        state = load_safetensors(path)
        try:
            self.load_state_dict(state, strict=True)
        except RuntimeError as exc:
            raise CacheError(
                f"{path}: head weights do not fit their specs ({str(exc).splitlines()[0]})"
            ) from None

    def subset(self, keys: Sequence[str]) -> HeadBank:
        """A bank of the heads named by ``keys`` sharing these heads' weights."""
        bank = HeadBank.__new__(HeadBank)
        nn.Module.__init__(bank)
        idx = [self.index(k) for k in keys]
        bank.specs = [self.specs[i] for i in idx]
        bank.ctx = self.ctx
        bank.heads = nn.ModuleList(self.heads[i] for i in idx)
        return bank

    def describe(self) -> list[dict[str, Any]]:
        return [s.to_dict() | {"key": s.key} for s in self.specs]


def _create(spec: HeadSpec, ctx: HeadContext, seed: int | None) -> ExitHead:
    if seed is None:
        return create_head(spec, ctx)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(derive_seed(seed, "init", spec.key))
        return create_head(spec, ctx)


def head_parameters(head: nn.Module) -> list[torch.nn.Parameter]:
    return [p for p in head.parameters() if p.requires_grad]
