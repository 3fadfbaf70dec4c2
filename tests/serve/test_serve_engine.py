"""The model side of a replica, without Ray: the same answers as the loaded bundle."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import exitsearch
from exitsearch.serve import RequestError, ServingModel


def decoded(pngs: list[bytes], n: int) -> list[Image.Image]:
    return [Image.open(io.BytesIO(p)) for p in pngs[:n]]


def test_answers_equal_predict_at_every_asked_point(bundle: Path, pngs: list[bytes]):
    engine = ServingModel(exitsearch.load(bundle))
    reference = exitsearch.load(bundle)
    images = decoded(pngs, 24)
    pixels = engine.pixels(images)
    assert pixels.dtype == np.uint8 and pixels.shape == (24, 1, 28, 28)
    for point in (None, 0, len(engine.points) // 2, None):
        answers = engine.infer(pixels, point, [3] * 24)
        if point is None:
            reference.set_thresholds(exitsearch.load(bundle).thresholds)
        else:
            reference.set_operating_point(index=point)
        out = reference.predict(images)
        probs = torch.softmax(out.logits, -1).numpy()
        assert [a.label for a in answers] == out.prediction.tolist()
        assert [a.exit for a in answers] == out.exit_index.tolist()
        for a, row in zip(answers, probs, strict=True):
            assert [c for c, _ in a.top] == list(np.argsort(-row, kind="stable")[:3])
            assert all(p == pytest.approx(row[c], abs=1e-6) for c, p in a.top)


def test_backbone_only_is_the_backbone(bundle: Path, pngs: list[bytes]):
    model = exitsearch.load(bundle)
    engine = ServingModel(model, backbone_only=True)
    assert engine.points == [] and engine.point is None
    images = decoded(pngs, 16)
    answers = engine.infer(engine.pixels(images), None, [1] * 16)
    x = model.inputs.stream(images, 16).__next__()
    with torch.inference_mode():
        want = model.backbone(x).argmax(-1).tolist()
    assert [a.label for a in answers] == want
    assert {a.exit for a in answers} == {0} and {a.block for a in answers} == {model.backbone.depth}
    with pytest.raises(RequestError) as info:
        engine.resolve_point(0)
    assert info.value.status == 422


def test_points_asked_by_index_or_budget(bundle: Path):
    engine = ServingModel(exitsearch.load(bundle))
    n = len(engine.points)
    assert engine.resolve_point() is None and engine.resolve_point(n - 1) == n - 1
    for kwargs, fragment in (
        ({"index": n}, "does not exist"),
        ({"budget": "0.001%"}, "no operating point fits"),
    ):
        with pytest.raises(RequestError, match=fragment) as info:
            engine.resolve_point(**kwargs)
        assert info.value.status == 422
    costs = engine.point_costs()
    assert engine.resolve_point(budget="100%") == max(
        range(n), key=lambda i: (engine.points[i].val_accuracy, -costs[i])
    )


@pytest.mark.parametrize("patience", [0, 1])
def test_stream_patience_bounds_how_many_submissions_an_image_waits(
    bundle: Path, pngs: list[bytes], patience: int
):
    """With patience 0 every submission is answered whole at once; with 1 the one before is
    answered whole by the end of the next, and some images do wait for it."""
    engine = ServingModel(exitsearch.load(bundle), batch_size=8, patience=patience)
    pixels = engine.pixels(decoded(pngs, 30))
    submitted: list[list[int]] = []
    answered: set[int] = set()
    waited = 0
    for a in range(0, 30, 6):
        ids, done = engine.submit(pixels[a : a + 6], None, [1] * 6)
        submitted.append(ids)
        answered.update(key for key, _ in done)
        waited = max(waited, engine.in_flight)
        finished = submitted if patience == 0 else submitted[:-1]
        assert all(key in answered for ids in finished for key in ids)
    assert (waited == 0) == (patience == 0)
    answered.update(key for key, _ in engine.drain())
    assert len(answered) == 30 and engine.in_flight == 0


def test_stream_submissions_answer_like_predict_at_their_points(bundle: Path, pngs: list[bytes]):
    """Dynamic batches of uneven sizes at two operating points, through the stream: every image
    is answered once, at its point, as the loaded bundle answers it; an image of one submission
    is answered by the end of the second after it (patience 2)."""
    engine = ServingModel(exitsearch.load(bundle), batch_size=8)
    images = decoded(pngs, 40)
    pixels = engine.pixels(images)
    cheap = 0
    plan = [(0, 5, None), (5, 17, cheap), (17, 18, None), (18, 30, None), (30, 40, cheap)]
    answered: dict[int, object] = {}
    point_of: dict[int, int | None] = {}
    image_of: dict[int, int] = {}
    waited = 0
    for n, (a, b, point) in enumerate(plan):
        ids, done = engine.submit(pixels[a:b], point, [2] * (b - a))
        waited = max(waited, engine.in_flight)
        for i, key in enumerate(ids):
            point_of[key], image_of[key] = point, a + i
        for key, answer in done:
            assert key not in answered
            answered[key] = answer
        if n >= 2:  # the submission two before is answered whole (patience 2)
            prev = plan[n - 2]
            assert (
                sum(image_of[k] in range(prev[0], prev[1]) for k in answered) >= prev[1] - prev[0]
            )
    answered.update(engine.drain())
    assert waited > 0  # some images did wait for a later submission
    assert len(answered) == 40 and engine.in_flight == 0
    for point in (None, cheap):
        reference = exitsearch.load(bundle)
        if point is not None:
            reference.set_operating_point(index=point)
        keys = sorted(k for k in answered if point_of[k] == point)
        out = reference.predict([images[image_of[k]] for k in keys])
        probs = torch.softmax(out.logits, -1).numpy()
        for j, k in enumerate(keys):
            a = answered[k]
            assert (a.label, a.exit) == (out.prediction[j].item(), out.exit_index[j].item())  # type: ignore[attr-defined]
            assert len(a.top) == 2  # type: ignore[attr-defined]
            assert all(p == pytest.approx(probs[j][c], abs=1e-6) for c, p in a.top)  # type: ignore[attr-defined]
    assert len({a.exit for a in answered.values()}) >= 2  # type: ignore[attr-defined]
