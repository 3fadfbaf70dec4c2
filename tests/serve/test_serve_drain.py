"""A draining server says so on its health check, so that a load balancer stops sending it
requests (a real server on a free loopback port, real HTTP requests)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import ray
from test_serve_server import call

from exitsearch.distributed.testing import free_port
from exitsearch.serve import ServeOptions, start_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_health_check_fails_while_the_server_drains(bundle: Path, pngs: list[bytes]):
    """A load balancer must stop sending requests to a server that refuses them all."""
    server = start_server(bundle, ServeOptions(port=free_port()))
    try:
        assert call(server.url + "/healthz")[0] == 200
        ray.get(server.hub.drain.remote())  # what stop() does first
        deadline = time.monotonic() + 10
        while (got := call(server.url + "/healthz"))[0] == 200 and time.monotonic() < deadline:
            time.sleep(0.1)  # replicas learn it within their report period (0.5 s)
        status, health, _ = got
        assert status == 503 and health["status"] == "draining", health
        status, body, _ = call(server.url + "/predict", pngs[0])
        assert status == 503 and "shutting down" in body["error"]
    finally:
        server.stop()
