"""The epoch loop every training shares: backbone, exit heads, PAUMER and fine-tuning.

A training says what it optimises (its objective: modules, optimisers, the loss of a batch);
:class:`EpochLoop` does what they all do the same way:

- **device and precision**: modules and batches on the :class:`~exitsearch.device.Runtime`'s
  device, forward passes under its autocast, losses scaled for float16 (:meth:`optimise`);
- **seeding**: each epoch's shuffling and augmentation draw from a generator seeded with
  ``seed * 100_003 + epoch`` (:meth:`generator`), so a run resumed from an epoch checkpoint
  continues exactly as the uninterrupted run would have;
- **batches**: shuffled, augmented on uint8 (:class:`~exitsearch.data.Augment`), moved to the
  device from pinned memory and normalised, with a progress bar (:meth:`batches`);
- **non-finite losses**: :meth:`check` stops training with
  :class:`~exitsearch.errors.TrainingDivergedError`, saying which checkpoint is kept.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import Any

import torch

from exitsearch.data.loader import iterate_batches
from exitsearch.data.samples import Samples
from exitsearch.data.transforms import Augment
from exitsearch.device import Runtime, resolve_device
from exitsearch.errors import TrainingDivergedError
from exitsearch.progress import NullProgress, Progress

__all__ = ["EpochLoop", "epoch_seed", "kept_in"]


def epoch_seed(seed: int, epoch: int) -> int:
    """The seed of epoch ``epoch``'s generator (shuffling, augmentation, sampled choices)."""
    return seed * 100_003 + epoch


def kept_in(out: Any) -> Callable[[int], str]:
    """The usual answer to "which checkpoint stays": the last finished epoch's, in ``out``."""
    return lambda epoch: f"the checkpoint of epoch {epoch} in {out} is kept (try a lower --lr)"


class EpochLoop:
    """Device, precision, seeding, batches, progress and divergence for one training.

    Args:
        device: where to train (``auto``, ``cpu``, ``cuda``...), or a resolved runtime.
        progress: where bars and messages go.
        kept: says, for a 0-based epoch, which checkpoint stays when training diverges there.
    """

    def __init__(
        self,
        device: str | Runtime | None = None,
        progress: Progress | None = None,
        kept: Callable[[int], str] | None = None,
    ) -> None:
        self.rt = resolve_device(device or "cpu")
        self.progress = progress or NullProgress()
        self._kept = kept or (lambda epoch: "")
        self.scaler = self.rt.grad_scaler()

    # --------------------------------------------------------------------- placement
    def place(self, *modules: torch.nn.Module) -> None:
        """Move ``modules`` to the device (before their optimisers are built)."""
        self.rt.place(*modules)

    def release(self, *modules: torch.nn.Module) -> None:
        """Move ``modules`` back to the CPU (for saving and for the stages that follow)."""
        for m in modules:
            m.to("cpu")

    def autocast(self) -> Any:
        return self.rt.autocast()

    # ----------------------------------------------------------------------- seeding
    @staticmethod
    def generator(seed: int, epoch: int) -> torch.Generator:
        return torch.Generator().manual_seed(epoch_seed(seed, epoch))

    # ----------------------------------------------------------------------- batches
    def batches(
        self,
        data: Samples,
        batch_size: int,
        *,
        generator: torch.Generator,
        transform: Callable[[torch.Tensor], torch.Tensor],
        task: str,
        augment: Augment | None = None,
        limit: int | None = None,
    ) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        """One epoch's ``(step, x, y)``: shuffled, augmented, on the device, normalised.

        ``limit`` stops after that many batches. The progress bar ``task`` advances after each
        batch the caller finished and closes when the epoch ends or is abandoned.
        """
        n = len(data) if limit is None else min(len(data), limit * batch_size)
        total = -(-n // batch_size)
        self.progress.start(task, total)
        try:
            for b, (_, x, y) in enumerate(
                iterate_batches(
                    data,
                    batch_size,
                    shuffle=True,
                    generator=generator,
                    pin_memory=self.rt.pin_memory,
                )
            ):
                if limit is not None and b >= limit:
                    break
                if augment is not None and augment.enabled:
                    x = augment(x, generator)
                x, y = self.rt.to(x, y)
                yield b, transform(x), y
        finally:
            self.progress.finish(task)

    def advance(self, task: str, **info: float | str) -> None:
        self.progress.advance(task, 1, **info)

    # ---------------------------------------------------------------- optimisation
    def check(
        self, loss: torch.Tensor, epoch: int, step: int, who: str = "", phase: str = ""
    ) -> None:
        """Raise :class:`TrainingDivergedError` when ``loss`` is NaN or infinite."""
        if not torch.isfinite(loss):
            prefix = f"{who}: " if who else ""
            where = f"in {phase}, epoch" if phase else "at epoch"
            raise TrainingDivergedError(
                f"{prefix}loss became {loss.item()} {where} {epoch + 1}, step {step + 1}; "
                f"{self._kept(epoch)}"
            )

    def optimise(
        self,
        loss: torch.Tensor,
        optimizer: torch.optim.Optimizer,
        *,
        clip: tuple[
            Iterable[torch.nn.Parameter] | Callable[[], Iterable[torch.nn.Parameter]], float
        ]
        | None = None,
        before_step: Callable[[], None] | None = None,
    ) -> None:
        """Back-propagate ``loss`` and step ``optimizer`` (scaled for float16, clipped).

        ``before_step`` runs after the backward pass (to drop gradients that must not apply);
        the parameters to clip may be given as a callable evaluated after it.
        """
        optimizer.zero_grad(set_to_none=True)
        self.scaler.scale(loss).backward()
        if before_step is not None:
            before_step()
        if clip is not None:
            self.scaler.unscale_(optimizer)
            params, max_norm = clip
            torch.nn.utils.clip_grad_norm_(list(params() if callable(params) else params), max_norm)
        self.scaler.step(optimizer)
        self.scaler.update()
