"""Loading backbone weights from real safetensors and torch files on disk."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from exitsearch.backbone import (
    Backbone,
    BackboneSpec,
    create_backbone,
    load_state_dict_file,
    load_weights,
)
from exitsearch.errors import CheckpointError

MODEL = "vit_tiny_patch16_224"


@pytest.fixture
def spec_for(tiny_overrides) -> Callable[..., BackboneSpec]:
    def make(path: Path, **extra) -> BackboneSpec:
        return BackboneSpec(MODEL, {**tiny_overrides, **extra}, checkpoint=str(path))

    return make


@pytest.fixture
def source(make_tiny) -> Backbone:
    """Weights to save: a tiny backbone with its own random initialisation."""
    return make_tiny(seed=42)


def _state(bb: Backbone) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in bb.model.state_dict().items()}


def test_safetensors_checkpoint(tmp_path, source, spec_for, make_tiny):
    path = tmp_path / "w.safetensors"
    save_file(_state(source), str(path))
    loaded = create_backbone(spec_for(path))
    assert loaded.weights_checksum() == source.weights_checksum()
    assert make_tiny(seed=0).weights_checksum() != source.weights_checksum()


@pytest.mark.parametrize("nesting", ["flat", "state_dict", "model", "module-prefix"])
def test_torch_checkpoint(tmp_path, source, spec_for, nesting):
    state = _state(source)
    if nesting == "module-prefix":  # saved from a DataParallel/DDP wrapper
        obj = {f"module.{k}": v for k, v in state.items()}
    elif nesting == "flat":
        obj = state
    else:
        obj = {nesting: state, "epoch": 7}
    path = tmp_path / "w.pth"
    torch.save(obj, path)
    assert set(load_state_dict_file(path)) == set(state)
    loaded = create_backbone(spec_for(path))
    assert loaded.weights_checksum() == source.weights_checksum()


def test_shape_mismatch_names_the_first_tensor(tmp_path, make_tiny, spec_for):
    wider = make_tiny(embed_dim=64)  # every tensor touching the width differs
    path = tmp_path / "wider.pth"
    torch.save(_state(wider), path)
    first = next(iter(wider.model.state_dict()))
    with pytest.raises(CheckpointError, match=re.escape(repr(first))) as info:
        create_backbone(spec_for(path))
    assert "(1, 1, 64)" in str(info.value) and "(1, 1, 32)" in str(info.value)


def test_shape_mismatch_in_the_head(tmp_path, make_tiny, spec_for):
    path = tmp_path / "five.safetensors"
    save_file(_state(make_tiny(num_classes=5)), str(path))
    with pytest.raises(CheckpointError, match=r"'head\.(weight|bias)'"):
        create_backbone(spec_for(path))


def test_missing_and_unexpected_keys(tmp_path, source, make_tiny):
    state = _state(source)
    del state["head.bias"]
    state["extra.weight"] = torch.zeros(2)
    path = tmp_path / "w.safetensors"
    save_file(state, str(path))
    with pytest.raises(CheckpointError, match=r"missing 'head\.bias'.*unexpected 'extra\.weight'"):
        load_weights(make_tiny().model, path)


def test_deeper_checkpoint_does_not_fit(tmp_path, make_tiny, spec_for):
    path = tmp_path / "deep.safetensors"
    save_file(_state(make_tiny(depth=3)), str(path))
    with pytest.raises(CheckpointError, match=r"unexpected 'blocks\.2\."):
        create_backbone(spec_for(path))


@pytest.mark.parametrize("suffix", [".safetensors", ".pth"])
def test_truncated_checkpoint(tmp_path, source, spec_for, suffix):
    path = tmp_path / f"w{suffix}"
    if suffix == ".safetensors":
        save_file(_state(source), str(path))
    else:
        torch.save(_state(source), path)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match=re.escape(str(path))) as info:
        create_backbone(spec_for(path))
    assert "\n" not in str(info.value)


def test_missing_checkpoint(tmp_path, spec_for):
    with pytest.raises(CheckpointError, match="not found"):
        create_backbone(spec_for(tmp_path / "none.safetensors"))


class _NotATensor:
    pass


def test_pickled_code_is_refused(tmp_path):
    path = tmp_path / "evil.pth"
    torch.save({"weight": _NotATensor()}, path)
    with pytest.raises(CheckpointError, match="not a readable torch checkpoint"):
        load_state_dict_file(path)


def test_file_without_tensors(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.zeros(2)], path)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_state_dict_file(path)
    path = tmp_path / "mixed.pth"
    torch.save({"a": torch.zeros(2), "step": 3}, path)
    with pytest.raises(CheckpointError, match="no state dict"):
        load_state_dict_file(path)
