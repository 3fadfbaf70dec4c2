"""A real server on a free loopback port (a local Ray, Ray Serve's proxy), real HTTP requests:
answers equal ``exitsearch.load(bundle)``, bad input gets a 4xx, the latency target moves along
the operating points under a burst and comes back, and shutdown lets requests in flight finish."""

from __future__ import annotations

import base64
import io
import json
import math
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
import torch
from PIL import Image
from test_serve_requests import png_header_only

import exitsearch
from exitsearch.distributed.testing import free_port
from exitsearch.serve import Limits, ServeOptions, start_server

pytestmark = [pytest.mark.ray, pytest.mark.slow]

SLO_MS = 40.0
BODY_IDLE_S = 4.0  # over what 40 slow uploads finished one at a time take on a busy machine


def call(url: str, data: bytes | None = None, ctype: str = "image/png", method: str | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, data=data, method=method)
    if data is not None:
        req.add_header("Content-Type", ctype)
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            body = r.read()
            status, headers = r.status, r.headers
    except urllib.error.HTTPError as exc:
        body, status, headers = exc.read(), exc.code, exc.headers
    text = body.decode()
    try:
        return status, json.loads(text), headers
    except json.JSONDecodeError:
        return status, text, headers


@pytest.fixture(scope="module")
def server(bundle: Path):  # type: ignore[no-untyped-def]
    options = ServeOptions(
        port=free_port(),
        slo_ms=SLO_MS,
        max_batch_size=16,
        batch_wait_ms=1.0,
        limits=Limits(max_bytes=100_000, max_images=40, body_idle_s=BODY_IDLE_S),
    )
    srv = start_server(bundle, options)
    try:
        yield srv
    finally:
        srv.stop()


@pytest.fixture(scope="module")
def model(bundle: Path):  # type: ignore[no-untyped-def]
    return exitsearch.load(bundle)


def expected(model, pngs: list[bytes], rows: list[int], point: int):  # type: ignore[no-untyped-def]
    model.set_operating_point(index=point)
    out = model.predict([Image.open(io.BytesIO(pngs[i])) for i in rows])
    probs = torch.softmax(out.logits, -1).numpy()
    return out.prediction.numpy(), out.exit_index.numpy(), probs


def check_answers(model, pngs: list[bytes], answers: list[dict[str, Any]]) -> None:  # type: ignore[no-untyped-def]
    by_point: dict[int, list[int]] = {}
    for i, a in enumerate(answers):
        by_point.setdefault(a["operating_point"], []).append(i)
    for point, rows in by_point.items():
        labels, exits, probs = expected(model, pngs, rows, point)
        for j, i in enumerate(rows):
            a = answers[i]
            assert a["label"] == labels[j] and a["exit"] == exits[j], (i, a)
            assert a["class"] == model.classes[a["label"]]  # the data's own name of the label
            top = a["probabilities"]
            assert top[0]["label"] == a["label"] and len(top) == 5
            for entry in top:
                assert entry["p"] == pytest.approx(probs[j][entry["label"]], abs=2e-6)
                assert entry["class"] == model.classes[entry["label"]]


def test_answers_equal_the_loaded_bundle(server, model, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    # one replica on a local Ray: it listens itself, on the port asked for
    assert server.ingress == "direct" and server.urls == [server.url]
    assert server.url == f"http://127.0.0.1:{server.options.port}"
    url = server.url + "/predict"
    with ThreadPoolExecutor(16) as pool:  # concurrent single-image requests: dynamic batches
        results = list(pool.map(lambda p: call(url, p), pngs))
    assert [s for s, _, _ in results] == [200] * len(pngs)
    singles = [body for _, body, _ in results]
    assert all(body["latency_ms"] > 0 for body in singles)
    check_answers(model, pngs, singles)
    assert len({a["exit"] for a in singles}) >= 2  # the bundle spreads samples over exits

    doc = {"images": [base64.b64encode(p).decode() for p in pngs[:40]]}
    status, body, _ = call(url, json.dumps(doc).encode(), "application/json")
    assert status == 200 and len(body["predictions"]) == 40
    check_answers(model, pngs[:40], body["predictions"])
    blocks = {a["exit"]: a["exit_block"] for a in singles}
    depth = model.backbone.depth
    assert blocks == {k: ([s.location for s in model.config.exits] + [depth])[k] for k in blocks}


def test_large_images_answer_as_the_loaded_bundle(server, model, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    # Fashion-MNIST images blown up to 1.2 megapixels each (over the server's 1-megapixel
    # threshold: decoded in a worker thread, one at a time), sent with small ones in between
    big = []
    for p in pngs[:3]:
        buf = io.BytesIO()
        Image.open(io.BytesIO(p)).resize((1200, 1000), Image.NEAREST).save(buf, "PNG")
        big.append(buf.getvalue())
    url = server.url + "/predict"
    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(lambda p: call(url, p), [big[0], pngs[5], big[1], pngs[6], big[2]]))
    assert [s for s, _, _ in results] == [200] * 5
    check_answers(model, [big[0], pngs[5], big[1], pngs[6], big[2]], [b for _, b, _ in results])


def test_an_image_too_large_to_answer_in_time_even_alone_gets_413(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    # a flat 4000x4000 PNG (small in bytes, within the pixel limit) takes longer to decode
    # than the 40 ms target: sending it again cannot help, so not 503 with Retry-After
    buf = io.BytesIO()
    Image.new("L", (4000, 4000), 128).save(buf, "PNG")
    url = server.url + "/predict"
    status, body, headers = call(url, buf.getvalue())
    assert status == 413, body
    assert "Retry-After" not in headers
    assert "an image of 16,000,000 pixels would take about" in body["error"]
    assert "send images of at most" in body["error"] or "send smaller images" in body["error"]
    assert call(url, pngs[0])[0] == 200  # and the server answers the usual ones


def test_operating_point_asked_by_the_request(server, model, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    url = server.url + "/predict"
    status, body, _ = call(url + "?operating_point=0&top_k=2", pngs[0])
    assert status == 200 and body["operating_point"] == 0 and len(body["probabilities"]) == 2
    labels, exits, _ = expected(model, pngs, [0], 0)
    assert body["label"] == labels[0] and body["exit"] == exits[0]
    cheapest = model.operating_points[0].mean_flops / model.costs.backbone_flops
    budget = f"{100 * cheapest + 0.01:.2f}%"  # only point 0 fits
    doc = {"image": base64.b64encode(pngs[1]).decode(), "budget": budget}
    status, body, _ = call(url, json.dumps(doc).encode(), "application/json")
    assert status == 200 and body["operating_point"] == 0, body
    status, info, _ = call(server.url + "/")
    assert status == 200 and len(info["operating_points"]) == len(model.operating_points)
    assert info["default_operating_point"] == exitsearch.load(server.describe["bundle"]).point_index


def test_bad_input_gets_a_one_line_4xx(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    url = server.url + "/predict"
    rgba, buf = Image.new("RGBA", (28, 28)), io.BytesIO()
    rgba.save(buf, "PNG")
    cases = [
        (url, b"plain text", "text/plain", 415),
        (url, b"not an image", "image/png", 415),
        (url, b"{", "application/json", 400),
        (url, b'{"image": "***"}', "application/json", 400),
        (url, buf.getvalue(), "image/png", 422),
        (url, png_header_only(60_000, 60_000), "image/png", 413),
        (url, b"x" * 150_000, "image/png", 413),
        (url + "?operating_point=1000000", pngs[0], "image/png", 422),
        (url + "?budget=0.0001%25", pngs[0], "image/png", 422),
        (url + "?budget=fast", pngs[0], "image/png", 400),
        (url + "?operating_point=-1", pngs[0], "image/png", 422),
        (url + "?budget=101%25", pngs[0], "image/png", 400),
        (url + "?top_k=1&top_k=3", pngs[0], "image/png", 400),
        (server.url + "/nowhere", None, "", 404),
        (server.url + "/nowhere", pngs[0], "image/png", 404),  # POST: no route either
    ]
    for target, data, ctype, want in cases:
        status, body, _ = call(target, data, ctype)
        assert status == want, (target, ctype, body)
        assert isinstance(body, dict) and set(body) == {"error"}, body
        assert "\n" not in body["error"] and "Traceback" not in body["error"]
        if "budget=101" in target:  # read as a budget, and says why it cannot be one
            assert "at most 100%" in body["error"], body
        if "budget=fast" in target:  # says what a serving budget is, not every budget unit
            assert "40%" in body["error"] and "ms" not in body["error"], body
    gzipped = urllib.request.Request(
        url, data=pngs[0], headers={"Content-Type": "image/png", "Content-Encoding": "gzip"}
    )
    with pytest.raises(urllib.error.HTTPError) as caught:
        urllib.request.urlopen(gzipped, timeout=60)
    assert caught.value.code == 415
    assert "Content-Encoding gzip is not accepted" in json.loads(caught.value.read())["error"]
    status, _, headers = call(url, method="GET")
    assert status == 405 and headers["Allow"] == "POST"
    status, health, _ = call(server.url + "/healthz")
    assert status == 200 and health["status"] == "ok"  # still serving
    # HEAD, as load balancers' health checks send it: a GET's status and headers, no body
    status, body, headers = call(server.url + "/healthz", method="HEAD")
    assert status == 200 and body == "" and headers["Content-Type"] == "application/json"
    status, _, headers = call(server.url + "/healthz", method="DELETE")
    assert status == 405 and headers["Allow"] == "GET, HEAD"


def test_slow_uploads_are_answered_and_not_counted_against_the_target(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    """Bodies that take their clients several latency targets to send: the server's latency
    (and its target) starts when a body has arrived, so they are answered, not refused, and
    while they arrive they are not requests ahead of others: more of them than the replica's
    concurrency limit (32 at first) leave a request sent meanwhile be answered."""
    pause = 4 * SLO_MS / 1000
    body, half = pngs[0], len(pngs[0]) // 2
    where = urllib.parse.urlsplit(server.url)
    head = (
        b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
        b"Connection: close\r\nContent-Length: %d\r\n\r\n" % len(body)
    )
    slow = [socket.create_connection((where.hostname, where.port), timeout=60) for _ in range(40)]
    try:
        for s in slow:
            s.sendall(head + body[:half])
        time.sleep(pause)
        status, answer, _ = call(server.url + "/predict", pngs[1])
        assert status == 200, answer
        for s in slow:  # one at a time: 40 bodies completed at once are a burst to refuse
            s.sendall(body[half:])
            reply = b""
            while chunk := s.recv(65536):
                reply += chunk
            top, _, text = reply.partition(b"\r\n\r\n")
            assert top.startswith(b"HTTP/1.1 200"), reply
            assert json.loads(text)["latency_ms"] < 1000 * pause, text
    finally:
        for s in slow:
            s.close()


def metrics(server) -> dict[str, float]:  # type: ignore[no-untyped-def]
    status, text, headers = call(server.url + "/metrics")
    assert status == 200 and headers["Content-Type"].startswith("text/plain; version=0.0.4")
    out = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            key, value = line.rsplit(" ", 1)
            out[key] = float(value)
    return out


def read_reply(s: socket.socket) -> tuple[bytes, bytes]:
    """One HTTP reply from ``s``: its head and its body (by Content-Length)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = s.recv(65536)
        assert chunk, data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    size = int(re.search(rb"(?i)content-length: *(\d+)", head).group(1))  # type: ignore[union-attr]
    while len(body) < size:
        chunk = s.recv(65536)
        assert chunk, body
        body += chunk
    return head, body


def test_a_body_that_stops_coming_gets_408_and_frees_its_place(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    where = urllib.parse.urlsplit(server.url)
    with socket.create_connection((where.hostname, where.port), timeout=60) as s:
        t0 = time.monotonic()
        s.sendall(
            b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
            b"Content-Length: %d\r\n\r\n" % len(pngs[0]) + pngs[0][:10]
        )
        head, text = read_reply(s)
        waited = time.monotonic() - t0
    assert head.startswith(b"HTTP/1.1 408"), head
    assert f"no part of the request body came for {BODY_IDLE_S:g} s" in json.loads(text)["error"]
    assert 0.9 * BODY_IDLE_S <= waited < 30
    assert call(server.url + "/predict", pngs[0])[0] == 200


def test_clients_that_leave_before_their_answer_leave_the_server_whole(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    """A client that sends a whole request and leaves: its images never reach a batch, and the
    next requests are answered in time all the same (what goes on past an exit still drains at
    an idle server); it is counted as 499, not as answered (200) or as a server error (500)."""
    deep = next(p for p in pngs if call(server.url + "/predict", p)[1]["exit"] > 0)
    where = urllib.parse.urlsplit(server.url)
    before = metrics(server)
    for _ in range(3):
        with socket.create_connection((where.hostname, where.port), timeout=60) as s:
            s.sendall(
                b"POST /predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"
                b"Content-Length: %d\r\n\r\n" % len(deep) + deep
            )
        time.sleep(0.3)
    for _ in range(6):  # one at a time, so that nothing else pushes an image through
        req = urllib.request.Request(
            server.url + "/predict", data=deep, headers={"Content-Type": "image/png"}
        )
        with urllib.request.urlopen(req, timeout=10) as r:
            assert r.status == 200
    after = metrics(server)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    answered = delta('exitsearch_requests_total{code="200"}')
    # a 200 is an answer given (a request whose images the batcher took before its client
    # left is answered, and counted as 499 if the client was gone by then)
    assert 6 <= answered <= delta("exitsearch_images_total")
    assert answered + delta('exitsearch_requests_total{code="499"}') == 9
    assert delta('exitsearch_requests_total{code="500"}') == 0


def test_metrics_count_what_was_served(server, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    before = metrics(server)
    for counter in ("exitsearch_shed_total", "exitsearch_point_switches_total"):
        assert counter in before  # there from the start, even at 0
    for p in pngs[:5]:
        assert call(server.url + "/predict", p)[0] == 200
    assert call(server.url + "/predict", b"nope")[0] == 415
    after = metrics(server)

    def delta(key: str) -> float:
        return after.get(key, 0.0) - before.get(key, 0.0)

    assert delta('exitsearch_requests_total{code="200"}') == 5
    assert delta('exitsearch_requests_total{code="415"}') == 1
    assert delta("exitsearch_images_total") == 5
    exits = sum(delta(k) for k in after if k.startswith("exitsearch_exits_total"))
    assert exits == 5
    assert delta("exitsearch_request_latency_seconds_count") == 5
    # the replica's CPU time, from its start: loading the bundle took some, answering more
    assert before["exitsearch_replica_cpu_seconds_total"] > 0
    assert delta("exitsearch_replica_cpu_seconds_total") > 0
    assert after["exitsearch_images_total"] == sum(
        v for k, v in after.items() if k.startswith("exitsearch_operating_point_images_total")
    )
    # the replica froze what it loaded (torch, Ray, the bundle), so that no full garbage
    # collection walks it while answering
    frozen = [v for k, v in after.items() if k.startswith("exitsearch_gc_frozen_objects{")]
    assert len(frozen) == 1 and frozen[0] > 10_000


def test_latency_target_moves_down_under_a_burst_and_back(server, model, pngs: list[bytes]):  # type: ignore[no-untyped-def]
    default = server.describe["default_operating_point"]
    assert default is not None
    back_to(server, default)  # earlier tests' bursts may have moved it
    doc = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs[:40]]}).encode()
    seen: Counter[int] = Counter()
    statuses: Counter[int] = Counter()
    lock = threading.Lock()
    stop = time.monotonic() + 4.0

    def client() -> None:
        while time.monotonic() < stop:
            status, body, headers = call(server.url + "/predict", doc, "application/json")
            with lock:
                statuses[status] += 1
                if status == 200:
                    seen.update(a["operating_point"] for a in body["predictions"])
                else:
                    assert status == 503 and headers["Retry-After"] == "1", body

    threads = [threading.Thread(target=client) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    cheaper = {p for p in seen if p != default}
    assert cheaper, f"no cheaper operating point under the burst: {seen}, {statuses}"
    costs = [p.mean_flops for p in model.operating_points]
    assert all(costs[p] < costs[default] for p in cheaper)
    # the event loop's own CPU per request was measured under the burst (a 40-image request
    # parses and decodes 40 base64 PNGs), and the images' decoding; predictions count both
    target = call(server.url + "/healthz")[1]["latency_target"]
    assert target["loop_ms_per_request"] > 0 and target["decode_ms_per_image"] > 0, target
    back_to(server, default)
    assert metrics(server)["exitsearch_point_switches_total"] >= 2


def back_to(server, point: int, timeout: float = 30.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        health = call(server.url + "/healthz")[1]
        if health["operating_point"] == point:
            return
        time.sleep(0.25)
    pytest.fail(f"the operating point did not come back to {point}: {health}")


def _ignore_sigint() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT], ids=["sigterm", "sigint"])
def test_cli_serves_until_stopped_and_lets_requests_finish(
    bundle: Path, pngs: list[bytes], stop: signal.Signals
):
    """SIGTERM, and SIGINT (Ctrl-C) even where the server starts with it ignored, as a
    background job of a script does. With --drain-s the port stays open, refusing, for that
    long (a load balancer's health checks see the server draining)."""
    port = free_port()
    target = ["--slo-ms", "1000"] if stop == signal.SIGINT else ["--drain-s", "2"]
    exe = Path(sys.executable).with_name("exitsearch")
    proc = subprocess.Popen(
        [
            str(exe),
            "serve",
            str(bundle),
            "--port",
            str(port),
            "--max-batch-size",
            "4",
            "--batch-wait-ms",
            "50",
            "--patience",
            "1",
            *target,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=_ignore_sigint if stop == signal.SIGINT else None,
    )
    try:
        lines = []
        assert proc.stderr is not None
        for line in proc.stderr:
            lines.append(line)
            if line.startswith("serving;"):
                break
        else:
            pytest.fail("".join(lines))
        url = f"http://127.0.0.1:{port}/predict"
        results: list[int] = []
        # 40 requests in batches of 4 that each wait 50 ms: still running when SIGTERM comes
        threads = [
            threading.Thread(target=lambda p=p: results.append(call(url, p)[0])) for p in pngs[:40]
        ]
        for t in threads:
            t.start()
        time.sleep(0.1)
        proc.send_signal(stop)
        signalled = time.monotonic()
        for t in threads:
            t.join()
        if "--drain-s" in target:  # the requests are done; the server still says it drains
            while time.monotonic() - signalled < 1.2:
                time.sleep(0.1)
            status, health, _ = call(f"http://127.0.0.1:{port}/healthz")
            assert status == 503 and health["status"] == "draining", (status, health)
        out, err = proc.communicate(timeout=120)
        if "--drain-s" in target:
            assert time.monotonic() - signalled >= 2.0
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 0, err
    assert results.count(200) + results.count(503) == 40 and results.count(200) > 0, results
    assert "server stopped" in err and "Traceback" not in err
    assert "curl --data-binary" in out
    if "--slo-ms" in target:  # the banner names the points the target moves between
        flat = " ".join(out.split())  # the banner's table may fold the line
        assert re.search(
            r"p99 1000 ms: from point \d+ \(.+?\) down to point \d+ \(.+?\) over \d+ points",
            flat,
        ), out
    with pytest.raises(OSError):  # nothing listens any more
        urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)


def test_the_cli_refuses_a_missing_bundle_and_a_proxy_without_one_at_once(
    bundle: Path, tmp_path: Path
):
    exe = str(Path(sys.executable).with_name("exitsearch"))
    cases = [
        ([str(tmp_path / "nowhere")], "nowhere: not a bundle folder"),
        (
            [str(bundle), "--ingress", "direct", "--proxy-location", "HeadOnly"],
            "with --ingress direct there is none",
        ),
    ]
    for args, fragment in cases:
        done = subprocess.run([exe, "serve", *args], capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and fragment in done.stderr, done.stderr
        assert "Traceback" not in done.stderr and "starting Ray" not in done.stderr


def test_a_latency_target_that_no_point_can_meet_is_refused_at_start(bundle: Path):
    """What one image takes alone at the cheapest point is measured as the replica warms up;
    a target below it would refuse every request ("retry later", forever)."""
    exe = str(Path(sys.executable).with_name("exitsearch"))
    args = [exe, "serve", str(bundle), "--port", str(free_port()), "--slo-ms", "0.01"]
    done = subprocess.run(args, capture_output=True, text=True, timeout=300)
    assert done.returncode == 2, done.stderr
    line = done.stderr.strip().splitlines()[-1]
    assert re.fullmatch(
        r"error: the server did not start: --slo-ms 0\.01 is below what one image alone takes "
        r"at the cheapest operating point here, about [\d.]+ ms \(measured at start-up\): "
        r"every request would be refused",
        line,
    ), done.stderr


def test_options_are_checked_before_anything_starts(bundle: Path, tmp_path: Path):
    from exitsearch.errors import BundleError, ConfigError

    with pytest.raises(ConfigError, match="not both"):
        ServeOptions(operating_point=1, budget="40%")
    with pytest.raises(ConfigError, match="no operating points"):
        ServeOptions(backbone_only=True, slo_ms=10)
    with pytest.raises(ConfigError, match="--device is cpu, cuda or auto"):
        ServeOptions(device="tpu")
    assert ServeOptions(device="cuda:0").device == "cuda:0"
    with pytest.raises(ConfigError, match="--ingress is one of"):
        ServeOptions(ingress="haproxy")
    with pytest.raises(ConfigError, match="--patience -1 is not allowed"):
        ServeOptions(patience=-1)
    with pytest.raises(ConfigError, match="needs a local Ray"):
        ServeOptions(ingress="direct", ray_address="10.0.0.1:6379")
    with pytest.raises(ConfigError, match="with --ingress direct there is none"):
        ServeOptions(ingress="direct", proxy_location="HeadOnly")
    for budget, fragment in [
        ("fast", "--budget: budget must be a mean cost per sample"),
        ("12ms", "--budget: budget '12ms' is in milliseconds"),
    ]:
        with pytest.raises(ConfigError, match=fragment):  # before the bundle loads
            ServeOptions(budget=budget)
    with pytest.raises(ConfigError, match="--point -1 is not allowed"):
        ServeOptions(operating_point=-1)
    for name in ("slo_ms", "batch_wait_ms", "cpus_per_replica"):  # not infinite
        with pytest.raises(ConfigError, match=f"--{name.replace('_', '-')}"):
            ServeOptions(**{name: math.inf})
    with pytest.raises(BundleError):
        start_server(tmp_path / "missing", ServeOptions(port=free_port()))
    with pytest.raises(ConfigError, match="does not exist"):
        start_server(bundle, ServeOptions(port=free_port(), operating_point=10_000))
    with (
        socket_held() as port,
        pytest.raises(ConfigError, match=f"cannot listen on 127.0.0.1:{port}"),
    ):
        start_server(bundle, ServeOptions(port=port))
    # replicas that the Ray cannot place all at once: Ray Serve would wait for them forever
    import ray

    connected = ray.is_initialized()
    with pytest.raises(ConfigError, match=r"--replicas 2 x --cpus-per-replica 1000 needs 2000"):
        start_server(bundle, ServeOptions(port=free_port(), replicas=2, cpus_per_replica=1000))
    assert ray.is_initialized() == connected  # a Ray started for it is gone


class socket_held:
    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        return int(self.sock.getsockname()[1])

    def __exit__(self, *exc: object) -> None:
        self.sock.close()


def test_a_port_held_by_a_stopped_servers_connections_is_named_so(bundle: Path):
    """A listener without SO_REUSEADDR (as Ray Serve's replicas open theirs) that closed its
    connections first leaves them in TIME_WAIT for a minute, and no new listener may bind."""
    import socket

    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen()
    port = int(listener.getsockname()[1])
    client = socket.create_connection(("127.0.0.1", port))
    conn, _ = listener.accept()
    conn.close()  # the server's side closes first: its end waits in TIME_WAIT
    client.recv(1)
    client.close()
    listener.close()
    from exitsearch.errors import ConfigError

    with pytest.raises(ConfigError, match="stopped less than a minute ago") as info:
        start_server(bundle, ServeOptions(port=port))
    assert "TIME_WAIT" in str(info.value) and "\n" not in str(info.value)
