"""The model behind the server: images in, one answer per image with the exit it took.

:class:`ServingModel` wraps an exported model (:func:`exitsearch.load`) for a server replica.
A dynamic batch of requests is preprocessed with the bundle's own transform (timm's eval
transform: resize, centre crop, mean/std) and enters the model's stream mode
(:meth:`ServingModel.submit`): the images that go on past an exit wait there for the next
batches' images, so every block runs on a full batch while each request still leaves at its own
exit; when no request is waiting the server drains what is in flight (:meth:`ServingModel.drain`),
so no image waits for company that does not come. :meth:`ServingModel.infer` runs one batch in
batch mode instead (it thins out at every exit). The answers equal
``exitsearch.load(bundle).predict(images)`` on the same images at the same operating point.

``backbone_only`` serves the same bundle's backbone without exits, the baseline a load test
compares against.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from exitsearch.errors import ExitSearchError
from exitsearch.serve.requests import RequestError

__all__ = ["Answer", "ServingModel"]


@dataclass(frozen=True)
class Answer:
    """What the server says about one image.

    Attributes:
        label: the predicted class index.
        top: ``(class, probability)`` pairs, most probable first.
        exit: the exit taken (0-based; the number of early exits means the backbone's own head).
        block: the block after which the image left (the backbone's depth for its own head).
    """

    label: int
    top: tuple[tuple[int, float], ...]
    exit: int
    block: int

    def to_dict(self, classes: Sequence[str] | None = None) -> dict[str, Any]:
        """JSON of the answer; with ``classes`` (label order) each label's name beside it."""

        def named(c: int) -> dict[str, Any]:
            return {"label": c} if classes is None else {"label": c, "class": classes[c]}

        return {
            **named(self.label),
            "probabilities": [named(c) | {"p": round(p, 6)} for c, p in self.top],
            "exit": self.exit,
            "exit_block": self.block,
        }


class ServingModel:
    """An exported model prepared for serving (one per replica; not thread-safe).

    Args:
        model: a :class:`~exitsearch.export.MultiExitModel`, as :func:`exitsearch.load` returns.
        backbone_only: serve the backbone alone (every image leaves at its final head).
        batch_size: samples per stage run in stream mode (the server's largest batch).
        patience: how many later submissions an image in stream mode may wait for (2: two
            servers side by side on this 2-core machine, p99 169 ms at 395 req/s and 290 ms
            at 455 against 324 and 865 ms with 1).
    """

    def __init__(
        self, model: Any, *, backbone_only: bool = False, batch_size: int = 32, patience: int = 2
    ) -> None:
        self.model = model
        self.backbone_only = backbone_only
        self.num_classes = int(model.backbone.num_classes)
        self.classes: list[str] | None = getattr(model, "classes", None)  # label i's name
        self.depth = int(model.backbone.depth)
        self.num_exits = 0 if backbone_only else int(model.num_exits)
        self._blocks = [int(h.location) for h in model.config.exits] + [self.depth]
        self.points = [] if backbone_only else list(model.operating_points)
        self._base: tuple[float, ...] = () if backbone_only else tuple(model.thresholds)
        self._transform = model.preprocess.image_transform()
        self._normalise = model.preprocess.input_transform()
        self._device = next(model.parameters()).device
        if patience < 0:
            raise ExitSearchError(f"patience must be >= 0, got {patience}")
        self._batch_size = batch_size
        self._patience = patience
        self._streams: dict[int | None, Any] = {}
        self._top_k: dict[int, int] = {}  # images in flight (stream mode): classes to return
        self._next_id = 0
        self._clock = 0  # submissions so far: the stream's time stamps

    # ----------------------------------------------------------------- operating points
    def resolve_point(self, index: int | None = None, budget: str | None = None) -> int | None:
        """The operating point a request asks for (None: the server's own choice).

        Raises:
            RequestError: 422 an index out of range, a budget no point fits or that does not
                parse, or a point asked of the backbone-only server.
        """
        if index is None and budget is None:
            return None
        if not self.points:
            raise RequestError(422, "this server has no operating points to choose from")
        if index is not None:
            if not 0 <= index < len(self.points):
                raise RequestError(
                    422,
                    f"operating point {index} does not exist; this model has "
                    f"{len(self.points)} (0..{len(self.points) - 1})",
                )
            return index
        from exitsearch.export.points import choose_point

        c = self.model.costs
        try:
            return choose_point(self.points, budget, c.backbone_flops, max(c.exit_flops))  # type: ignore[arg-type]
        except ExitSearchError as exc:
            raise RequestError(422, str(exc)) from None

    def set_default(self, point: int) -> None:
        """Make operating ``point`` what requests that ask for none get."""
        self.model.set_operating_point(index=point)
        self._base = tuple(self.model.thresholds)

    def use(self, point: int | None) -> None:
        """Run the next batches at ``point`` (None: the default)."""
        if self.backbone_only:
            return
        if point is None:
            if tuple(self.model.thresholds) != self._base:
                self.model.set_thresholds(self._base)
        elif point != self.model.point_index:
            self.model.set_operating_point(index=point)

    def point_costs(self) -> list[float]:
        """Predicted mean FLOPs per sample of every operating point (validation)."""
        return [p.mean_flops for p in self.points]

    # ----------------------------------------------------------------- inference
    def pixels(self, images: Sequence[Any]) -> np.ndarray:
        """uint8 ``(N, C, H, W)`` at the model's size: the bundle's resize and crop."""
        return np.stack([self.image_pixels(im) for im in images])

    def image_pixels(self, image: Any) -> np.ndarray:
        """uint8 ``(C, H, W)`` of one PIL image at the model's size (thread-safe)."""
        return self._transform(image)

    def infer(self, pixels: np.ndarray, point: int | None, top_k: Sequence[int]) -> list[Answer]:
        """Answers for ``pixels`` (from :meth:`pixels`) at operating ``point`` (None: the
        default, :meth:`set_default`); ``top_k[i]`` classes are returned for image ``i``."""
        x = self._normalise(torch.from_numpy(pixels)).to(self._device)
        with torch.inference_mode():
            if self.backbone_only:
                logits = self.model.backbone(x)
                exits = np.full(len(x), 0, dtype=np.int64)
            else:
                self.use(point)
                out = self.model.run(x)
                logits, exits = out.logits, out.exit_index.cpu().numpy()
        return self._build(logits, exits, top_k)

    # ----------------------------------------------------------------- stream mode
    def submit(
        self, pixels: np.ndarray, point: int | None, top_k: Sequence[int]
    ) -> tuple[list[int], list[tuple[int, Answer]]]:
        """Stream mode: enter ``pixels`` (from :meth:`pixels`) at operating ``point`` and run
        every stage that has a full batch (:class:`~exitsearch.export.staged.OpenStream`, one
        per operating point). Images that go on past an exit wait there for the next
        submissions' images, so the blocks run on fuller batches, for at most ``patience``
        submissions after their own: older images still in flight are finished here (0: each
        submission is finished at once); :meth:`drain` finishes all.

        Returns:
            The ids given to these images, and ``(id, answer)`` of every image (of this or an
            earlier submission) that left.
        """
        if self.backbone_only:
            raise ExitSearchError("the backbone alone has no stream of exits")
        from exitsearch.export.staged import OpenStream

        x = self._normalise(torch.from_numpy(pixels)).to(self._device)
        first = self._next_id
        self._next_id += len(x)
        ids = list(range(first, first + len(x)))
        self._top_k.update(zip(ids, (int(k) for k in top_k), strict=True))
        self._clock += 1
        stream = self._streams.get(point)
        if stream is None:
            stream = self._streams[point] = OpenStream(self.model, self._batch_size)
        with torch.inference_mode():
            self.use(point)
            done = self._answers(stream.push(x, first, self._clock))
            # an image waits for at most `patience` later submissions' company
            for p, s in self._streams.items():
                if s.in_flight:
                    self.use(p)
                    done += self._answers(s.expire(self._clock - self._patience + 1))
        return ids, done

    def drain(self) -> list[tuple[int, Answer]]:
        """Finish every image in flight (every operating point's stream)."""
        done = []
        with torch.inference_mode():
            for point, stream in self._streams.items():
                if stream.in_flight:
                    self.use(point)
                    done += self._answers(stream.flush())
        return done

    def abandon(self) -> None:
        """Forget every image in flight (after a failure)."""
        for stream in self._streams.values():
            stream.clear()
        self._top_k.clear()

    @property
    def submissions(self) -> int:
        """Calls of :meth:`submit` so far."""
        return self._clock

    @property
    def in_flight(self) -> int:
        """Images submitted and not yet answered."""
        return len(self._top_k)

    def _answers(self, left: Sequence[Any]) -> list[tuple[int, Answer]]:
        """``(id, answer)`` of the images that left (:class:`OpenStream` outputs)."""
        done = []
        for rows, logits, _, _, k in left:
            ids = rows.cpu().tolist()
            tops = [self._top_k.pop(i) for i in ids]
            done += zip(ids, self._build(logits, [int(k)] * len(ids), tops), strict=True)
        return done

    def _build(
        self, logits: torch.Tensor, exits: Sequence[int], top_k: Sequence[int]
    ) -> list[Answer]:
        """One answer per row of ``logits``: ``top_k[i]`` classes, left at ``exits[i]``."""
        most = max((int(k) for k in top_k), default=1)
        labels, probs = self.model.task.ranked(logits.float().cpu(), max(most, 1))
        answers = []
        for i in range(len(labels)):
            n = min(int(top_k[i]), labels.shape[1])
            e = int(exits[i])
            answers.append(
                Answer(
                    label=int(labels[i, 0]),
                    top=tuple(
                        (int(c), float(p)) for c, p in zip(labels[i, :n], probs[i, :n], strict=True)
                    ),
                    exit=e,
                    block=self.depth if self.backbone_only else self._blocks[e],
                )
            )
        return answers

    @property
    def point(self) -> int | None:
        """The operating point in use (None when the thresholds match none, or no exits)."""
        return None if self.backbone_only else self.model.point_index
