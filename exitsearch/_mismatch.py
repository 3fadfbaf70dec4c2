"""Why a weights file does not fit a module, said in exitsearch's words, not torch's.

``load_state_dict`` and safetensors explain a failure in their own terms ("Error(s) in loading
state_dict for AuxDecoder:", "Error while deserializing header: HeaderTooLarge"), which name
neither the tensor nor what to do. These helpers compare the tensors themselves.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import torch
from torch import nn

__all__ = ["nonfinite_tensors", "state_mismatch", "unreadable_safetensors"]


def _few(names: Sequence[str], shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(repr(n) for n in names[:shown]) + more


def state_mismatch(module: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """What keeps ``state`` from loading into ``module`` strictly, in one clause.

    Example:
        >>> state_mismatch(nn.Linear(2, 3), {"weight": torch.zeros(3, 4)})
        "tensor 'weight' has shape (3, 4) in the file but (3, 2) in the model; missing 'bias'"
    """
    own = module.state_dict()
    shapes = [k for k in own if k in state and tuple(own[k].shape) != tuple(state[k].shape)]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    parts = []
    if shapes:
        k = shapes[0]
        more = f" (and {len(shapes) - 1} more tensors)" if len(shapes) > 1 else ""
        parts.append(
            f"tensor {k!r} has shape {tuple(state[k].shape)} in the file but "
            f"{tuple(own[k].shape)} in the model{more}"
        )
    if missing:
        parts.append(f"missing {_few(missing)}")
    if unexpected:
        parts.append(f"unexpected {_few(unexpected)}")
    return "; ".join(parts) or "its tensors do not fit the model"


def unreadable_safetensors(path: str | os.PathLike[str]) -> str:
    """Why a safetensors file could not be read, from the file itself (size and header)."""
    p = Path(path)
    try:
        size = p.stat().st_size
        with open(p, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        return f"cannot be read ({exc.strerror})"
    if size == 0:
        return "the file is empty"
    if size < 8:
        return f"the file is too short ({size} bytes) to hold a safetensors header"
    header_len = int.from_bytes(head, "little")
    if header_len > size - 8:
        return "its header is cut short or damaged (the file was truncated or is not safetensors)"
    return "its header or data is damaged, or it was cut short"


def nonfinite_tensors(module: nn.Module) -> list[str]:
    """Names of ``module``'s floating-point parameters and buffers holding NaN or infinity.

    Weights like these (a checkpoint saved after training diverged, or damaged in a way its
    format cannot tell) make every prediction NaN; found before any work, they are an error
    that names them instead of an empty front that asks for a larger budget.
    """
    return [
        name
        for name, t in module.state_dict().items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]
