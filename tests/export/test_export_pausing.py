"""The exported runtime with patch pausing decides exactly what the cached evaluation predicted.

A tiny real PAUMER classification model (4 blocks, 49 patch tokens of 4 px, width 32), three
heads trained briefly on its frozen backbone, their predictions under a pause configuration
(:func:`predict_under_pause`, the cache the search scores), block costs on the tokens really
processed: the runtime's exit index and prediction of every validation sample must equal the
evaluator's, at every batch size, and its FLOPs per exit the cost model's.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from exitsearch.core.config import ExitConfig
from exitsearch.core.costs import CostModel
from exitsearch.data import DataSpec, iterate_batches, load_splits
from exitsearch.errors import BundleError, ConfigError
from exitsearch.export import MultiExitModel, export_bundle, load_bundle, read_manifest
from exitsearch.export.bundle import AUX_FILE
from exitsearch.export.costs import exit_costs
from exitsearch.heads import HeadContext, HeadSpec, profile_heads
from exitsearch.pausing import build_paumer, pause_cost, predict_under_pause
from exitsearch.pausing.costs import with_pauses
from exitsearch.profile import profile_backbone
from exitsearch.search.evaluator import Evaluator
from exitsearch.search.refine import shared_curve
from exitsearch.training import HeadTrainConfig, train_heads

TINY = {
    "img_size": 28,
    "patch_size": 4,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
}
SPECS = (HeadSpec("linear", 1), HeadSpec("mlp", 2), HeadSpec("linear", 3, uncertainty=True))
PAUSE = {1: 0.3, 2: 0.25}  # a pause before the second exit and one at it


class PauseWorld:
    def __init__(self, tmp) -> None:  # type: ignore[no-untyped-def]
        from exitsearch.backbone import create_backbone

        torch.manual_seed(0)
        self.model = build_paumer(create_backbone("vit_tiny_patch16_224", **TINY), "classification")
        self.model.eval()
        self.backbone = self.model.backbone
        self.aux = self.model.vit.aux
        self.splits = load_splits(DataSpec(limit=384))
        cfg = HeadTrainConfig(epochs=2, batch_size=64, lr=3e-3)
        self.bank = train_heads(self.backbone, self.splits, list(SPECS), cfg, tmp).bank.eval()
        self.preds = predict_under_pause(self.model, self.bank, self.splits, PAUSE, batch_size=100)
        ctx = HeadContext.from_backbone(self.backbone)
        flops = {k: c.flops for k, c in profile_heads(SPECS, ctx).items()}
        self.costs = with_pauses(
            CostModel(profile_backbone(self.backbone), flops), self.model, [PAUSE]
        )
        self.ev = Evaluator(self.preds, "val", self.costs)

    def runtime(self, config: ExitConfig) -> MultiExitModel:
        heads = [self.bank.head(s.key) for s in config.exits]
        return MultiExitModel(self.backbone, heads, config, aux_decoder=self.aux)

    def run_split(self, model, batch_size: int):  # type: ignore[no-untyped-def]
        data = self.splits.val
        idx_out = np.full(len(data), -1, np.int64)
        pred_out = np.full(len(data), -1, np.int64)
        transform = self.backbone.input_transform()
        for idx, x, _ in iterate_batches(data, batch_size):
            out = model(transform(x))
            idx_out[idx.numpy()] = out.exit_index.numpy()
            pred_out[idx.numpy()] = out.prediction.numpy()
        return idx_out, pred_out


@pytest.fixture(scope="module")
def pw(tmp_path_factory, fmnist) -> PauseWorld:  # type: ignore[no-untyped-def]
    torch.set_num_threads(1)
    return PauseWorld(tmp_path_factory.mktemp("pause-heads"))


def _spread(pw: PauseWorld, criterion: str, cut: bool = False, specs=SPECS) -> ExitConfig:  # type: ignore[no-untyped-def]
    base = ExitConfig(specs, criterion, (0.5,) * len(specs), "shared", cut=cut, pause=PAUSE)
    points = shared_curve(pw.ev, base)

    def score(p):  # type: ignore[no-untyped-def]
        counts = np.bincount(pw.ev.exit_index(p.config), minlength=len(specs) + 1)
        return int((counts >= 0.05 * pw.ev.n).sum()), -int(counts.max())

    config = max(points, key=score).config
    assert config.pause == PAUSE
    assert len(np.unique(pw.ev.exit_index(config))) >= 2, "thresholds should spread the samples"
    return config


@pytest.mark.parametrize("criterion", ["confidence", "patience"])
@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_paused_exits_and_predictions_match_the_cache(pw, criterion, batch_size):  # type: ignore[no-untyped-def]
    config = _spread(pw, criterion)
    expected = pw.ev.exit_index(config)
    idx, pred = pw.run_split(pw.runtime(config), batch_size)
    np.testing.assert_array_equal(idx, expected)
    sp = pw.preds.splits["val"]
    rows = pw.ev.outcome_rows(config)
    np.testing.assert_array_equal(pred, sp.pred[rows[expected], np.arange(pw.ev.n)])
    scored = pw.ev.evaluate(config)
    assert float((pred == sp.labels).mean()) == scored.accuracy
    assert tuple(np.bincount(idx, minlength=len(rows))) == scored.exit_counts


def test_a_cut_model_pauses_too(pw):  # type: ignore[no-untyped-def]
    config = _spread(pw, "confidence", cut=True)
    idx, _ = pw.run_split(pw.runtime(config), 32)
    np.testing.assert_array_equal(idx, pw.ev.exit_index(config))
    assert idx.max() < len(config.exits)


def test_without_early_exits_it_is_the_pausing_model(pw):  # type: ignore[no-untyped-def]
    model = pw.runtime(ExitConfig((), "confidence", (), pause=PAUSE))
    x = pw.backbone.input_transform()(torch.from_numpy(pw.splits.val.x[:9]))
    with torch.inference_mode():
        expected = pw.model.predict(x, PAUSE)
        torch.testing.assert_close(model(x).logits, expected)
        # and pausing changes the output (the test would prove nothing otherwise)
        assert not torch.allclose(expected, pw.model.predict(x, None))


def test_costs_are_the_cost_models_and_pausing_lowers_them(pw):  # type: ignore[no-untyped-def]
    config = _spread(pw, "confidence")
    model = pw.runtime(config)
    costs = model.costs
    assert costs.exit_flops == tuple(float(v) for v in pw.costs.exit_flops(config))
    assert costs == exit_costs(pw.backbone, config, pw.aux)
    plain = exit_costs(pw.backbone, replace(config, pause={}))
    # the first exit sits before the pauses; every later exit is cheaper under pausing
    assert costs.exit_flops[0] == plain.exit_flops[0]
    assert all(a < b for a, b in zip(costs.exit_flops[1:], plain.exit_flops[1:], strict=True))
    # the final exit pays the whole paused model (stem, blocks, decoders, head) plus the heads
    heads = sum(pw.costs.head_flops[s.key] for s in config.exits)
    assert costs.exit_flops[-1] == pause_cost(pw.model, PAUSE).total + heads
    assert model.token_counts() == pw.model.vit.token_counts(PAUSE)
    assert "pause 1:0.3,2:0.25" in model.describe()


def test_a_pause_configuration_needs_the_auxiliary_decoder(pw):  # type: ignore[no-untyped-def]
    config = ExitConfig(SPECS[:1], "confidence", (0.5,), pause=PAUSE)
    head = [pw.bank.head(SPECS[0].key)]
    with pytest.raises(ConfigError, match="auxiliary decoder"):
        MultiExitModel(pw.backbone, head, config)
    with pytest.raises(ConfigError, match=r"outside 1\.\.3"):
        MultiExitModel(pw.backbone, head, replace(config, pause={4: 0.2}), aux_decoder=pw.aux)


def test_the_bundle_carries_the_auxiliary_decoder(pw, tmp_path):  # type: ignore[no-untyped-def]
    config = _spread(pw, "confidence")
    path = export_bundle(tmp_path / "b", pw.backbone, pw.bank, config, aux_decoder=pw.aux)
    doc = read_manifest(path)
    assert AUX_FILE in doc["files"] and doc["pause"]["aux"] == AUX_FILE
    assert doc["config"]["pause"] == {"1": 0.3, "2": 0.25}
    assert doc["pause"]["tokens_per_block"] == [50, 35, 23, 23]
    loaded = load_bundle(path)
    assert loaded.pausing and loaded.aux is not None
    idx, _ = pw.run_split(loaded, 64)
    np.testing.assert_array_equal(idx, pw.ev.exit_index(config))
    # a bundle missing its decoder is refused, naming the file
    (path / AUX_FILE).unlink()
    with pytest.raises(BundleError, match=AUX_FILE):
        load_bundle(path)
    # without a decoder (and no run folder to find one in) there is nothing to export
    with pytest.raises(BundleError, match="auxiliary decoder"):
        export_bundle(tmp_path / "c", pw.backbone, pw.bank, config)
    with pytest.raises(ConfigError, match="ONNX"):
        export_bundle(tmp_path / "d", pw.backbone, pw.bank, config, aux_decoder=pw.aux, onnx=True)


@pytest.mark.parametrize("batch_size", [1, 7, 64])
def test_paused_stream_mode_matches_the_cache(pw, batch_size):  # type: ignore[no-untyped-def]
    """Stream mode concatenates samples that paused tokens earlier; their paused tokens and
    indices must travel with them."""
    config = _spread(pw, "patience")
    expected = pw.ev.exit_index(config)
    x = pw.backbone.input_transform()(torch.from_numpy(pw.splits.val.x))
    out = pw.runtime(config).predict(x, batch_size)
    np.testing.assert_array_equal(out.exit_index.numpy(), expected)
    sp = pw.preds.splits["val"]
    rows = pw.ev.outcome_rows(config)
    np.testing.assert_array_equal(
        out.prediction.numpy(), sp.pred[rows[expected], np.arange(pw.ev.n)]
    )
