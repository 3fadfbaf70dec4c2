"""A PAUMER model: a pausing ViT, its auxiliary decoder and its task's main decoder.

Saved as a folder: ``model.safetensors`` (every weight) and ``paumer.json`` (:class:`PaumerSpec`
plus how the model was trained), so that any process, a Ray worker included, rebuilds it from
the path alone with :func:`load_paumer`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from exitsearch._io import atomic_write_json, load_safetensors, read_json, save_safetensors
from exitsearch._mismatch import state_mismatch
from exitsearch.backbone.adapter import Backbone
from exitsearch.backbone.checkpoint import load_state_dict_file
from exitsearch.backbone.factory import create_backbone, resolve_spec
from exitsearch.backbone.spec import BackboneSpec
from exitsearch.core.pause import PauseConfig
from exitsearch.errors import CheckpointError
from exitsearch.pausing.pause import AuxDecoder, PausedStates, PauseMode, PausingViT
from exitsearch.pausing.tasks import PauseTask, create_task

__all__ = [
    "MODEL_FILE",
    "SPEC_FILE",
    "PaumerModel",
    "PaumerSpec",
    "build_paumer",
    "init_from_paumer",
    "load_backbone_weights",
    "load_paumer",
]

MODEL_FILE = "model.safetensors"
SPEC_FILE = "paumer.json"


@dataclass(frozen=True)
class PaumerSpec:
    """What a PAUMER model is, without its weights.

    Attributes:
        backbone: the backbone (timm name and overrides; ``checkpoint`` is always None, the
            weights live in the model file).
        task: registered task name.
        decoder: parameters of the task's main decoder (e.g. ``{"depth": 2}``).
        label_smoothing: of the main loss (part of the task).
    """

    backbone: BackboneSpec
    task: str
    decoder: Mapping[str, Any] = field(default_factory=dict)
    label_smoothing: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "backbone": self.backbone.to_dict(),
            "task": self.task,
            "decoder": dict(self.decoder),
            "label_smoothing": self.label_smoothing,
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> PaumerSpec:
        return cls(
            BackboneSpec.from_dict(d["backbone"]),
            d["task"],
            dict(d.get("decoder", {})),
            float(d.get("label_smoothing", 0.0)),
        )


@dataclass
class PaumerOutput:
    """Main-head logits and the pausing forward's states (paused tokens, aux logits)."""

    logits: torch.Tensor
    states: PausedStates


class PaumerModel(nn.Module):
    """Backbone + auxiliary decoder (:class:`PausingViT`) + the task's main decoder.

    ``forward(x, pause, mode)`` runs the pausing forward and the main head on the assembled
    final state. With an empty pause configuration it is the plain model.
    """

    def __init__(self, vit: PausingViT, decoder: nn.Module | None, spec: PaumerSpec) -> None:
        super().__init__()
        self.vit = vit
        self.decoder = decoder
        self.spec = spec
        self.task: PauseTask = create_task(spec.task, vit.backbone, spec.label_smoothing)

    @property
    def backbone(self) -> Backbone:
        return self.vit.backbone

    def head(self, assembled: torch.Tensor) -> torch.Tensor:
        """The main head on an assembled final state ``(B, P + N, D)``: the backbone's own
        classifier, or the final norm then the task's decoder on the patch tokens."""
        if self.decoder is None:
            return self.backbone.final_head(assembled)
        normed = self.backbone.model.norm(assembled)
        return self.decoder(normed[:, self.backbone.num_prefix_tokens :])

    def forward(
        self,
        x: torch.Tensor,
        pause: PauseConfig | Mapping[int, float] | str | None = None,
        mode: PauseMode | str = PauseMode.ENTROPY,
        generator: torch.Generator | None = None,
        return_aux: bool = False,
    ) -> PaumerOutput:
        states = self.vit.forward_states(
            x, pause, mode=mode, generator=generator, return_aux=return_aux
        )
        return PaumerOutput(self.head(states.final), states)

    def predict(
        self,
        x: torch.Tensor,
        pause: PauseConfig | Mapping[int, float] | str | None = None,
        mode: PauseMode | str = PauseMode.ENTROPY,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Main-head logits only (what throughput is measured on)."""
        states = self.vit.forward_states(x, pause, mode=mode, generator=generator)
        return self.head(states.final)

    def save(self, folder: str | Path, info: Mapping[str, Any] | None = None) -> Path:
        """Write ``model.safetensors`` and ``paumer.json`` (spec + ``info``) into ``folder``."""
        out = Path(folder)
        out.mkdir(parents=True, exist_ok=True)
        save_safetensors(out / MODEL_FILE, self.state_dict())
        atomic_write_json(out / SPEC_FILE, {"spec": self.spec.to_dict(), **dict(info or {})})
        return out


def build_paumer(
    backbone: Backbone,
    task: str,
    decoder: Mapping[str, Any] | None = None,
    label_smoothing: float = 0.0,
) -> PaumerModel:
    """A fresh PAUMER model around ``backbone`` (new auxiliary and main decoders)."""
    bspec = replace(resolve_spec(backbone.spec), checkpoint=None, pretrained=False)
    spec = PaumerSpec(bspec, task, dict(decoder or {}), label_smoothing)
    t = create_task(task, backbone, label_smoothing)
    vit = PausingViT(backbone, AuxDecoder(backbone.embed_dim, t.aux_classes))
    return PaumerModel(vit, t.build_decoder(backbone, **dict(decoder or {})), spec)


def load_paumer(folder: str | Path) -> PaumerModel:
    """Rebuild the model saved in ``folder`` by :meth:`PaumerModel.save` (in eval mode).

    Raises:
        CacheError: a file is missing or unreadable.
        CheckpointError: the weights do not fit the spec.
    """
    root = Path(folder)
    meta = read_json(root / SPEC_FILE)
    spec = PaumerSpec.from_dict(meta["spec"])
    model = build_paumer(
        create_backbone(spec.backbone), spec.task, spec.decoder, spec.label_smoothing
    )
    state = load_safetensors(root / MODEL_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(
            f"{root / MODEL_FILE}: does not fit its spec ({state_mismatch(model, state)})"
        ) from None
    return model.eval()


def load_backbone_weights(backbone: Backbone, path: str | Path) -> None:
    """Load backbone weights from a weights file, or from a training checkpoint of
    ``exitsearch backbone train`` (``last.safetensors``: ``model.*`` tensors plus optimiser
    state), or from a PAUMER model file (its ``vit.backbone.model.*`` tensors).

    Raises:
        CheckpointError: unreadable file, or tensors that do not fit the backbone.
    """
    state = load_state_dict_file(path)
    for prefix in ("vit.backbone.model.", "model."):
        if any(k.startswith(prefix) for k in state):
            state = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            break
    own = backbone.model.state_dict()
    bad = [k for k, v in state.items() if k in own and own[k].shape != v.shape]
    missing = [k for k in own if k not in state]
    if bad or missing:
        what = f"shape of {bad[0]!r} differs" if bad else f"missing {missing[:3]}"
        raise CheckpointError(f"{path}: does not fit the backbone ({what})")
    with torch.no_grad():
        backbone.model.load_state_dict({k: state[k] for k in own}, strict=True)


def init_from_paumer(model: PaumerModel, folder: str | Path) -> dict[str, Any]:
    """Start ``model`` from the weights of a saved PAUMER model of the same task and shapes
    (the paper starts PAUMER training from a trained Segmenter). Returns that model's record.

    Raises:
        CacheError: files missing or unreadable.
        CheckpointError: the saved model's task or weights do not fit ``model``.
    """
    root = Path(folder)
    meta = read_json(root / SPEC_FILE)
    task = meta.get("spec", {}).get("task")
    if task != model.spec.task:
        raise CheckpointError(f"{root}: a {task} model cannot start a {model.spec.task} training")
    state = load_safetensors(root / MODEL_FILE)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError:
        raise CheckpointError(
            f"{root / MODEL_FILE}: does not fit this model ({state_mismatch(model, state)})"
        ) from None
    return meta
