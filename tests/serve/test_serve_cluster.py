"""Serving on an existing Ray cluster: two ``ray start`` nodes on this machine, the bundle
shipped through the object store (no shared folder is assumed), one replica per node."""

from __future__ import annotations

import json
import urllib.request
from pathlib import Path

import pytest

from exitsearch.distributed.testing import LocalCluster, free_port, still_running
from exitsearch.errors import ConfigError
from exitsearch.serve import ServeOptions, start_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_replicas_on_two_nodes_answer_like_one(bundle: Path, pngs: list[bytes]):
    cluster = LocalCluster()
    try:
        address = cluster.start_head(num_cpus=1)
        cluster.add_node(num_cpus=1)
        server = start_server(
            bundle,
            ServeOptions(
                port=free_port(),
                ray_address=address,
                replicas=2,
                proxy_location="HeadOnly",  # both nodes are this machine: one port
            ),
        )
        try:
            answers = []
            for png in pngs[:12]:
                req = urllib.request.Request(
                    server.url + "/predict", data=png, headers={"Content-Type": "image/png"}
                )
                with urllib.request.urlopen(req, timeout=60) as r:
                    answers.append(json.loads(r.read()))
            from ray import serve

            states = serve.status().applications["exitsearch"].deployments["model"].replica_states
            # two running replicas of 1 CPU each on two nodes of 1 CPU each: one per node
            assert states.get("RUNNING") == 2, states
            with urllib.request.urlopen(server.url + "/metrics", timeout=60) as r:
                text = r.read().decode()
            replicas = {
                line.split('replica="')[1].split('"')[0]
                for line in text.splitlines()
                if line.startswith("exitsearch_operating_point{")
            }
            assert len(replicas) == 2  # both report into one /metrics
            assert "exitsearch_images_total 12" in text
            # one cluster, one application and one HTTP address: a second server is refused
            # in one line, and the first one goes on answering
            with pytest.raises(ConfigError, match="serves a model already"):
                start_server(bundle, ServeOptions(port=free_port(), ray_address=address))
            with urllib.request.urlopen(server.url + "/healthz", timeout=60) as r:
                assert json.loads(r.read())["status"] == "ok"
        finally:
            server.stop()
        import exitsearch

        model = exitsearch.load(bundle)
        import io

        from PIL import Image

        out = model.predict([Image.open(io.BytesIO(p)) for p in pngs[:12]])
        assert [a["label"] for a in answers] == out.prediction.tolist()
        assert [a["exit"] for a in answers] == out.exit_index.tolist()
        assert any((cluster.root / "node-cache").iterdir())  # the bundle was shipped
    finally:
        pids = [p for n in cluster.nodes for p in cluster.processes(n)]
        cluster.shutdown()
        assert not still_running(pids) and not cluster.stragglers()
