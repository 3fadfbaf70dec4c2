"""Connecting: addresses, unreachable clusters, the token-authentication quirk, and that the
default path (no address) never imports Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

import pytest

from exitsearch.distributed import ClusterError, connect, ray_cluster, resolve_address
from exitsearch.distributed.cluster import _prepare_auth_env
from exitsearch.errors import ConfigError, ExitSearchError


def test_address_from_option_then_environment(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    assert resolve_address(None) is None
    assert resolve_address("10.0.0.5:6379") == "10.0.0.5:6379"
    monkeypatch.setenv("RAY_ADDRESS", "head.example:6380")
    assert resolve_address(None) == "head.example:6380"
    assert resolve_address("auto") == "auto"  # the option wins over the environment
    for ok in ("ray://head:10001", "local", "[::1]:6379"):
        assert resolve_address(ok) == ok


@pytest.mark.parametrize("bad", ["head", "head:", ":6379", "head:port", "head:70000"])
def test_malformed_address_is_a_config_error(bad):
    with pytest.raises(ConfigError, match="HOST:PORT"):
        resolve_address(bad)


def test_unreachable_cluster_fails_fast_in_one_line():
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    t0 = time.perf_counter()
    with pytest.raises(ClusterError) as err:
        connect(f"127.0.0.1:{port}")
    assert time.perf_counter() - t0 < 5  # ray.init alone was still retrying after 120 s
    msg = str(err.value)
    assert isinstance(err.value, ExitSearchError) and "\n" not in msg
    assert f"127.0.0.1:{port}" in msg and "ray start --head" in msg


def test_token_mode_is_set_when_a_token_is_at_hand(monkeypatch, tmp_path):
    for var in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH"):
        # set, then delete: monkeypatch then restores the original state, also after
        # _prepare_auth_env wrote os.environ itself
        monkeypatch.setenv(var, "")
        monkeypatch.delenv(var)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert not _prepare_auth_env()  # no token anywhere: leave the mode alone
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef")
    monkeypatch.setenv("RAY_AUTH_TOKEN_PATH", str(token))
    assert _prepare_auth_env()
    assert os.environ["RAY_AUTH_MODE"] == "token"
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")  # an explicit choice is respected
    assert not _prepare_auth_env()


def test_token_mode_counts_when_ray_was_imported_first(tmp_path):
    """A server module imports Ray before it connects: Ray has read its configuration then,
    and the token mode set afterwards must still take effect (else ``InvalidAuthToken``)."""
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123456789abcdef")
    code = (
        "import ray\n"
        "from ray._private.authentication.authentication_utils import is_token_auth_enabled\n"
        "from exitsearch.distributed.cluster import _prepare_auth_env, _reread_ray_config\n"
        "before, mode_set = is_token_auth_enabled(), _prepare_auth_env()\n"
        "_reread_ray_config()  # what connect() does after setting the mode\n"
        "print(before, mode_set, is_token_auth_enabled())\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}
    env |= {"RAY_AUTH_TOKEN_PATH": str(token), "HOME": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["False", "True", "True"]


def test_without_an_address_nothing_imports_ray(monkeypatch):
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    with ray_cluster(None) as info:
        assert info is None
    code = (
        "import sys\n"
        "import exitsearch.distributed, exitsearch.pipeline.run, exitsearch_cli.main\n"
        "from exitsearch.distributed import ray_cluster\n"
        "with ray_cluster(None): pass\n"
        "print('ray' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
        env={k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"},
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("command", [["run"], ["heads", "train"]])
def test_cli_fails_before_any_work_when_the_cluster_is_unreachable(command, tmp_path):
    from exitsearch_cli.main import app
    from typer.testing import CliRunner

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    args = [*command, "--run", str(tmp_path / "run"), "--ray-address", f"127.0.0.1:{port}"]
    res = CliRunner().invoke(app, args)
    assert res.exit_code == 2
    assert "cannot reach the Ray cluster" in res.output
    assert not (tmp_path / "run").exists()
    res = CliRunner().invoke(app, [*command, "--ray-address", "no-port-here"])
    assert res.exit_code == 2 and "HOST:PORT" in res.output
