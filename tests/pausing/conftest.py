"""Fixtures of the pausing tests: one torch thread, tiny real ViTs, real Fashion-MNIST."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch

from exitsearch.backbone import Backbone, create_backbone
from exitsearch.data import DataSpec, load_splits
from exitsearch.data.splits import DataSplits

# 28 px images in 4 px patches: a 7 x 7 grid of 49 patch tokens plus the class token, the
# geometry of the embedded default, at width 32 and depth 6.
PAUSE_TINY: dict[str, Any] = {
    "img_size": 28,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 6,
    "num_heads": 2,
}


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
