"""Serving on an existing Ray cluster: two ``ray start`` nodes on this machine, the bundle
shipped through the object store (no shared folder is assumed), one replica per node."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
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


class _Cli:
    """``exitsearch serve`` in a process of its own, its stderr lines collected as they come."""

    def __init__(self, *args: str, env: dict[str, str]) -> None:
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).with_name("exitsearch")), "serve", *args],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
            # as from a terminal: SIGHUP not ignored, whether or not this runs under nohup
            preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_DFL),
        )
        self.lines: list[str] = []
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.append(line.rstrip("\n"))

    def wait_for(self, text: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in line for line in self.lines):
            assert self.proc.poll() is None, self.lines
            assert time.monotonic() < deadline, self.lines
            time.sleep(0.05)

    def end(self, timeout: float = 90.0) -> tuple[int, str]:
        rc = self.proc.wait(timeout=timeout)
        self._reader.join(timeout=10)
        return rc, "\n".join(self.lines)


def _health(port: int) -> int | None:
    """``GET /healthz``'s status on ``port``, None when nothing listens there."""
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=30) as r:
            return r.status
    except urllib.error.HTTPError as exc:
        return exc.code
    except (urllib.error.URLError, ConnectionError):
        return None


def test_a_server_stopped_any_way_leaves_no_model_on_the_cluster(bundle: Path, pngs: list[bytes]):
    """SIGTERM while starting takes off what was deployed; a server killed outright leaves its
    model on the cluster (nothing can stop it there), and the next server takes it off; SIGHUP
    (a closed terminal) stops a server as SIGTERM does, and a second signal while it waits for
    a request in flight takes the model off the cluster at once."""
    cluster = LocalCluster()
    try:
        address = cluster.start_head(num_cpus=2)
        env = cluster.env
        # SIGTERM once Ray Serve's proxy listens, while the replica is being deployed
        port = free_port()
        cli = _Cli(str(bundle), "--ray-address", address, "--port", str(port), env=env)
        deadline = time.monotonic() + 120
        while _health(port) is None:
            assert cli.proc.poll() is None and time.monotonic() < deadline, cli.lines
            time.sleep(0.02)
        cli.proc.send_signal(signal.SIGTERM)
        rc, text = cli.end()
        assert rc == 143 and "terminated while starting: nothing is served" in text, text
        assert "SIGTERM received" not in text, text  # not Ray's stack dump
        deadline = time.monotonic() + 60  # Ray Serve, started for it, is shut down
        while _health(port) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.2)

        # killed outright: its model stays, answering, and the next server takes it off
        port = free_port()
        killed = _Cli(str(bundle), "--ray-address", address, "--port", str(port), env=env)
        killed.wait_for("serving;")
        killed.proc.kill()
        killed.end()
        assert _health(port) == 200
        cli = _Cli(str(bundle), "--ray-address", address, "--port", str(port), env=env)
        cli.wait_for("serving;")
        assert any("took off the model that a server now gone" in x for x in cli.lines)
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/predict", data=pngs[0], headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            assert r.status == 200

        # a request whose body never comes keeps the drain waiting; a second signal ends it
        with socket.create_connection(("127.0.0.1", port), timeout=60) as held:
            held.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % len(pngs[0]) + pngs[0][:10]
            )
            time.sleep(1.0)
            cli.proc.send_signal(signal.SIGHUP)
            cli.wait_for("stopping: finishing the requests in flight")
            time.sleep(1.0)
            cli.proc.send_signal(signal.SIGTERM)
            rc, text = cli.end()
        assert rc == 143 and "the model is taken off the cluster" in text, text  # SIGTERM's
        deadline = time.monotonic() + 60
        while _health(port) not in (404, None):  # the application is gone from the proxy
            assert time.monotonic() < deadline, _health(port)
            time.sleep(0.5)
    finally:
        pids = [p for n in cluster.nodes for p in cluster.processes(n)]
        cluster.shutdown()
        assert not still_running(pids) and not cluster.stragglers()
