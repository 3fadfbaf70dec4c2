"""Fixtures of the pausing tests: one torch thread, tiny real ViTs, real Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from pause_world import PAUSE_TINY

from exitsearch.backbone import Backbone, create_backbone
from exitsearch.data import DataSpec, load_splits
from exitsearch.data.splits import DataSplits


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """The machine is shared with long trainings: tiny tensors gain nothing from more threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def make_pause_tiny() -> Callable[..., Backbone]:
    """A fresh tiny 6-block ViT with 49 patches; ``seed`` fixes its initialisation."""

    def make(seed: int = 0, model: str = "vit_tiny_patch16_224", **extra: Any) -> Backbone:
        torch.manual_seed(seed)
        return create_backbone(model, **{**PAUSE_TINY, **extra})

    return make


@pytest.fixture(scope="session")
def pause_splits(fmnist) -> DataSplits:
    """Real Fashion-MNIST cut to 96 samples per split."""
    return load_splits(DataSpec(limit=96))


@pytest.fixture
def images() -> torch.Tensor:
    """A small batch of model inputs."""
    return torch.randn(3, 1, 28, 28, generator=torch.Generator().manual_seed(7))
