"""Device and precision: one place resolves them; CUDA checks run only where there is a GPU."""

from __future__ import annotations

import pytest
import torch

from exitsearch.device import resolve_device
from exitsearch.errors import ConfigError

cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cpu_is_float32_without_pinning():
    rt = resolve_device("cpu")
    assert rt.device.type == "cpu" and rt.amp_dtype is None and not rt.pin_memory
    assert not rt.grad_scaler().is_enabled()
    with rt.autocast():
        assert (torch.ones(2, 2) @ torch.ones(2, 2)).dtype == torch.float32


def test_auto_takes_what_the_machine_has():
    rt = resolve_device("auto")
    assert rt.device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device(rt) is rt


@pytest.mark.parametrize("bad", ["gpu", "tpu:0", "cuda:x", ""])
def test_unknown_devices_are_one_line_errors(bad):
    with pytest.raises(ConfigError, match="device"):
        resolve_device(bad)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_cuda_without_a_gpu_says_so():
    with pytest.raises(ConfigError, match="no usable CUDA GPU"):
        resolve_device("cuda")


@cuda
def test_cuda_uses_mixed_precision_and_pinned_copies():
    rt = resolve_device("cuda")
    assert rt.amp_dtype in (torch.bfloat16, torch.float16) and rt.pin_memory
    x = rt.to(torch.ones(4, 4).pin_memory())
    assert x.device.type == "cuda"
    with rt.autocast():
        assert (x @ x).dtype == rt.amp_dtype


def test_cpu_keeps_tensors_and_weights_contiguous():
    rt = resolve_device("cpu")
    conv = torch.nn.Conv2d(3, 8, 4, stride=4)
    rt.place(conv)
    assert not rt.channels_last
    assert rt.to(torch.zeros(2, 3, 8, 8)).is_contiguous()
    assert conv.weight.is_contiguous()


@cuda
def test_cuda_puts_images_and_convolutions_channels_last():
    rt = resolve_device("cuda")
    conv = torch.nn.Conv2d(3, 8, 4, stride=4)
    rt.place(conv)
    x = rt.to(torch.zeros(2, 3, 8, 8), torch.zeros(2, dtype=torch.long))
    assert x[0].is_contiguous(memory_format=torch.channels_last)
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    with rt.autocast():
        assert conv(x[0]).shape == (2, 8, 2, 2)


@cuda
def test_heads_trained_on_cuda_match_the_cpu_closely(tiny_splits, make_tiny, tmp_path):
    from exitsearch.heads import HeadSpec
    from exitsearch.training.head_training import HeadTrainConfig, train_heads

    specs = [HeadSpec("linear", 1), HeadSpec("mlp", 2)]
    cfg = HeadTrainConfig(epochs=2, batch_size=64)
    cpu = train_heads(make_tiny(), tiny_splits, specs, cfg, tmp_path / "cpu", device="cpu")
    gpu = train_heads(make_tiny(), tiny_splits, specs, cfg, tmp_path / "gpu", device="cuda")
    for a, b in zip(cpu.statuses, gpu.statuses, strict=True):
        assert abs(a.best_acc - b.best_acc) < 0.05
