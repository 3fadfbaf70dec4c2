"""Fixtures of the fine-tuning tests: the exported bundles of ``finetune_world``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from finetune_world import FinetuneWorld, build_world


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def ft_world(tmp_path_factory: pytest.TempPathFactory) -> FinetuneWorld:
    if not Path("/usr/share/datasets/fashion-mnist").is_dir():
        pytest.skip("Fashion-MNIST missing (install dataset-fashion-mnist)")
    return build_world(tmp_path_factory.mktemp("finetune-world"))
