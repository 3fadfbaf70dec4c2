"""Loading backbone weights from safetensors files or torch state dicts."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from exitsearch.errors import CheckpointError

__all__ = ["load_state_dict_file", "load_weights"]

_NESTED_KEYS = ("state_dict", "model", "model_state_dict", "module")


def load_state_dict_file(path: str | Path) -> dict[str, torch.Tensor]:
    """Read a state dict from ``.safetensors`` or a torch file (tensors only, no pickled code).

    Raises:
        CheckpointError: the file is missing, truncated or holds no tensors.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(
            f"{p}: is a folder; a checkpoint is a .safetensors file or a torch state dict"
        )
    if not p.is_file():
        raise CheckpointError(f"{p}: checkpoint not found")
    if p.suffix == ".safetensors":
        from safetensors.torch import load_file

        try:
            state = load_file(str(p))
        except Exception:  # SafetensorError, OSError: their text names no cause a user can act on
            from exitsearch._mismatch import unreadable_safetensors

            raise CheckpointError(
                f"{p}: not a readable safetensors file ({unreadable_safetensors(p)})"
            ) from None
    else:
        try:
            state = torch.load(p, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated zip, pickle with code, not a torch file
            raise CheckpointError(
                f"{p}: not a readable torch checkpoint ({_first_line(exc)})"
            ) from None
        for key in _NESTED_KEYS:
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
                break
    if (
        not isinstance(state, dict)
        or not state
        or not all(isinstance(v, torch.Tensor) for v in state.values())
    ):
        raise CheckpointError(f"{p}: holds no state dict of tensors")
    return {k.removeprefix("module."): v for k, v in state.items()}


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load ``path`` into ``model`` strictly.

    Raises:
        CheckpointError: names the first tensor whose shape differs, or the keys that are
            missing or unexpected.
    """
    state = load_state_dict_file(path)
    own = model.state_dict()
    classifier = (getattr(model, "pretrained_cfg", None) or {}).get("classifier") or ()
    # one classifier, or several (DeiT's distilled models: ("head", "head_dist"))
    biases = {f"{c}.bias" for c in ([classifier] if isinstance(classifier, str) else classifier)}
    for name, tensor in state.items():
        if name in own and own[name].shape != tensor.shape:
            hint = ""
            if name in biases and tensor.dim() == 1:
                # the classifier's outputs: the checkpoint was trained for that many classes
                hint = f"; it predicts {tensor.shape[0]} classes: pass --override num_classes={tensor.shape[0]}"
            raise CheckpointError(
                f"{path}: tensor {name!r} has shape {tuple(tensor.shape)} in the checkpoint but "
                f"{tuple(own[name].shape)} in the model{hint}"
            )
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"missing {_few(missing)}")
        if unexpected:
            parts.append(f"unexpected {_few(unexpected)}")
        raise CheckpointError(f"{path}: does not fit the model: {'; '.join(parts)}")
    model.load_state_dict(state, strict=True)


def _few(keys: list[str], n: int = 3) -> str:
    more = f" and {len(keys) - n} more" if len(keys) > n else ""
    return ", ".join(repr(k) for k in keys[:n]) + more


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
