"""Fixtures of the distributed tests: a real 2-node Ray cluster, a real PostgreSQL server, and a
tiny real PAUMER model on real Fashion-MNIST.

The cluster is two ``ray start`` nodes on this machine (1 CPU each, own process groups, free
ports, a short folder under /tmp); the server is ``scripts/postgres.sh``'s, started only when it
is not running and then stopped again. Both are module-scoped and always ended in teardown.
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import optuna
import pytest
import torch
from dist_world import PAUSE_TINY, WORKER_RESOURCE, RayWorld

from exitsearch.backbone import create_backbone

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_SH = ROOT / "scripts" / "postgres.sh"


@pytest.fixture(autouse=True)
def quiet_optuna() -> Iterator[None]:
    before = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)
    yield
    optuna.logging.set_verbosity(before)


@pytest.fixture(scope="session")
def paumer_dir(tmp_path_factory: pytest.TempPathFactory, fmnist) -> Path:
    """A tiny segmentation PAUMER model with fixed random weights, saved as a model folder
    (mIoU varies finely with the pause configuration even untrained)."""
    from exitsearch.pausing import build_paumer

    torch.manual_seed(0)
    model = build_paumer(
        create_backbone("vit_tiny_patch16_224", **PAUSE_TINY), "segmentation", {"depth": 1}
    )
    return model.save(tmp_path_factory.mktemp("paumer") / "model")


# --------------------------------------------------------------------------- Ray
@pytest.fixture(scope="module")
def ray_world() -> Iterator[RayWorld]:
    """A head and one worker node (``ray start``, 1 CPU each), this process connected to the
    head by address. Everything started is killed in teardown, stragglers included."""
    from exitsearch.distributed import connect, disconnect
    from exitsearch.distributed.testing import LocalCluster, still_running

    cluster = LocalCluster()
    try:
        address = cluster.start_head(num_cpus=1)
        worker = cluster.add_node(num_cpus=1, resources={WORKER_RESOURCE: 1})
        info = connect(address)
        yield RayWorld(cluster, worker, info, info.driver_node, cluster.node_id(worker))
    finally:
        disconnect()
        pids = [p for n in cluster.nodes for p in cluster.processes(n)]
        cluster.shutdown()
        alive = still_running(pids)
        assert not alive and not cluster.stragglers(), f"cluster processes survived: {alive}"


# --------------------------------------------------------------------- PostgreSQL
def _postgres(cmd: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["bash", str(POSTGRES_SH), cmd], capture_output=True, text=True, timeout=300
    )


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    """The URL of scripts/postgres.sh's server, started here when it was not running (and then
    stopped in teardown)."""
    running = _postgres("url")
    started = running.returncode != 0
    res = _postgres("start") if started else running
    if res.returncode != 0:
        pytest.fail(f"scripts/postgres.sh start failed: {res.stderr.strip()}")
    try:
        yield res.stdout.strip().splitlines()[-1]
    finally:
        if started:
            _postgres("stop")
