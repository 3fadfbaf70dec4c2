"""Each strategy for one epoch: the registry, and exactly which parameters it changes."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from finetune_world import FAST, FinetuneWorld, Interrupt

from exitsearch.errors import ConfigError
from exitsearch.export import load_bundle
from exitsearch.finetune import (
    PAPER_STRATEGIES,
    MultiExitNet,
    create_strategy,
    list_strategies,
    load_checkpoint,
    train_configuration,
)
from exitsearch.finetune.base import Batch
from exitsearch.finetune.losses import (
    feature_kl,
    feature_mse,
    gram_mse,
    inplace_distillation,
    kd_loss,
    uncertainty_loss,
)
from exitsearch.finetune.mevit import sandwich_exits


def _net(bundle: Path) -> MultiExitNet:
    model = load_bundle(bundle)
    return MultiExitNet.from_heads(model.backbone, model.heads, model.config)


def _state(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str = "") -> bool:
    keys = [k for k in a if k.startswith(prefix)]
    assert keys, f"no parameters under {prefix!r}"
    return all(torch.equal(a[k], b[k]) for k in keys)


def _changed(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], prefix: str) -> bool:
    keys = [k for k in a if k.startswith(prefix) and a[k].is_floating_point()]
    assert keys, f"no parameters under {prefix!r}"
    return any(not torch.equal(a[k], b[k]) for k in keys)


def _train(world: FinetuneWorld, bundle: Path, name: str, tmp_path: Path, settings=FAST, **hp):  # type: ignore[no-untyped-def]
    net = _net(bundle)
    before = _state(net)
    log = train_configuration(net, create_strategy(name, hp), settings, world.splits, tmp_path)
    return net, before, _state(net), log


# ------------------------------------------------------------------------ registry
def test_registry_knows_the_papers_strategies():
    assert set(PAPER_STRATEGIES) <= set(list_strategies())


def test_unknown_strategy_lists_the_known_ones():
    with pytest.raises(ConfigError, match="unknown fine-tuning strategy 'sandwitch'; known: ") as e:
        create_strategy("sandwitch")
    assert all(name in str(e.value) for name in PAPER_STRATEGIES)


@pytest.mark.parametrize(
    ("name", "hp", "match"),
    [
        ("lgvit", {"alpah": 0.1}, "no hyperparameter 'alpah'; known: alpha, beta"),
        ("lgvit", {"gamma": 1.5}, "`0 <= gamma <= 1` must hold"),
        ("lgvit", {"temperature": 0}, "`temperature > 0` must hold"),
        ("lgvit", {"stage1": "both"}, "`stage1` must be one of alternating, objectives"),
        ("lgvit", {"stage1_epochs": 1.0}, "`stage1_epochs` must be an integer"),
        ("end-to-end", {"exit_weight": -1}, "`exit_weight >= 0` must hold"),
        ("end-to-end", {"exit_weights": "0.5"}, "`exit_weights` must be a list"),
        ("mevit", {"num_sampled": -1}, "`num_sampled >= 0` must hold"),
        ("mevit", {"distill_weight": "heavy"}, "`distill_weight` must be a number"),
        ("layer-wise", {"segment_epochs": 0}, "`segment_epochs >= 1` must hold"),
        ("classifier-wise", {"uncertainty_weight": float("nan")}, "must be finite"),
    ],
)
def test_hyperparameters_validate_themselves(name, hp, match):
    with pytest.raises(ConfigError, match=match):
        create_strategy(name, hp)


def test_hyperparameters_round_trip_through_a_dict():
    s = create_strategy("end-to-end", {"exit_weights": [1, 0.25]})
    assert s.hparams.exit_weights == (1.0, 0.25)
    again = create_strategy("end-to-end", s.hparams.to_dict())
    assert again.hparams == s.hparams
    assert dataclasses.asdict(create_strategy("lgvit").hparams)["gamma"] == 0.3


# ---------------------------------------------------------------- what each trains
def test_classifier_wise_leaves_the_backbone_bit_identical(ft_world, tmp_path):
    net, before, after, log = _train(ft_world, ft_world.mevit, "classifier-wise", tmp_path)
    assert _same(before, after, "backbone.")
    for k in range(net.num_exits):
        assert _changed(before, after, f"bank.heads.{k}.")
    assert log.epochs == 1 and len(log.history[0]["val_exit_accuracy"]) == 3
    assert {"ce0", "unc0", "ce2", "unc2"} <= set(log.history[0]["train"])


def test_end_to_end_trains_backbone_final_classifier_and_heads(ft_world, tmp_path):
    net, before, after, _ = _train(ft_world, ft_world.lgvit, "end-to-end", tmp_path)
    for prefix in ("backbone.model.blocks.0.", "backbone.model.blocks.3.", "backbone.model.head."):
        assert _changed(before, after, prefix)
    for k in range(net.num_exits):
        assert _changed(before, after, f"bank.heads.{k}.")


def test_end_to_end_loss_is_final_plus_weighted_exit_losses(ft_world):
    net = _net(ft_world.mevit).eval()
    strategy = create_strategy("end-to-end", {"exit_weights": [0.5, 0.25, 1.0]})
    x = net.backbone.input_transform()(torch.from_numpy(ft_world.splits.train.x[:16]))
    y = torch.from_numpy(ft_world.splits.train.y[:16]).long()
    terms = strategy.loss(net, Batch(x, y, 0, 0, 0, torch.Generator()))
    states = net.hidden_states(x)
    ce = torch.nn.functional.cross_entropy
    want = ce(net.final_logits(states), y)
    for k, w in enumerate((0.5, 0.25, 1.0)):
        logits = net.exit_logits(states, k)
        u = net.heads[k].uncertainty(logits.detach())
        target = net.heads[k].uncertainty.target(logits, y)
        want = want + w * (ce(logits, y) + torch.nn.functional.mse_loss(u, target))
    assert terms["loss"].item() == pytest.approx(want.item(), rel=1e-5)


def test_end_to_end_weights_must_fit_the_exits(ft_world, tmp_path):
    with pytest.raises(ConfigError, match="`exit_weights` has 2 values for 3 early exits"):
        _train(ft_world, ft_world.mevit, "end-to-end", tmp_path, exit_weights=[1, 1])


def test_layer_wise_freezes_earlier_segments(ft_world, tmp_path):
    source = _state(_net(ft_world.mevit))
    stem = ("backbone.model.cls_token", "backbone.model.pos_embed", "backbone.model.patch_embed.")
    seg1 = (*stem, "backbone.model.blocks.0.", "bank.heads.0.")
    later = ("backbone.model.blocks.1.", "backbone.model.blocks.3.", "backbone.model.head.")
    # Interrupted as segment 2 starts: the checkpoint holds the weights after segment 1.
    with pytest.raises(KeyboardInterrupt):
        train_configuration(
            _net(ft_world.mevit),
            create_strategy("layer-wise"),
            FAST,
            ft_world.splits,
            tmp_path / "b",
            progress=Interrupt("segment 2/4"),
        )
    after1 = load_checkpoint(tmp_path / "b")
    assert all(_changed(source, after1, p) for p in seg1)
    assert all(_same(source, after1, p) for p in later)
    assert _same(source, after1, "bank.heads.1.") and _same(source, after1, "bank.heads.2.")
    net = _net(ft_world.mevit)
    log = train_configuration(
        net, create_strategy("layer-wise"), FAST, ft_world.splits, tmp_path / "b"
    )
    final = _state(net)
    assert all(_same(after1, final, p) for p in seg1)
    assert all(_changed(after1, final, p) for p in later)
    assert [p["name"].split(" (")[0] for p in log.phases] == [f"segment {i}/4" for i in range(1, 5)]


def test_lgvit_stage2_leaves_backbone_and_final_classifier_identical(ft_world, tmp_path):
    alternating = {"stage1": "alternating"}
    source = _state(_net(ft_world.lgvit))
    with pytest.raises(KeyboardInterrupt):
        train_configuration(
            _net(ft_world.lgvit),
            create_strategy("lgvit", alternating),
            FAST,
            ft_world.splits,
            tmp_path,
            progress=Interrupt("stage 2"),
        )
    after1 = load_checkpoint(tmp_path)
    # stage 1 (alternating): backbone and final classifier move, the heads do not
    assert _changed(source, after1, "backbone.model.blocks.")
    assert _changed(source, after1, "backbone.model.head.")
    assert _same(source, after1, "bank.")
    net = _net(ft_world.lgvit)
    log = train_configuration(
        net, create_strategy("lgvit", alternating), FAST, ft_world.splits, tmp_path
    )
    final = _state(net)
    assert _same(after1, final, "backbone.")
    for k in range(4):
        assert _changed(after1, final, f"bank.heads.{k}.")
    assert sorted(k.split(".")[1] for k in final if k.startswith("aux.") and "conv" in k) == [
        "align0",
        "align1",
        "align2",
        "align3",
    ]
    terms = log.history[-1]["train"]
    assert all(terms[t] > 0 for t in ("pred", "hete", "homo_lph", "homo_gah"))
    assert any("homogeneous LPH" in n for n in log.notes)


def test_lgvit_alternating_stage1_moves_one_part_per_step(ft_world, tmp_path):
    # one step in stage 1 (a single batch of the 256 images): an even step, the backbone only
    one_step = dataclasses.replace(FAST, batch_size=256)
    source = _state(_net(ft_world.lgvit))
    with pytest.raises(KeyboardInterrupt):
        train_configuration(
            _net(ft_world.lgvit),
            create_strategy("lgvit", {"stage1": "alternating"}),
            one_step,
            ft_world.splits,
            tmp_path,
            progress=Interrupt("stage 2"),
        )
    after = load_checkpoint(tmp_path)
    assert _changed(source, after, "backbone.model.blocks.")
    assert _same(source, after, "backbone.model.head.") and _same(
        source, after, "backbone.model.norm."
    )


def test_lgvit_stage1_trains_heads_end_to_end_by_default(ft_world, tmp_path):
    assert create_strategy("lgvit").hparams.stage1 == "objectives"
    with pytest.raises(KeyboardInterrupt):
        train_configuration(
            _net(ft_world.lgvit),
            create_strategy("lgvit"),
            FAST,
            ft_world.splits,
            tmp_path,
            progress=Interrupt("stage 2"),
        )
    source = _state(_net(ft_world.lgvit))
    after = load_checkpoint(tmp_path)
    assert _changed(source, after, "bank.heads.0.") and _changed(
        source, after, "backbone.model.head."
    )


def test_lgvit_without_lph_or_gah_is_prediction_distillation_only(ft_world, tmp_path):
    _, _, after, log = _train(ft_world, ft_world.mevit, "lgvit", tmp_path)
    assert not any(k.startswith("aux.") for k in after)
    assert log.history[-1]["train"]["hete"] == 0.0
    assert any("prediction distillation only" in n for n in log.notes)
    with pytest.raises(ConfigError, match="has neither; use prediction_exits='all'"):
        _train(ft_world, ft_world.mevit, "lgvit", tmp_path / "p", prediction_exits="paper")


def test_mevit_trains_everything_and_distils_sampled_exits(ft_world, tmp_path):
    _, before, after, log = _train(ft_world, ft_world.mevit, "mevit", tmp_path)
    assert _changed(before, after, "backbone.model.blocks.0.")
    assert _changed(before, after, "backbone.model.head.")
    for k in range(3):
        assert _changed(before, after, f"bank.heads.{k}.")
    terms = log.history[0]["train"]
    assert {"ce_final", "ce0", "kl0", "unc0"} <= set(terms)
    assert {"kl1", "kl2"} & set(terms)  # the random draws reached other exits


def _batch(world: FinetuneWorld, net: MultiExitNet, phase: int, step: int = 0, seed: int = 0):  # type: ignore[no-untyped-def]
    x = net.backbone.input_transform()(torch.from_numpy(world.splits.train.x[:16]))
    y = torch.from_numpy(world.splits.train.y[:16]).long()
    return Batch(x, y, phase, step, 0, torch.Generator().manual_seed(seed))


def test_lgvit_stage2_loss_is_eq15_by_hand(ft_world):
    net = _net(ft_world.lgvit).eval()
    strategy = create_strategy("lgvit", {"alpha": 0.7, "beta": 0.2, "gamma": 0.4, "temperature": 3})
    strategy.bind(net)
    batch = _batch(ft_world, net, phase=1)
    terms = strategy.loss(net, batch)
    states = net.hidden_states(batch.x)
    teacher = net.final_logits(states)
    out = [net.heads[k].forward_with_feature_map(states[m - 1]) for k, m in enumerate((1, 2, 3, 4))]
    f_last = states[-1][:, 1:]  # the final block's patch tokens
    # M = {first LPH, last LPH, first GAH, last GAH} = exits 0, 1, 2, 3 here
    hete = sum(feature_kl(out[k][1], net.aux[f"align{k}"](f_last)) for k in range(4)) / 4
    homo = feature_mse(out[0][1], out[1][1]) + gram_mse(out[2][1], out[3][1])
    pred = sum(kd_loss(out[k][0], teacher, batch.y, 0.4, 3.0) for k in range(4))
    assert terms["hete"].item() == pytest.approx(hete.item(), rel=1e-5)
    assert (terms["homo_lph"] + terms["homo_gah"]).item() == pytest.approx(homo.item(), rel=1e-5)
    assert terms["loss"].item() == pytest.approx((0.7 * hete + 0.2 * homo + pred).item(), rel=1e-5)
    # the feature maps are the heads' own: the logits equal a plain forward
    for k in (0, 2):
        assert torch.equal(out[k][0], net.heads[k](states[k]))
        assert torch.equal(out[k][1], net.heads[k].feature_map(states[k]))
    assert out[2][1].shape == (16, 4, 32) and out[0][1].shape == (16, 16, 32)


def test_mevit_loss_is_the_sandwich_by_hand(ft_world):
    net = _net(ft_world.mevit).eval()
    strategy = create_strategy("mevit", {"num_sampled": 1, "distill_weight": 0.5})
    batch = _batch(ft_world, net, phase=0, seed=5)
    terms = strategy.loss(net, batch)
    drawn = sandwich_exits(3, 1, torch.Generator().manual_seed(5))
    states = net.hidden_states(batch.x)
    final = net.final_logits(states)
    ce = torch.nn.functional.cross_entropy
    want = ce(final, batch.y)
    for k in drawn:
        logits = net.exit_logits(states, k)
        want = want + ce(logits, batch.y) + 0.5 * inplace_distillation(logits, final)
        want = want + uncertainty_loss(net.heads[k].uncertainty, logits, batch.y)
    assert terms["loss"].item() == pytest.approx(want.item(), rel=1e-5)
    assert sorted(int(k[2:]) for k in terms if k.startswith("kl")) == drawn


def test_numbers_written_the_yaml_1_1_way_are_accepted():
    # PyYAML reads 1e-3 as a string; a recipe or --set alpha=1e-3 must still work
    assert create_strategy("lgvit", {"alpha": "1e-3"}).hparams.alpha == 0.001
