"""Saving optimiser and scheduler state as safetensors + JSON (no pickled objects)."""

from __future__ import annotations

from typing import Any

import torch

__all__ = ["flatten_optimizer_state", "unflatten_optimizer_state"]


def flatten_optimizer_state(
    state: dict[str, Any], prefix: str = "opt"
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split ``optimizer.state_dict()`` into tensors (for safetensors) and JSON metadata."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for pid, pstate in state["state"].items():
        for key, value in pstate.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{prefix}.{pid}.{key}"] = value
            else:
                scalars.setdefault(str(pid), {})[key] = value
    meta = {"param_groups": state["param_groups"], "scalars": scalars}
    return tensors, meta


def unflatten_optimizer_state(
    tensors: dict[str, torch.Tensor], meta: dict[str, Any], prefix: str = "opt"
) -> dict[str, Any]:
    """Inverse of :func:`flatten_optimizer_state`."""
    state: dict[int, dict[str, Any]] = {}
    for name, value in tensors.items():
        head, _, rest = name.partition(".")
        if head != prefix:
            continue
        pid, _, key = rest.partition(".")
        state.setdefault(int(pid), {})[key] = value
    for pid, values in meta.get("scalars", {}).items():
        state.setdefault(int(pid), {}).update(values)
    return {"state": state, "param_groups": meta["param_groups"]}
