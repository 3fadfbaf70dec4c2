"""Epoch checkpoints: saved so that a crash cannot mix epochs, read back whole or not at all.

Every training that resumes (backbone, exit heads, PAUMER, fine-tuning) saves through
:class:`EpochCheckpoint` after each epoch and reads back through it on a rerun. It guarantees:

- **the JSON is written last.** The tensors (weights, optimiser state) go to a safetensors file
  first, then the JSON state that names that file; each is written to a temporary name and
  renamed into place. The JSON is the commit point: with the epoch in the weights file's name
  (the default, ``checkpoint-epoch<N>.safetensors``) a crash at any moment leaves the previous
  epoch's pair intact, and older weight files are removed only once the new JSON is in place.
  A fixed weights name (PAUMER's ``last.safetensors``) is replaced before the JSON; the weights
  file records its epoch, so a pair left half-written by a crash reads as damaged, never as a
  mix of two epochs.
- **identity check.** The JSON holds the training's identity (whatever its result depends on).
  A checkpoint of another identity is refused with a one-line
  :class:`~exitsearch.errors.ConfigError` (``on_mismatch="refuse"``), or reported, removed and
  training started afresh (``on_mismatch="restart"``).
- **damaged files give a fresh start with a message.** JSON that does not parse, a weights file
  that is missing, cut short or of another epoch, or saved state that does not fit the model is
  logged as ``checkpoint in <folder> is damaged (<why>); starting afresh`` and :meth:`load`
  returns None: a damaged checkpoint never blocks a rerun.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeVar, overload

import torch
from safetensors import safe_open

from exitsearch._io import atomic_write_json, load_safetensors, read_json, save_safetensors
from exitsearch._mismatch import state_mismatch
from exitsearch._state import flatten_optimizer_state, unflatten_optimizer_state
from exitsearch.errors import CacheError, ConfigError
from exitsearch.progress import NullProgress, Progress

__all__ = ["EpochCheckpoint", "Resumed", "flatten_training_state"]

T = TypeVar("T")

# What reading or applying a damaged checkpoint raises (ConfigError, a ValueError, is re-raised).
_DAMAGE = (CacheError, KeyError, TypeError, ValueError, RuntimeError)


def flatten_training_state(
    optimizer: torch.optim.Optimizer, **modules: torch.nn.Module
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors of ``modules`` (each under its keyword as prefix) and of ``optimizer``
    (under ``opt``), and the optimiser's JSON part (for the state's ``optimizer`` entry)."""
    tensors, meta = flatten_optimizer_state(optimizer.state_dict())
    for prefix, module in modules.items():
        tensors.update({f"{prefix}.{k}": v for k, v in module.state_dict().items()})
    return tensors, meta


@dataclass(frozen=True)
class Resumed:
    """A checkpoint read back: its epoch, its JSON state and its tensors."""

    epoch: int
    state: dict[str, Any]
    tensors: dict[str, torch.Tensor]

    def module_state(
        self, prefix: str, module: torch.nn.Module | None = None
    ) -> dict[str, torch.Tensor]:
        """The tensors saved under ``prefix.``, named without it.

        With ``module``, they are checked to fit it exactly (names and shapes), so that loading
        them cannot fail half-way and leave the module partly restored.

        Raises:
            CacheError: they do not fit ``module``.
        """
        cut = len(prefix) + 1
        own = {k[cut:]: v for k, v in self.tensors.items() if k.startswith(f"{prefix}.")}
        if module is not None:
            expected = module.state_dict()
            if own.keys() != expected.keys() or any(
                own[k].shape != v.shape for k, v in expected.items()
            ):
                raise CacheError(f"its weights do not fit ({state_mismatch(module, own)})")
        return own

    def optimizer_state(self, key: str = "optimizer", prefix: str = "opt") -> dict[str, Any]:
        """The optimiser's ``state_dict`` saved under ``prefix`` with its JSON part at ``key``."""
        return unflatten_optimizer_state(self.tensors, self.state[key], prefix=prefix)

    def restore(
        self, optimizer: torch.optim.Optimizer | None = None, **modules: torch.nn.Module
    ) -> None:
        """Load what :func:`flatten_training_state` saved into ``optimizer`` and ``modules``.

        Every module's tensors are checked before anything is loaded, so a checkpoint that does
        not fit leaves them all as they were.
        """
        weights = {prefix: self.module_state(prefix, m) for prefix, m in modules.items()}
        if optimizer is not None:
            optimizer.load_state_dict(self.optimizer_state())
        for prefix, module in modules.items():
            module.load_state_dict(weights[prefix])


@dataclass
class EpochCheckpoint:
    """The epoch checkpoint of one training in ``folder`` (see the module's guarantees).

    Args:
        folder: where the JSON state and the weights files live.
        state_file: name of the JSON state (``checkpoint.json``, ``train_state.json``...).
        identity: what the training depends on; a checkpoint holding another is not resumed.
        on_mismatch: ``refuse`` (ConfigError) or ``restart`` (log, remove, start afresh).
        who: prefix of the messages (``heads``, a strategy's name), none when empty.
        progress: where the messages go.
        weights: name of the weights file, with ``{epoch}`` where the epoch goes.
        weights_key: the JSON entry that names the weights file.
        legacy_weights: the weights file of older checkpoints whose JSON names none.
        other: what a refused checkpoint is ("another training (... differ)").
        remedy: what the refusal advises.
    """

    folder: Path
    state_file: str
    identity: Any
    on_mismatch: Literal["refuse", "restart"] = "refuse"
    who: str = ""
    progress: Progress = field(default_factory=NullProgress)
    weights: str = "checkpoint-epoch{epoch}.safetensors"
    weights_key: str = "weights"
    legacy_weights: str | None = None
    other: str = "another training"
    remedy: str = "choose another output folder or delete it"
    damaged: str | None = field(default=None, init=False)
    """Why the last :meth:`load` found the checkpoint damaged; None when it did not."""

    def __post_init__(self) -> None:
        self.folder = Path(self.folder)
        if self.on_mismatch not in ("refuse", "restart"):
            raise ValueError(f"on_mismatch must be 'refuse' or 'restart', not {self.on_mismatch!r}")

    @property
    def state_path(self) -> Path:
        return self.folder / self.state_file

    # ------------------------------------------------------------------------- writing
    def save(
        self, epoch: int, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]
    ) -> None:
        """Write epoch ``epoch``'s tensors, then the JSON (``state`` with the identity, the
        epoch and the weights file's name), then remove older weights files."""
        name = self.weights.format(epoch=epoch)
        save_safetensors(self.folder / name, tensors, {"epoch": str(epoch)})
        atomic_write_json(
            self.state_path,
            {"identity": self.identity, "epoch": epoch, **state, self.weights_key: name},
        )
        self._remove_weights(keep=name)

    def _remove_weights(self, keep: str | None = None) -> None:
        for old in self.folder.glob(self.weights.format(epoch="*")):
            if old.name != keep:
                old.unlink(missing_ok=True)

    # ------------------------------------------------------------------------- reading
    @overload
    def load(self) -> Resumed | None: ...

    @overload
    def load(self, apply: Callable[[Resumed], T]) -> T | None: ...

    def load(self, apply: Callable[[Resumed], Any] | None = None) -> Any:
        """The checkpoint to resume from, or None to start afresh.

        ``apply`` (optional) restores the training from it and returns what the caller needs;
        an error it raises (a missing entry, tensors that do not fit) counts as damage too.
        Without a checkpoint, None; with another identity, refused or restarted per
        ``on_mismatch``; damaged, logged and None.

        Raises:
            ConfigError: the checkpoint belongs to another training and ``on_mismatch`` is
                ``refuse``.
        """
        self.damaged = None
        if not self.state_path.is_file():
            return None
        try:
            state = read_json(self.state_path)
            if not isinstance(state, dict):
                raise CacheError(f"{self.state_path}: not a JSON object")
        except CacheError as exc:
            return self._damage(exc)
        if state.get("identity") != self.identity:
            self._mismatch()
            return None
        try:
            resumed = self._read(state)
            return resumed if apply is None else apply(resumed)
        except ConfigError:
            raise
        except _DAMAGE as exc:
            return self._damage(exc)

    def _read(self, state: dict[str, Any]) -> Resumed:
        epoch = state["epoch"]
        if not isinstance(epoch, int) or isinstance(epoch, bool) or epoch < 0:
            raise CacheError(f"{self.state_file}: epoch {epoch!r} is not a count of epochs")
        name = state.get(self.weights_key, self.legacy_weights)
        if not isinstance(name, str) or Path(name).name != name:
            raise CacheError(f"{self.state_file} names no weights file in its folder")
        path = self.folder / name
        tensors = load_safetensors(path)
        with safe_open(str(path), framework="pt") as fh:
            stored = (fh.metadata() or {}).get("epoch")
        if stored is not None and stored != str(epoch):
            raise CacheError(f"{name} holds epoch {stored}, {self.state_file} epoch {epoch}")
        return Resumed(epoch, state, tensors)

    def _prefix(self) -> str:
        return f"{self.who}: " if self.who else ""

    def _mismatch(self) -> None:
        if self.on_mismatch == "refuse":
            raise ConfigError(f"{self.folder} holds a checkpoint of {self.other}; {self.remedy}")
        self.progress.log(
            f"{self._prefix()}checkpoint in {self.folder} belongs to other inputs; discarding "
            "it and starting afresh"
        )
        self.state_path.unlink(missing_ok=True)
        self._remove_weights()

    def _damage(self, exc: Exception) -> None:
        self.damaged = str(exc)
        self.progress.log(
            f"{self._prefix()}checkpoint in {self.folder} is damaged ({exc}); starting afresh"
        )
