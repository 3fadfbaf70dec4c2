"""Ray Serve's own way in (:mod:`exitsearch.serve.builder`): the arguments a Serve config or
``serve run`` passes, and a real config deployed by ``serve run`` on a ``ray start`` cluster,
answering like ``exitsearch.load(bundle)`` under the config's route prefix, with its replicas'
metrics summed whichever replica answers."""

from __future__ import annotations

import base64
import io
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

import exitsearch
from exitsearch.errors import ConfigError
from exitsearch.serve.builder import ARGUMENTS, options_from_args


def test_arguments_read_as_serve_run_and_a_config_file_give_them():
    # serve run passes strings, a config file YAML's own types: both read the same
    as_text = {
        "bundle": "~/b",
        "slo_ms": "80",
        "point": "3",
        "backbone_only": "false",
        "max_body_mb": "0.5",
        "max_images": "8",
        "body_timeout_s": "2.5",
        "top_k": "3",
    }
    as_yaml = {
        "bundle": "~/b",
        "slo_ms": 80,
        "point": 3,
        "backbone_only": False,
        "max_body_mb": 0.5,
        "max_images": 8,
        "body_timeout_s": 2.5,
        "top_k": 3,
    }
    for args in (as_text, as_yaml):
        root, o = options_from_args(args)
        assert root == Path("~/b").expanduser()
        assert (o.slo_ms, o.operating_point, o.backbone_only, o.top_k) == (80.0, 3, False, 3)
        assert (o.limits.max_bytes, o.limits.max_images, o.limits.body_idle_s) == (2**19, 8, 2.5)
    # a key left empty in a config file keeps the default; dashes read as underscores
    _, o = options_from_args({"bundle": "b", "slo_ms": None, "max-batch-size": "4"})
    assert o.slo_ms is None and o.max_batch_size == 4
    # every argument is one of the server's options
    assert set(ARGUMENTS) >= {"point", "budget", "slo_ms", "patience", "device", "threads"}


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ({}, "argument bundle .* is missing"),
        ({"bundle": ""}, "argument bundle .* is missing"),
        ({"bundle": "b", "replicas": "2"}, "replicas is Ray Serve's to set: use num_replicas"),
        ({"bundle": "b", "port": 9000}, "port is Ray Serve's to set: use http_options"),
        ({"bundle": "b", "route_prefix": "/x"}, "the application's route_prefix"),
        ({"bundle": "b", "slo": "100"}, "unknown argument 'slo'; the arguments are bundle, point"),
        (
            {"bundle": "b", "point": "two"},
            r"point must be a whole number \(up to 18 digits\), got 'two'",
        ),
        ({"bundle": "b", "point": True}, "point must be a whole number"),
        ({"bundle": "b", "slo_ms": "fast"}, "slo_ms must be a number"),
        ({"bundle": "b", "slo_ms": "-5"}, "slo_ms must be a positive number"),
        ({"bundle": "b", "backbone_only": "maybe"}, "backbone_only must be true or false"),
        ({"bundle": "b", "max_batch_size": 0}, r"^max_batch_size 0 is not allowed \(at least 1\)"),
        ({"bundle": "b", "max_body_mb": "0"}, "max_body_mb must be a positive number"),
        ({"bundle": "b", "body_timeout_s": 0}, "body_timeout_s must be a positive number"),
        ({"bundle": "b", "point": 1, "budget": "50%"}, "an operating point or a budget, not both"),
        (["bundle"], "a mapping of names to values"),
    ],
)
def test_bad_arguments_get_one_line(args, message):  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=message) as info:
        options_from_args(args)
    assert "\n" not in str(info.value)


def test_the_application_carries_the_arguments(bundle: Path):
    from ray.serve import Application

    from exitsearch.serve.builder import app

    model = exitsearch.load(bundle)
    built = app({"bundle": str(bundle), "slo_ms": "50", "top_k": 2, "device": "cuda"})
    assert isinstance(built, Application)
    d = built._bound_deployment
    source, opts, hub, describe = d.init_args
    assert d.name == "model" and source == str(bundle.resolve())
    assert (opts["slo_ms"], opts["top_k"], opts["device"]) == (50.0, 2, "cuda")
    assert d.ray_actor_options["num_gpus"] == 1  # cuda: a GPU per replica unless a config says
    assert hub._bound_deployment.name == "metrics"
    assert describe["latency_target_ms"] == 50.0
    # every replica checks that it loads the bundle the application was built from
    manifest = json.loads((bundle / "exitsearch.json").read_text())
    assert opts["bundle_sha256"] == manifest["manifest_sha256"]
    assert describe["default_operating_point"] == model.point_index
    # a budget is fitted to the bundle's points where the application is built
    cheapest = min(
        range(len(model.operating_points)), key=lambda i: model.operating_points[i].mean_flops
    )
    flops = model.operating_points[cheapest].mean_flops
    _, opts, _, _ = app({"bundle": str(bundle), "budget": flops})._bound_deployment.init_args
    assert opts["operating_point"] == cheapest and opts["budget"] is None
    with pytest.raises(ConfigError, match="operating point 1000000 does not exist"):
        app({"bundle": str(bundle), "point": 1000000})
    with pytest.raises(exitsearch.errors.BundleError, match="not a bundle folder"):
        app({"bundle": str(bundle / "nowhere")})


def test_the_command_writes_a_serve_config_of_its_options(bundle: Path, tmp_path: Path):
    import yaml
    from exitsearch_cli.main import app as cli
    from ray.serve.schema import ServeDeploySchema
    from typer.testing import CliRunner

    from exitsearch.serve import ServeOptions

    path = tmp_path / "serve.yaml"
    flags = ["--replicas", "3", "--slo-ms", "80", "--top-k", "3", "--max-body-mb", "2"]
    flags += ["--host", "0.0.0.0", "--port", "8123", "--device", "cuda", "--cpus-per-replica", "2"]
    out = CliRunner().invoke(cli, ["serve", str(bundle), *flags, "--write-config", str(path)])
    assert out.exit_code == 0, out.output
    config = yaml.safe_load(path.read_text())
    ServeDeploySchema.model_validate(config)  # what serve deploy reads
    assert config["http_options"] == {"host": "0.0.0.0", "port": 8123}
    (application,) = config["applications"]
    assert application["import_path"] == "exitsearch.serve.builder:app"
    (deployment,) = application["deployments"]
    assert deployment == {
        "name": "model",
        "num_replicas": 3,
        "ray_actor_options": {"num_cpus": 2.0, "num_gpus": 1},
    }
    # the arguments read back as the options given (those not at their defaults)
    root, options = options_from_args(application["args"])
    assert root == bundle.resolve()
    assert set(application["args"]) == {"bundle", "slo_ms", "top_k", "max_body_mb", "device"}
    assert (options.slo_ms, options.top_k, options.device) == (80.0, 3, "cuda")
    assert options.limits.max_bytes == 2 * 2**20 and options.replicas == ServeOptions().replicas
    # a file that exists is left as it is; a bad option writes nothing
    before = path.read_bytes()
    again = CliRunner().invoke(cli, ["serve", str(bundle), "--write-config", str(path)])
    assert again.exit_code != 0 and "exists already" in again.output
    assert path.read_bytes() == before
    other = tmp_path / "other.yaml"
    bad = ["serve", str(bundle), "--point", "1000000", "--write-config", str(other)]
    out = CliRunner().invoke(cli, bad)
    assert out.exit_code != 0 and "operating point 1000000 does not exist" in out.output
    for flags, said in (
        (["--ray-address", "127.0.0.1:1"], "deploys nothing"),
        (["--ingress", "direct"], "not a Serve config's to set"),
    ):
        out = CliRunner().invoke(cli, ["serve", str(bundle), *flags, "--write-config", str(other)])
        assert out.exit_code != 0 and said in out.output, out.output
    assert not other.exists()


def test_the_metrics_hub_takes_reports_from_many_threads_at_once():
    # as a Serve deployment its methods run in a pool of threads
    import threading

    from exitsearch.serve.app import _Hub
    from exitsearch.serve.metrics import Metrics

    hub = _Hub()
    hub.reports.stale_s = hub.reports.fold_s = 0.0  # every call folds what it can
    errors: list[BaseException] = []
    switch = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)

    def work(k: int) -> None:
        m = Metrics()
        m.inc("exitsearch_images_total")
        try:
            for i in range(300):
                hub.put(f"r{k}-{i}", m.snapshot())
                hub.report()
                hub.get()
        except BaseException as exc:
            errors.append(exc)

    try:
        threads = [threading.Thread(target=work, args=(k,)) for k in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(switch)
    assert errors == []
    from exitsearch.serve.metrics import merge, render

    text = render(merge(hub.report()))
    assert "exitsearch_images_total 1800\n" in text  # 6 threads x 300 replicas, none lost


def _get(url: str, data: bytes | None = None):  # type: ignore[no-untyped-def]
    req = urllib.request.Request(url, data=data)
    if data is not None:
        req.add_header("Content-Type", "image/png")
    try:
        with urllib.request.urlopen(req, timeout=60) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


def _ray_python(address: str, code: str) -> str:
    """Run ``code`` in a fresh Python connected to the cluster (``serve`` imported)."""
    prelude = (
        "import ray, json\nfrom ray import serve\n"
        f"ray.init(address={address!r}, log_to_driver=False)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", prelude + code], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return out.stdout


@pytest.mark.ray
@pytest.mark.slow
def test_a_serve_config_deploys_the_bundle(bundle: Path, pngs: list[bytes], tmp_path: Path):
    from exitsearch.distributed.testing import LocalCluster, free_port
    from exitsearch.serve import ServeOptions, start_server

    port = free_port()
    # named as `exitsearch serve` names its own: that server must leave this one be
    # the config as `exitsearch serve --write-config` writes it
    import yaml

    from exitsearch.serve import Limits
    from exitsearch.serve.builder import serve_config

    options = ServeOptions(
        port=port,
        replicas=2,
        cpus_per_replica=0.5,
        route_prefix="/fm",
        proxy_location="HeadOnly",
        top_k=3,
        limits=Limits(max_images=8),
    )
    config = serve_config(bundle, options, name="exitsearch")
    assert config["applications"][0]["args"] == {
        "bundle": str(bundle.resolve()),
        "top_k": 3,
        "max_images": 8,
    }
    (tmp_path / "serve.yaml").write_text(yaml.safe_dump(config))
    cluster = LocalCluster()
    try:
        address = cluster.start_head(num_cpus=2)
        serve_cli = Path(sys.executable).with_name("serve")
        run = subprocess.run(
            [
                str(serve_cli),
                "run",
                str(tmp_path / "serve.yaml"),
                "--address",
                address,
                "--non-blocking",
            ],
            capture_output=True,
            text=True,
            timeout=180,
            env={**os.environ, "RAY_ADDRESS": address},
        )
        assert run.returncode == 0, run.stderr[-2000:]
        base = f"http://127.0.0.1:{port}/fm"
        deadline = time.monotonic() + 180
        while _get(base + "/healthz")[0] != 200:
            assert time.monotonic() < deadline, "the config's application never came up"
            time.sleep(1)
        answers = []
        for png in pngs[:12]:
            status, text = _get(base + "/predict", png)
            assert status == 200, text
            answers.append(json.loads(text))
        model = exitsearch.load(bundle)
        out = model.predict([Image.open(io.BytesIO(p)) for p in pngs[:12]])
        assert [a["label"] for a in answers] == out.prediction.tolist()
        assert [a["exit"] for a in answers] == out.exit_index.tolist()
        assert all(len(a["probabilities"]) == 3 for a in answers)  # the config's top_k
        status, text = _get(base + "/")
        assert status == 200 and json.loads(text)["bundle"] == str(bundle.resolve())
        status, text = _get(base + "/nowhere")
        assert status == 404 and "/fm/predict" in json.loads(text)["error"]
        # the config's limits: max_images 8
        doc = json.dumps({"images": [base64.b64encode(p).decode() for p in pngs[:9]]}).encode()
        req = urllib.request.Request(base + "/predict", data=doc)
        req.add_header("Content-Type", "application/json")
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(req, timeout=60)
        assert info.value.code == 413
        # two replicas, one /metrics: every image counted whichever replica answers
        time.sleep(1.5)
        status, text = _get(base + "/metrics")
        replicas = {
            line.split('replica="')[1].split('"')[0]
            for line in text.splitlines()
            if line.startswith("exitsearch_operating_point{")
        }
        assert len(replicas) == 2, text[:2000]
        assert "\nexitsearch_images_total 12\n" in text
        # `exitsearch serve` on this cluster leaves Ray Serve's application be
        from exitsearch.distributed.cluster import disconnect

        try:
            with pytest.raises(ConfigError, match="Ray Serve runs from its config"):
                start_server(bundle, ServeOptions(port=port, ray_address=address))
        finally:
            disconnect()
        assert _get(base + "/healthz")[0] == 200
        apps = _ray_python(
            address,
            "serve.delete('exitsearch')\nprint(json.dumps(list(serve.status().applications)))",
        )
        assert json.loads(apps.strip().splitlines()[-1]) == []
    finally:
        cluster.shutdown()
