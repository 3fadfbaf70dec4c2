"""On a real 2-node Ray cluster (two ``ray start`` on this machine): head training sharded over
the nodes, latency and bench runs per node, and a pause-configuration search that loses its
worker node in the middle and still finishes with the front of a run without the failure.

The tests share one module-scoped cluster and run in file order; the last one kills the
worker node.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pytest
import ray
import torch
from dist_world import PAUSE_DATA, PAUSE_TINY, WORKER_RESOURCE, RayWorld
from optuna.trial import TrialState

from exitsearch.backbone import create_backbone
from exitsearch.core.config import ExitConfig
from exitsearch.data import DataSpec, load_splits
from exitsearch.distributed import (
    DeviceJob,
    PauseSearchSettings,
    PauseSpace,
    RayExecutor,
    bench_on_cluster,
    connect,
    front_table,
    profile_latency_on_cluster,
    ray_cluster,
    run_pause_search,
    shard_by_location,
    shard_jobs,
    train_heads_sharded,
    train_shard_task,
)
from exitsearch.export import export_bundle
from exitsearch.heads import HeadSpec
from exitsearch.pausing import run_pause_job
from exitsearch.search.storage import open_storage
from exitsearch.training import HeadBank, HeadTrainConfig
from exitsearch.training.head_training import SUMMARY, WEIGHTS

pytestmark = pytest.mark.ray

# Ray pickles functions of importable modules by name; this test module is not importable on
# the workers, so its functions travel by value.
ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])

HEADS_TINY = {**PAUSE_TINY, "patch_size": 7, "depth": 4}  # 16 patches, 4 blocks
HEADS_DATA = DataSpec(limit=128)
SPECS = [HeadSpec("linear", 1), HeadSpec("linear", 2), HeadSpec("mlp", 2), HeadSpec("linear", 3)]
TRAINING = HeadTrainConfig(epochs=2, batch_size=32, lr=3e-3)


def test_connects_by_address(ray_world: RayWorld):
    info = ray_world.info
    assert (info.nodes, info.cpus) == (2, 2.0)
    assert info.driver_node == ray_world.head_id != ray_world.worker_id
    # already connected: connecting again and a nested block keep the connection
    assert connect(ray_world.cluster.address).nodes == 2
    with ray_cluster(ray_world.cluster.address) as again:
        assert again is not None and again.nodes == 2
    assert ray.is_initialized()


def test_tasks_take_a_gpu_only_where_the_cluster_has_one(ray_world: RayWorld):
    from exitsearch.distributed.cluster import ClusterError, task_device

    assert ray.cluster_resources().get("GPU", 0) == 0  # this test cluster has none
    assert task_device("auto") == "cpu"
    assert task_device("cpu") == "cpu"
    for asked in ("cuda", "cuda:1"):  # a GPU task on a cluster without one would wait forever
        with pytest.raises(ClusterError, match=r"has no GPU; use --device cpu$"):
            task_device(asked)


@pytest.fixture(scope="module")
def sharded(ray_world: RayWorld, fmnist, tmp_path_factory):
    torch.manual_seed(1)
    backbone = create_backbone("vit_tiny_patch16_224", **HEADS_TINY)
    splits = load_splits(HEADS_DATA, 28, 1)
    out = tmp_path_factory.mktemp("sharded")
    result = train_heads_sharded(backbone, HEADS_DATA, splits, SPECS, TRAINING, out, shards=2)
    return backbone, splits, result, out


def test_sharded_heads_equal_their_shards_trained_alone(sharded, ray_world: RayWorld):
    backbone, splits, result, out = sharded
    groups = shard_by_location(SPECS, 2)
    assert [[s.key for s in g] for g in groups] == [["linear@1", "linear@2", "mlp@2"], ["linear@3"]]
    # the same shards trained in this process, one after the other
    serial = [
        train_shard_task(job) for job in shard_jobs(backbone, HEADS_DATA, splits, groups, TRAINING)
    ]
    from exitsearch.distributed import merge_shards

    bank, statuses = merge_shards(backbone, SPECS, serial)
    for key, value in bank.state_dict().items():
        assert torch.equal(value, result.bank.state_dict()[key]), key
    assert [s.key for s in result.statuses] == [s.key for s in SPECS]
    assert [s.best_acc for s in result.statuses] == [s.best_acc for s in statuses]
    # written like train_heads: the pipeline loads it as any trained bank
    loaded = HeadBank(SPECS, result.bank.ctx)
    loaded.load(out / WEIGHTS)
    assert all(torch.equal(v, result.bank.state_dict()[k]) for k, v in loaded.state_dict().items())
    from exitsearch._io import read_json

    summary = read_json(out / SUMMARY)
    nodes = {s["node"] for s in summary["shards"]}
    assert nodes == {ray_world.head_id, ray_world.worker_id}  # one shard per 1-CPU node


def test_latency_and_bench_run_where_their_resources_are(sharded, ray_world: RayWorld, tmp_path):
    backbone, _, result, _ = sharded
    tables = profile_latency_on_cluster(
        backbone,
        [DeviceJob("cpu", 1), DeviceJob("cpu", 4, {WORKER_RESOURCE: 1})],
        warmup=1,
        repeats=2,
        threads=1,
    )
    assert [t.batch_size for t, _ in tables] == [1, 4]
    assert all(len(t.block_ms) == 4 and t.full_ms > 0 for t, _ in tables)
    assert tables[1][1] == ray_world.worker_id  # pinned by the custom resource
    assert {node for _, node in tables} <= {ray_world.head_id, ray_world.worker_id}

    exits = (SPECS[0], SPECS[3])
    config = ExitConfig(exits, "confidence", (0.3, 0.3), "shared")
    bundle = export_bundle(tmp_path / "bundle", backbone, result.bank, config)
    reports = bench_on_cluster(
        bundle,
        [DeviceJob("cpu", resources={WORKER_RESOURCE: 1})],
        (2,),
        repeats=2,
        warmup=1,
        threads=1,
    )
    (report,) = reports
    assert report["node_id"] == ray_world.worker_id
    batch, stream = report["rows"]
    assert (batch["mode"], stream["mode"]) == ("batch", "stream")
    for row in (batch, stream):
        assert row["batch_size"] == 2 and row["model_ms"] > 0 and sum(row["exit_counts"]) == 4


TINY_RUN = [
    "--model",
    "vit_tiny_patch16_224",
    *("-o", "img_size=28", "-o", "patch_size=7", "-o", "in_chans=1", "-o", "num_classes=10"),
    *("-o", "embed_dim=32", "-o", "depth=4", "-o", "num_heads=2"),
    *("--limit", "300", "--head-epochs", "1", "--n-trials", "30", "--space", "multiexit-vit"),
]


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_exitsearch_run_trains_the_heads_on_the_cluster(ray_world: RayWorld, fmnist, tmp_path):
    from exitsearch_cli.main import app
    from typer.testing import CliRunner

    from exitsearch._io import read_json

    args = [
        "run",
        *TINY_RUN,
        "--run",
        str(tmp_path / "run"),
        "--json",
        "--ray-address",
        ray_world.cluster.address,
    ]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 0, res.output
    (heads_dir,) = (tmp_path / "run" / "cache").glob("heads-*")
    shards = read_json(heads_dir / SUMMARY)["shards"]
    assert len(shards) == 2  # one per CPU of the cluster
    assert {s["node"] for s in shards} == {ray_world.head_id, ray_world.worker_id}
    front = json.loads(res.stdout.strip().splitlines()[-1])["front"]
    again = CliRunner().invoke(app, args)  # the sharded bank is reused
    assert again.exit_code == 0 and "reusing 21 heads trained in 2 shards" in again.output
    assert json.loads(again.stdout.strip().splitlines()[-1])["front"] == front
    assert ray.is_initialized()  # the test's own connection is kept


# ------------------------------------------------------------------ lost node
def slow_pause_job(marks: str, job: Any) -> dict[str, Any]:
    """``run_pause_job`` that first leaves a mark ``<trial>-<node id>`` and waits a little, so
    that a node can be killed while it holds trials."""
    from exitsearch.distributed import node_id

    (Path(marks) / f"{job.label}-{node_id()}").touch()
    time.sleep(0.5)
    return run_pause_job(job)


def _trials(result) -> list[tuple[Any, ...]]:
    return [(t["number"], t["state"], t["params"], t["metric"], t["flops"]) for t in result.trials]


def test_pause_search_survives_losing_a_node(ray_world: RayWorld, paumer_dir, tmp_path):
    space = PauseSpace.for_depth(6, min_layer=2, taus=(0.0, 0.3, 0.6))
    settings = PauseSearchSettings(n_trials=16, population_size=4, seed=3)
    reference = run_pause_search(paumer_dir, PAUSE_DATA, space, settings, budget="85%")

    marks = tmp_path / "marks"
    marks.mkdir()
    db = tmp_path / "study.db"
    killed: dict[str, Any] = {}

    def kill_worker_mid_trial() -> None:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline:
            # a trial of the second round or later has just started on the worker
            late = [
                m
                for m in marks.iterdir()
                if m.name.endswith(ray_world.worker_id)
                and int(m.name.split("-")[0]) >= settings.population_size
            ]
            if late:
                # kill first: the trial must still be running when its node goes
                ray_world.cluster.kill_node(ray_world.worker)
                killed["trial"] = int(late[0].name.split("-")[0])
                # nothing is told before the lost trial's round is whole again
                study = optuna.load_study(study_name="lost-node", storage=open_storage(db))
                killed["complete"] = {
                    t.number: t.values for t in study.get_trials(states=(TrialState.COMPLETE,))
                }
                return
            time.sleep(0.02)

    killer = threading.Thread(target=kill_worker_mid_trial, daemon=True)
    killer.start()
    result = run_pause_search(
        paumer_dir,
        PAUSE_DATA,
        space,
        settings,
        budget="85%",
        executor=RayExecutor(runner=partial(slow_pause_job, str(marks)), max_retries=3),
        storage=open_storage(db),
        study_name="lost-node",
    )
    killer.join(timeout=5)

    assert "trial" in killed, "the worker node never ran a trial of a later round"
    lost = killed["trial"]
    assert (marks / f"{lost}-{ray_world.head_id}").exists(), "the lost trial was not retried"
    assert next(t for t in result.trials if t["number"] == lost)["node"] == ray_world.head_id
    # the study completed: every trial, none failed, none duplicated
    assert result.n_trials == settings.n_trials and result.n_failed == 0
    assert [t["number"] for t in result.trials] == list(range(settings.n_trials))
    # no trial finished before the loss was lost or changed
    after = {t["number"]: [t["metric"], t["flops"] / reference.full_flops] for t in result.trials}
    assert killed["complete"] and all(
        np.allclose(v, after[n], rtol=0, atol=0) for n, v in killed["complete"].items()
    )
    # the same seed gives the same trials and front as the run without failure
    assert _trials(result) == _trials(reference)
    assert front_table(result) == front_table(reference) and result.front
    assert set(result.nodes) == {ray_world.head_id, ray_world.worker_id}
