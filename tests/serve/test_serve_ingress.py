"""Direct ingress with several replicas on a local Ray: one port each, no proxy between.

A module of its own: direct ingress needs a Ray the server starts, and the other server tests
hold one for their module.
"""

from __future__ import annotations

import time
import urllib.request
from pathlib import Path

import pytest
from test_serve_server import call, check_answers

import exitsearch
from exitsearch.distributed.testing import free_port
from exitsearch.serve import ServeOptions, start_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]


def test_direct_ingress_gives_every_replica_a_port(bundle: Path, pngs: list[bytes]):
    model = exitsearch.load(bundle)
    port = free_port()
    while not _free(port + 1):  # two ports in a row
        port = free_port()
    srv = start_server(
        bundle, ServeOptions(port=port, replicas=2, cpus_per_replica=0.5, ingress="direct")
    )
    try:
        assert srv.urls == [f"http://127.0.0.1:{port}", f"http://127.0.0.1:{port + 1}"]
        answers = [call(u + "/predict", pngs[i])[1] for i, u in enumerate(srv.urls)]
        check_answers(model, pngs[:2], answers)
        deadline = time.monotonic() + 10  # the other replica reports every 0.5 s
        while "exitsearch_images_total 2" not in (text := call(srv.url + "/metrics")[1]):
            assert time.monotonic() < deadline, text  # both replicas count into one /metrics
            time.sleep(0.2)
    finally:
        srv.stop()
    for u in srv.urls:
        with pytest.raises(OSError):  # nothing listens any more
            urllib.request.urlopen(u + "/healthz", timeout=5)


def _free(port: int) -> bool:
    import socket

    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def test_a_proxy_that_cannot_listen_is_one_line_naming_the_address():
    """Ray Serve's own error when its proxy cannot bind is a cut-off traceback of an actor call;
    the server's error names the address instead."""
    from exitsearch.serve.app import _deploy_error

    text = (
        "ray::ProxyActor.ready() (pid=6080, ip=10.0.0.2)\n"
        '  File "/x/concurrent/futures/_base.py", line 449, in result\n'
        "    return self.__get_result()\n"
        "RuntimeError: Failed to bind to address '127.0.0.1:8000'."
    )
    line = _deploy_error(RuntimeError(text))
    assert "\n" not in line
    assert line.startswith("Ray Serve's proxy could not listen on 127.0.0.1:8000")
    assert "--port" in line
    # anything else: the last error line of the message, not the start of a traceback
    other = 'Traceback (most recent call last):\n  File "x.py", line 1\nValueError: bad config'
    assert _deploy_error(RuntimeError(other)) == "ValueError: bad config"
