"""Head training in memory groups: the plan, and groups training every head exactly as one group."""

from __future__ import annotations

import itertools

import pytest
import torch

from exitsearch._io import read_json
from exitsearch.backbone import create_backbone
from exitsearch.data import DataSpec, load_splits
from exitsearch.device import resolve_device
from exitsearch.errors import ConfigError
from exitsearch.heads import HeadContext, HeadSpec
from exitsearch.heads.bank import HeadBank
from exitsearch.progress import NullProgress
from exitsearch.training import HeadTrainConfig, train_heads
from exitsearch.training.groups import activation_bytes, plan_head_groups

TINY = {
    "img_size": 28,
    "patch_size": 7,
    "in_chans": 1,
    "num_classes": 10,
    "embed_dim": 32,
    "depth": 4,
    "num_heads": 2,
}
SPECS = [
    HeadSpec("linear", 1),
    HeadSpec("mlp", 1),
    HeadSpec("vit", 2),
    HeadSpec("linear", 2),
    HeadSpec("cnn_add", 3),
    HeadSpec("mlp", 4),
]
TRAINING = HeadTrainConfig(epochs=2, batch_size=32, lr=3e-3, early_stop_patience=1)
CPU = resolve_device("cpu")


class Log(NullProgress):
    def __init__(self, stop_at: str | None = None) -> None:
        self.lines: list[str] = []
        self.stop_at = stop_at

    def log(self, message: str) -> None:
        self.lines.append(message)
        if self.stop_at is not None and message.startswith(self.stop_at):
            raise KeyboardInterrupt


@pytest.fixture(scope="module")
def world(fmnist):
    torch.manual_seed(1)
    backbone = create_backbone("vit_tiny_patch16_224", **TINY)
    return backbone, load_splits(DataSpec(limit=128), 28, 1)


def _bank(backbone):
    return HeadBank(SPECS, HeadContext.from_backbone(backbone), seed=0)


def _limit_for_groups(backbone, n: int) -> int:
    """A limit just large enough for the costliest group of ``n`` heads (by location)."""
    bank = _bank(backbone)
    plans = [
        plan_head_groups(backbone, bank, TRAINING.batch_size, CPU, limit=1 << 40, fixed=fixed)
        for fixed in ([list(range(k, min(k + n, 6)))] for k in range(0, 6, n))
    ]
    return max(p.group_bytes[0] for p in plans) + plans[0].shared_bytes


def test_activation_estimate_is_per_sample_and_counts_no_weights(world):
    backbone, _ = world
    bank = _bank(backbone)
    dim, tokens = backbone.embed_dim, backbone.num_tokens
    for spec, head in bank:
        two = activation_bytes(head, torch.zeros(2, tokens, dim))
        four = activation_bytes(head, torch.zeros(4, tokens, dim))
        assert two > 0, spec.key
        assert abs(four - two) <= two * 0.05 + 64, spec.key  # per sample, whatever the batch
    # A linear head over the class token keeps only what its loss and pooling need, far less
    # than its weight matrix; a ViT head keeps at least its attention maps.
    linear = activation_bytes(bank.head(SPECS[0].key), torch.zeros(2, tokens, dim))
    vit = activation_bytes(bank.head(SPECS[2].key), torch.zeros(2, tokens, dim))
    assert vit > linear
    assert vit >= tokens * tokens * 4


def test_planning_leaves_heads_and_the_random_state_alone(world):
    backbone, _ = world
    bank = _bank(backbone)
    before = {k: v.clone() for k, v in bank.state_dict().items()}
    rng = torch.get_rng_state()
    plan_head_groups(backbone, bank, 32, CPU, limit=1 << 40)
    assert torch.equal(torch.get_rng_state(), rng)
    after = bank.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_plan_packs_heads_by_location_within_the_limit(world):
    backbone, _ = world
    bank = _bank(backbone)
    one = plan_head_groups(backbone, bank, 32, CPU, limit=1 << 40)
    assert len(one) == 1 and sorted(one.groups[0]) == list(range(len(SPECS)))
    limit = _limit_for_groups(backbone, 2)
    plan = plan_head_groups(backbone, bank, 32, CPU, limit=limit)
    assert 2 <= len(plan) < len(SPECS)
    assert sorted(i for g in plan.groups for i in g) == list(range(len(SPECS)))
    assert all(b + plan.shared_bytes <= limit for b in plan.group_bytes)
    spans = [[SPECS[i].location for i in g] for g in plan.groups]
    assert all(max(a) <= min(b) for a, b in itertools.pairwise(spans))  # by location
    assert f"{len(plan)} groups" in plan.describe(SPECS)
    with pytest.raises(ConfigError, match=r"alone needs an estimated .* --head-memory$"):
        plan_head_groups(backbone, bank, 32, CPU, limit=plan.shared_bytes + 1)


def test_groups_train_every_head_exactly_as_one_group(world, tmp_path):
    backbone, splits = world
    joint_log, grouped_log = Log(), Log()
    joint = train_heads(backbone, splits, SPECS, TRAINING, tmp_path / "one", progress=joint_log)
    limit = _limit_for_groups(backbone, 2)
    grouped = train_heads(
        backbone, splits, SPECS, TRAINING, tmp_path / "groups", progress=grouped_log, memory=limit
    )
    assert "in one group" in "\n".join(joint_log.lines)
    plan_line = next(line for line in grouped_log.lines if "groups on" in line)
    n = int(plan_line.split(" groups on")[0].rsplit(" ", 1)[1])
    assert n >= 2
    assert any(line.startswith(f"heads group {n}/{n} epoch 1:") for line in grouped_log.lines)
    for (spec, a), (_, b) in zip(joint.bank, grouped.bank, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), spec.key
    assert [s.history for s in joint.statuses] == [s.history for s in grouped.statuses]
    assert [s.state for s in joint.statuses] == [s.state for s in grouped.statuses]
    # Each group runs the backbone only as deep as its deepest head, once per batch of its own.
    assert grouped.backbone_passes > joint.backbone_passes
    summary = read_json(tmp_path / "groups" / "heads.json")
    assert summary["backbone_passes"] == grouped.backbone_passes


def test_an_interrupted_group_resumes_to_the_uninterrupted_heads(world, tmp_path):
    backbone, splits = world
    limit = _limit_for_groups(backbone, 2)
    whole = train_heads(backbone, splits, SPECS, TRAINING, tmp_path / "whole", memory=limit)
    out = tmp_path / "cut"
    with pytest.raises(KeyboardInterrupt):
        train_heads(
            backbone,
            splits,
            SPECS,
            TRAINING,
            out,
            progress=Log(stop_at="heads group 2/"),
            memory=limit,
        )
    saved = read_json(out / "checkpoint.json")
    assert saved["group"] == 1 and saved["epoch"] == 1
    log = Log()
    # A different limit on the rerun: the checkpoint's grouping is kept to resume its group.
    again = train_heads(backbone, splits, SPECS, TRAINING, out, progress=log, memory=1 << 40)
    n = len(saved["groups"])
    assert f"heads: resuming group 2 of {n} after epoch 1 of 2" in log.lines
    for (spec, a), (_, b) in zip(whole.bank, again.bank, strict=True):
        sa, sb = a.state_dict(), b.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa), spec.key
    assert [s.history for s in whole.statuses] == [s.history for s in again.statuses]
