"""train_paumer on tiny real ViTs and real Fashion-MNIST: steps, files, exact resume, errors."""

from __future__ import annotations

import math

import pytest
import torch

from exitsearch._io import file_sha256, read_json
from exitsearch.errors import CheckpointError, ConfigError, TrainingDivergedError
from exitsearch.pausing import PauseTrainConfig, build_paumer, load_paumer, train_paumer
from exitsearch.pausing.model import init_from_paumer, load_backbone_weights
from exitsearch.progress import NullProgress

CONFIG = PauseTrainConfig(epochs=2, batch_size=32, eval_batch_size=96, seed=3)


class _InterruptAt(NullProgress):
    """Presses Ctrl-C after ``step`` batches of the epoch whose task name starts ``task``."""

    def __init__(self, task: str, step: int) -> None:
        self.task, self.step, self.seen = task, step, 0

    def advance(self, task: str, steps: int = 1, **info: float | str) -> None:
        if task.startswith(self.task):
            self.seen += steps
            if self.seen >= self.step:
                raise KeyboardInterrupt


class _PoisonAt(NullProgress):
    """Writes inf into the auxiliary decoder when epoch ``task`` starts, after recording the
    checkpoint on disk at that moment."""

    def __init__(self, model, task: str, ckpt) -> None:
        self.model, self.task, self.ckpt = model, task, ckpt
        self.hash_before: str | None = None

    def start(self, task: str, total: int | None) -> None:
        if task.startswith(self.task):
            self.hash_before = file_sha256(self.ckpt)
            with torch.no_grad():
                self.model.vit.aux.fc.weight.fill_(math.inf)


def _model(make, task: str = "classification", seed: int = 0):
    bb = make(seed)
    torch.manual_seed(seed)
    return build_paumer(bb, task, {"depth": 1} if task == "segmentation" else {})


def _same(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


@pytest.mark.parametrize(
    ("task", "mode"),
    [("classification", "entropy"), ("segmentation", "random"), ("segmentation", "none")],
)
def test_training_steps_run_and_save_a_loadable_model(
    tmp_path, make_pause_tiny, pause_splits, task, mode
):
    model = _model(make_pause_tiny, task)
    start = _model(make_pause_tiny, task)
    cfg = PauseTrainConfig(mode=mode, epochs=1, batch_size=32, eval_batch_size=96)
    meta = train_paumer(model, pause_splits, cfg, tmp_path, command="test")
    h = meta["history"][0]
    assert math.isfinite(h["train_loss"]) and 0.0 <= h["val_metric"] <= 1.0
    assert meta["metric"] == ("accuracy" if task == "classification" else "mIoU")
    assert meta["layer_range"] == [3, 5]
    if mode == "none":
        assert h["train_aux_loss"] == 0.0 and "val_metric_probe" not in h
    else:
        assert h["train_aux_loss"] > 0.0 and h["probe"] == "4:0.5"
    assert not _same(model, start)  # it learned something
    loaded = load_paumer(tmp_path)
    assert _same(loaded, model)
    assert read_json(tmp_path / "paumer.json")["command"] == "test"


def test_resume_is_exact(tmp_path, make_pause_tiny, pause_splits):
    straight = _model(make_pause_tiny)
    train_paumer(straight, pause_splits, CONFIG, tmp_path / "straight")

    out = tmp_path / "resumed"
    with pytest.raises(KeyboardInterrupt):
        train_paumer(
            _model(make_pause_tiny), pause_splits, CONFIG, out, progress=_InterruptAt("epoch 2", 1)
        )
    assert read_json(out / "train_state.json")["epoch"] == 1
    resumed = _model(make_pause_tiny)
    meta = train_paumer(resumed, pause_splits, CONFIG, out)
    assert _same(resumed, straight)
    untimed = lambda hist: [{k: v for k, v in h.items() if k != "seconds"} for h in hist]  # noqa: E731
    assert untimed(meta["history"]) == untimed(
        read_json(tmp_path / "straight" / "paumer.json")["history"]
    )


def test_another_training_in_the_same_folder_is_refused(tmp_path, make_pause_tiny, pause_splits):
    cfg = PauseTrainConfig(epochs=1, batch_size=48)
    train_paumer(_model(make_pause_tiny), pause_splits, cfg, tmp_path)
    with pytest.raises(ConfigError, match="another training"):
        train_paumer(
            _model(make_pause_tiny),
            pause_splits,
            PauseTrainConfig(epochs=1, batch_size=48, mode="random"),
            tmp_path,
        )


def test_divergence_keeps_the_last_good_checkpoint(tmp_path, make_pause_tiny, pause_splits):
    model = _model(make_pause_tiny)
    poison = _PoisonAt(model, "epoch 2", tmp_path / "last.safetensors")
    with pytest.raises(TrainingDivergedError, match=r"epoch 2, step 1.*checkpoint of epoch 1"):
        train_paumer(model, pause_splits, CONFIG, tmp_path, progress=poison)
    assert file_sha256(tmp_path / "last.safetensors") == poison.hash_before
    assert read_json(tmp_path / "train_state.json")["epoch"] == 1


def test_bad_settings_are_config_errors(make_pause_tiny, pause_splits, tmp_path):
    with pytest.raises(ConfigError, match="unknown training mode"):
        PauseTrainConfig(mode="gumbel")
    with pytest.raises(ConfigError, match="fraction_low"):
        PauseTrainConfig(fraction_low=0.9, fraction_high=0.2)
    with pytest.raises(ConfigError, match=r"layer_high <= 5"):
        train_paumer(
            _model(make_pause_tiny), pause_splits, PauseTrainConfig(layer_high=6), tmp_path
        )


def test_start_weights_from_backbone_files_and_paumer_models(
    tmp_path, make_pause_tiny, pause_splits
):
    from exitsearch._io import save_safetensors

    donor = make_pause_tiny(seed=5)
    # a `backbone train` checkpoint: model.* tensors next to optimiser state
    ckpt = {f"model.{k}": v for k, v in donor.model.state_dict().items()}
    save_safetensors(tmp_path / "last.safetensors", {**ckpt, "opt.0.step": torch.zeros(())})
    bb = make_pause_tiny(seed=0)
    load_backbone_weights(bb, tmp_path / "last.safetensors")
    assert _same(bb.model, donor.model)
    with pytest.raises(CheckpointError, match="does not fit"):
        load_backbone_weights(make_pause_tiny(embed_dim=16), tmp_path / "last.safetensors")
    # a saved PAUMER model of the same task starts another training
    seg = _model(make_pause_tiny, "segmentation", seed=2)
    seg.save(tmp_path / "seg")
    other = _model(make_pause_tiny, "segmentation", seed=0)
    init_from_paumer(other, tmp_path / "seg")
    assert _same(other, seg)
    with pytest.raises(CheckpointError, match="cannot start"):
        init_from_paumer(_model(make_pause_tiny), tmp_path / "seg")
