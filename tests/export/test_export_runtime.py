"""The runtime decides exactly what the cached evaluation predicted, sample by sample.

For each criterion (and a cut model) the thresholds come from ``shared_curve`` (midpoints
between neighbouring readiness values, so no sample sits on a threshold), and the runtime's exit
index and prediction of every validation sample must equal ``Evaluator.exit_index`` and the
cached prediction at that exit, whatever the batch size.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from export_world import CONFIGS, SPECS, World

from exitsearch.core.config import ExitConfig
from exitsearch.core.criteria import create_criterion
from exitsearch.errors import ConfigError
from exitsearch.export import MultiExitModel
from exitsearch.export.runtime import needs_history

BATCH_SIZES = (1, 7, 64)


@pytest.fixture(scope="module", params=sorted(CONFIGS))
def case(request, world: World):  # type: ignore[no-untyped-def]
    config = CONFIGS[request.param](world)
    expected = world.ev.exit_index(config)
    assert len(np.unique(expected)) >= 2, "the chosen thresholds should spread the samples"
    return config, expected


@pytest.mark.parametrize("batch_size", BATCH_SIZES)
def test_exits_and_predictions_match_the_cache(world: World, case, batch_size):  # type: ignore[no-untyped-def]
    config, expected = case
    model = world.model(config)
    idx, pred, _ = world.run_split(model, batch_size)
    np.testing.assert_array_equal(idx, expected)
    sp = world.predictions.splits["val"]
    rows = world.ev.outcome_rows(config)
    np.testing.assert_array_equal(pred, sp.pred[rows[expected], np.arange(world.ev.n)])
    scored = world.ev.evaluate(config)
    assert float((pred == sp.labels).mean()) == scored.accuracy
    assert tuple(np.bincount(idx, minlength=len(rows))) == scored.exit_counts


def test_exits_are_decided_per_sample_not_per_batch(world: World):
    """Ryu's trap: a batch-level exit leaves only when every sample is ready (1.00x)."""
    model = world.model(CONFIGS["confidence"](world))
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:64]))
    out = model(x)
    assert len(torch.unique(out.exit_index)) >= 2
    assert out.exit_counts().sum() == 64


def test_logits_are_those_of_the_exit_taken_in_input_order(world: World):
    config = CONFIGS["confidence"](world)
    model = world.model(config)
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:64]))
    out = model(x)
    with torch.inference_mode():
        states = world.backbone.hidden_states(x)
        per_exit = [world.bank.head(s.key)(states[s.location - 1]) for s in config.exits]
        per_exit.append(world.backbone.final_head(states[-1]))
    for i in range(64):
        ref = per_exit[int(out.exit_index[i])][i]
        torch.testing.assert_close(out.logits[i], ref, atol=1e-5, rtol=1e-5)
        assert int(out.prediction[i]) == int(ref.argmax())


def test_cut_model_never_runs_the_final_exit(world: World):
    config = CONFIGS["confidence-cut"](world)
    idx, _, _ = world.run_split(world.model(config), 64)
    assert idx.max() <= len(config.exits) - 1
    assert (idx == len(config.exits) - 1).any()


def test_patience_keeps_the_history_of_samples_in_flight(world: World):
    config = ExitConfig(SPECS, "patience", (1.0,) * 3)
    assert needs_history(create_criterion("patience"))
    assert not needs_history(create_criterion("confidence"))
    expected = world.ev.exit_index(config)
    for b in (5, 64):
        idx, _, _ = world.run_split(world.model(config), b)
        np.testing.assert_array_equal(idx, expected)


def test_works_under_inference_mode_and_no_grad(world: World):
    model = world.model(CONFIGS["patience"](world))
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:7]))
    with torch.inference_mode():
        a = model(x)
    with torch.no_grad():
        b = model.run(x)
    torch.testing.assert_close(a.logits, b.logits, rtol=0, atol=0)
    assert torch.equal(a.exit_index, b.exit_index)


def test_every_sample_leaving_at_once_and_none_leaving(world: World):
    model = world.model(ExitConfig(SPECS, "confidence", (0.0, 0.0, 0.0)))
    idx, _, _ = world.run_split(model, 64, limit=64)
    assert (idx == 0).all()
    model.set_thresholds((2.0, 2.0, 2.0))  # no probability reaches 2
    idx, _, logits = world.run_split(model, 64, limit=64)
    assert (idx == 3).all()
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:64]))
    with torch.inference_mode():
        torch.testing.assert_close(torch.from_numpy(logits), world.backbone(x))


def test_model_without_early_exits_is_the_backbone(world: World):
    model = MultiExitModel(world.backbone, [], ExitConfig((), "confidence", ()))
    x = world.backbone.input_transform()(torch.from_numpy(world.splits.val.x[:5]))
    out = model(x)
    assert (out.exit_index == 0).all() and out.num_outcomes == 1
    with torch.inference_mode():
        torch.testing.assert_close(out.logits, world.backbone(x))


@pytest.mark.parametrize(
    ("heads", "config", "message"),
    [
        (1, ExitConfig(SPECS[:2], "confidence", (0.5, 0.5)), "2 exits need 2 heads"),
        (3, ExitConfig(SPECS, "uncertainty", (0.5,) * 3), "cnn_ignore@3 have none"),
        (2, ExitConfig(SPECS[:2], "confidence", (0.5, 0.5), pause={2: 0.5}), "pause"),
    ],
)
def test_invalid_models_are_refused(world: World, heads, config, message):  # type: ignore[no-untyped-def]
    modules = [world.bank.head(s.key) for s in SPECS][:heads]
    with pytest.raises(ConfigError, match=message):
        MultiExitModel(world.backbone, modules, config)
