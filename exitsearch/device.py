"""Where models run and in which precision: one place for device, autocast and data transfer.

``--device auto`` takes the first GPU when there is one. On CUDA, compute runs under autocast in
bfloat16 where the GPU supports it and in float16 with a gradient scaler otherwise; batches are
copied from pinned memory without blocking, and image batches and convolution weights (the patch
embedding, the CNN exit heads) take the channels-last layout that tensor cores read fastest. On
the CPU everything stays float32 and contiguous (the results the tests pin are float32 results).

Example:
    >>> from exitsearch.device import resolve_device
    >>> rt = resolve_device("cpu")
    >>> rt.device.type, rt.amp_dtype is None
    ('cpu', True)
"""

from __future__ import annotations

from contextlib import nullcontext
from dataclasses import dataclass
from typing import Any

import torch

from exitsearch.errors import ConfigError

__all__ = ["DEVICE_HELP", "Runtime", "environment", "machine_name", "resolve_device"]

DEVICE_HELP = "Where models run: auto (a GPU when there is one), cpu, cuda or cuda:N."


@dataclass(frozen=True)
class Runtime:
    """A device and the precision used on it.

    Attributes:
        device: the torch device.
        amp_dtype: autocast dtype (``bfloat16`` or ``float16`` on CUDA), ``None`` for float32.
    """

    device: torch.device
    amp_dtype: torch.dtype | None = None

    @property
    def is_cuda(self) -> bool:
        return self.device.type == "cuda"

    @property
    def pin_memory(self) -> bool:
        return self.is_cuda

    @property
    def name(self) -> str:
        if self.is_cuda:
            return f"{self.device} ({torch.cuda.get_device_name(self.device)})"
        return str(self.device)

    def autocast(self) -> Any:
        """Autocast context for forward passes (a no-op in float32)."""
        if self.amp_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def grad_scaler(self) -> torch.amp.GradScaler:
        """A gradient scaler, enabled only for float16 (bfloat16 and float32 need none)."""
        return torch.amp.GradScaler(self.device.type, enabled=self.amp_dtype is torch.float16)

    @property
    def channels_last(self) -> bool:
        """Whether image batches and convolution weights take the channels-last layout."""
        return self.is_cuda

    def to(self, *tensors: torch.Tensor) -> Any:
        """Move tensors to the device (non-blocking from pinned memory); image batches (4-D)
        in channels-last layout on CUDA."""
        moved = tuple(self._move(t) for t in tensors)
        return moved if len(moved) != 1 else moved[0]

    def _move(self, t: torch.Tensor) -> torch.Tensor:
        if self.channels_last and t.dim() == 4:
            return t.to(self.device, non_blocking=True, memory_format=torch.channels_last)
        return t.to(self.device, non_blocking=self.is_cuda)

    def place(self, *modules: torch.nn.Module) -> None:
        """Move ``modules`` to the device; on CUDA their convolution weights go channels-last."""
        for m in modules:
            m.to(self.device)
            if self.channels_last:
                m.to(memory_format=torch.channels_last)

    def describe(self) -> str:
        precision = {None: "float32", torch.bfloat16: "bfloat16", torch.float16: "float16"}
        return f"{self.name}, {precision[self.amp_dtype]}"


def resolve_device(
    spec: str | torch.device | Runtime | None = "auto", *, amp: bool = True
) -> Runtime:
    """Turn ``auto``/``cpu``/``cuda``/``cuda:N`` into a :class:`Runtime`.

    Raises:
        ConfigError: an unknown device, or CUDA asked for where there is none.
    """
    if isinstance(spec, Runtime):
        return spec
    text = "auto" if spec is None else str(spec).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise ConfigError(f"unknown device {spec!r}; expected auto, cpu, cuda or cuda:N") from None
    if device.type == "cpu":
        return Runtime(torch.device("cpu"))
    if device.type != "cuda":
        raise ConfigError(f"unsupported device {spec!r}; expected auto, cpu, cuda or cuda:N")
    if not torch.cuda.is_available():
        raise ConfigError(f"device {spec!r} asked for, but this machine has no usable CUDA GPU")
    index = device.index if device.index is not None else torch.cuda.current_device()
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {spec!r} asked for, but there are only {torch.cuda.device_count()} GPUs"
        )
    device = torch.device("cuda", index)
    if not amp:
        return Runtime(device)
    dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return Runtime(device, dtype)


def machine_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    import platform

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            return next(
                (line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")), cpu
            )
    except OSError:
        return cpu


def environment() -> dict[str, Any]:
    """Processor, thread count and library versions: what results may depend on besides the
    command and its seed."""
    import platform

    import numpy
    import optuna
    import timm
    import torch

    return {
        "machine": machine_name(),
        "torch_threads": torch.get_num_threads(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "optuna": optuna.__version__,
        "numpy": numpy.__version__,
    }
