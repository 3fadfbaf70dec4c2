"""Sharding classifier-wise head training by location group, and merging shards into one bank
(in process; the same on a cluster is in test_distributed_ray.py)."""

from __future__ import annotations

import pytest
import torch
from dist_world import PAUSE_TINY

from exitsearch.backbone import create_backbone
from exitsearch.data import DataSpec, load_splits
from exitsearch.distributed import merge_shards, shard_by_location, shard_jobs, train_shard_task
from exitsearch.errors import ConfigError, DataError
from exitsearch.heads import HeadSpec
from exitsearch.training import HeadTrainConfig, train_heads

TINY = {**PAUSE_TINY, "patch_size": 7, "depth": 4}
DATA = DataSpec(limit=128)
SPECS = [HeadSpec("linear", 1), HeadSpec("mlp", 1), HeadSpec("linear", 2), HeadSpec("linear", 3)]
TRAINING = HeadTrainConfig(epochs=1, batch_size=32, lr=3e-3)


@pytest.mark.parametrize("shards", [1, 2, 3, 4, 9])
def test_shards_are_whole_contiguous_location_groups(shards):
    specs = [HeadSpec(t, m) for m in range(1, 12) for t in ("linear", "mlp") if m % 3 or t == "mlp"]
    groups = shard_by_location(specs, shards)
    assert len(groups) == min(shards, 11)
    flat = [s for g in groups for s in g]
    assert len(flat) == len(specs) and sorted(flat, key=specs.index) == specs  # each head once
    spans = [sorted({s.location for s in g}) for g in groups]
    assert all(span == list(range(span[0], span[-1] + 1)) for span in spans)  # contiguous
    assert [m for span in spans for m in span] == list(range(1, 12))  # each location once
    for g in groups:  # heads keep their order within a shard
        assert g == [s for s in specs if s in g]
    sizes = [len(g) for g in groups]
    assert max(sizes) - min(sizes) <= 2  # balanced up to one location's heads


def test_sharding_rejects_nonsense():
    with pytest.raises(ConfigError, match="shards >= 1"):
        shard_by_location(SPECS, 0)
    with pytest.raises(ConfigError, match="no heads"):
        shard_by_location([], 2)


@pytest.fixture(scope="module")
def world(fmnist):
    torch.manual_seed(1)
    backbone = create_backbone("vit_tiny_patch16_224", **TINY)
    return backbone, load_splits(DATA, 28, 1)


def test_merged_shards_are_the_shards_trained_alone(world, tmp_path):
    backbone, splits = world
    groups = shard_by_location(SPECS, 2)
    results = [train_shard_task(j) for j in shard_jobs(backbone, DATA, splits, groups, TRAINING)]
    assert {r["node_id"] for r in results} == {"local"}
    bank, statuses = merge_shards(backbone, SPECS, results)
    assert [s.key for s in bank.specs] == [s.key for s in SPECS] == [st.key for st in statuses]
    for i, group in enumerate(groups):
        alone = train_heads(backbone, splits, group, TRAINING, tmp_path / f"shard{i}").bank
        for spec, head in alone:
            merged = bank.head(spec.key).state_dict()
            assert all(torch.equal(v, merged[k]) for k, v in head.state_dict().items()), spec.key
    with pytest.raises(ConfigError, match="no shard trained"):
        merge_shards(backbone, SPECS, results[:1])
    with pytest.raises(ConfigError, match="two shards"):
        merge_shards(backbone, SPECS, [*results, results[0]])


def test_a_node_with_other_data_refuses_the_shard(world):
    backbone, splits = world
    (job,) = shard_jobs(backbone, DATA, splits, [SPECS[:1]], TRAINING)
    other = DataSpec(limit=64).to_dict()
    with pytest.raises(DataError, match="different data"):
        train_shard_task(job.__class__(**{**job.__dict__, "data": other}))


def test_sharded_heads_equal_the_joint_training(world, tmp_path):
    backbone, splits = world
    joint = train_heads(backbone, splits, SPECS, TRAINING, tmp_path / "joint").bank
    groups = shard_by_location(SPECS, 2)
    results = [train_shard_task(j) for j in shard_jobs(backbone, DATA, splits, groups, TRAINING)]
    bank, _ = merge_shards(backbone, SPECS, results)
    for key, value in joint.state_dict().items():
        assert torch.equal(value, bank.state_dict()[key]), key
