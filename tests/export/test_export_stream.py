"""Stream mode: the same per-sample exits as batch mode, with every stage run on full batches.

``predict`` queues the samples that go on past an exit until the next stage has a full batch, so
samples travel with others than in :meth:`run`; each must still leave at the exit the cached
evaluation predicts, with the cached prediction, and come back in input order.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest
import torch
from export_world import CONFIGS, SPECS, World

from exitsearch.core.config import ExitConfig
from exitsearch.errors import ConfigError, DataError
from exitsearch.export import MultiExitModel


def _val(world: World, limit: int | None = None) -> torch.Tensor:
    x = world.splits.val.x if limit is None else world.splits.val.x[:limit]
    return world.backbone.input_transform()(torch.from_numpy(x))


@pytest.mark.parametrize("batch_size", [1, 7, 64])
@pytest.mark.parametrize("name", sorted(CONFIGS))
def test_stream_exits_and_predictions_match_the_cache(world: World, name: str, batch_size: int):
    config = CONFIGS[name](world)
    expected = world.ev.exit_index(config)
    out = world.model(config).predict(_val(world), batch_size)
    idx, pred = out.exit_index.numpy(), out.prediction.numpy()
    np.testing.assert_array_equal(idx, expected)
    sp = world.predictions.splits["val"]
    rows = world.ev.outcome_rows(config)
    np.testing.assert_array_equal(pred, sp.pred[rows[expected], np.arange(world.ev.n)])
    scored = world.ev.evaluate(config)
    assert float((pred == sp.labels).mean()) == scored.accuracy
    assert tuple(out.exit_counts()) == scored.exit_counts


def test_stream_equals_batch_mode_row_by_row(world: World):
    model = world.model(CONFIGS["entropy-per-exit"](world))
    x = _val(world)
    streamed = model.predict(x, 32)
    batched = [model(x[i : i + 32]) for i in range(0, x.shape[0], 32)]
    assert torch.equal(streamed.exit_index, torch.cat([o.exit_index for o in batched]))
    torch.testing.assert_close(
        streamed.logits, torch.cat([o.logits for o in batched]), atol=1e-5, rtol=1e-5
    )
    assert torch.equal(streamed.prediction, streamed.logits.argmax(-1))


def test_open_stream_gives_every_sample_its_batch_mode_exit(world: World):
    """Batches pushed over time (a server's): every sample leaves once, at its batch-mode exit
    with its logits, and no later than the push after its own once expired."""
    from exitsearch.export.staged import OpenStream

    model = world.model(CONFIGS["confidence"](world))
    x = _val(world, 200)
    batched = model(x)
    stream = OpenStream(model, 16)
    sizes = [5, 16, 1, 30, 9, 16, 23]
    seen: dict[int, tuple[int, torch.Tensor]] = {}
    first = 0
    waited = 0
    with torch.inference_mode():
        for stamp, n in enumerate(sizes):
            left = stream.push(x[first : first + n], first, stamp)
            left += stream.expire(stamp)  # everything pushed before this one has left
            waited = max(waited, stream.in_flight)
            first += n
            for ids, logits, _, _, k in left:
                for j, i in enumerate(ids.tolist()):
                    assert i not in seen
                    seen[i] = (k, logits[j])
            assert all(i in seen for i in range(first - n))
        for ids, logits, _, _, k in stream.flush():
            seen.update((i, (k, logits[j])) for j, i in enumerate(ids.tolist()))
    assert waited > 0  # samples did wait for a later push's company
    assert sorted(seen) == list(range(first)) and stream.in_flight == 0
    exits = torch.tensor([seen[i][0] for i in range(first)])
    assert torch.equal(exits, batched.exit_index[:first])
    assert len(set(exits.tolist())) >= 3  # the samples spread over several exits
    torch.testing.assert_close(
        torch.stack([seen[i][1] for i in range(first)]),
        batched.logits[:first],
        atol=1e-5,
        rtol=1e-5,
    )


def test_every_stage_runs_on_full_batches_until_the_drain(world: World):
    """Each stage runs on ``batch_size`` samples; only the drain at the end may run it on fewer,
    at most once per stage (the queue holds fewer than ``batch_size`` by then)."""
    config = CONFIGS["confidence"](world)
    model = world.model(config)
    runs: list[tuple[int, int]] = []
    blocks = model.backbone.run_blocks

    def counted(tokens: torch.Tensor, start: int, stop: int) -> torch.Tensor:
        runs.append((start, tokens.shape[0]))
        return blocks(tokens, start, stop)

    model.backbone.run_blocks = counted  # type: ignore[method-assign]
    try:
        out = model.predict(_val(world), 16)
    finally:
        del model.backbone.run_blocks
    assert out.exit_counts().sum() == world.ev.n
    partial = Counter(start for start, n in runs if n != 16)
    assert all(n <= 16 for _, n in runs)
    assert all(count <= 1 for count in partial.values()), partial
    # the samples each stage saw are those that had not left before it
    idx = out.exit_index.numpy()
    for k, (start, _) in enumerate(model.segments):
        seen = sum(n for s, n in runs if s == start)
        assert seen == int((idx >= k).sum())


def test_stream_takes_an_iterable_of_batches_of_any_size(world: World):
    model = world.model(CONFIGS["patience"](world))
    x = _val(world, 100)
    loader = [x[:30], x[30:31], x[31:100]]
    out = model.predict(iter(loader), 8)
    ref = model.predict(x, 8)
    assert torch.equal(out.exit_index, ref.exit_index)
    assert torch.equal(out.prediction, ref.prediction)
    assert out.logits.shape == (100, world.backbone.num_classes)


def test_stream_without_early_exits_is_the_backbone(world: World):
    model = MultiExitModel(world.backbone, [], ExitConfig((), "confidence", ()))
    x = _val(world, 37)
    out = model.predict(x, 16)
    assert (out.exit_index == 0).all()
    with torch.inference_mode():
        torch.testing.assert_close(out.logits, world.backbone(x))


def test_stream_refuses_bad_inputs(world: World):
    model = world.model(ExitConfig(SPECS, "confidence", (0.5,) * 3))
    with pytest.raises(ConfigError, match="batch_size must be a positive integer"):
        model.predict(_val(world, 4), 0)
    with pytest.raises(ConfigError, match="got no inputs"):
        model.predict([], 4)
    with pytest.raises(DataError, match="images: not a readable image"):
        model.predict(["images"], 4)  # a string is a file path, and there is no such file
    with pytest.raises(ConfigError, match=r"got Tensor\(4, 784\)"):
        model.predict(torch.zeros(4, 784), 4)
