"""Connecting to an existing Ray cluster (``--ray-address`` or ``RAY_ADDRESS``).

Without an address nothing here runs and Ray is never imported: every function that needs Ray
imports it when called. Two things make a bare ``ray.init(address=...)`` a poor user experience,
and :func:`connect` handles both:

* an address where nothing listens makes ``ray.init`` retry for minutes (measured: still
  waiting after 120 s); a TCP probe of ``HOST:PORT`` first fails in milliseconds instead;
* a cluster started with token authentication rejects a client that has the token but not
  ``RAY_AUTH_MODE=token`` (``InvalidAuthToken``, then ``ConnectionError`` after ~20 s);
  ``address="auto"`` worked. When a token is available and the mode is unset, the mode is set
  to ``token`` for this process; a token-mode client still connects to a cluster without
  authentication (both measured with Ray 2.60).
"""

from __future__ import annotations

import logging
import os
import socket
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch.errors import ConfigError, ExitSearchError

__all__ = [
    "RAY_ADDRESS_ENV",
    "ClusterError",
    "ClusterInfo",
    "connect",
    "connected_here",
    "disconnect",
    "probe",
    "ray_cluster",
    "resolve_address",
    "task_device",
    "token_available",
]

RAY_ADDRESS_ENV = "RAY_ADDRESS"
_AUTH_MODE_ENV = "RAY_AUTH_MODE"
_SPECIAL = ("auto", "local")
_NAMESPACE = "exitsearch"


class ClusterError(ExitSearchError):
    """The Ray cluster cannot be reached or used (the message says what to check)."""


@dataclass(frozen=True)
class ClusterInfo:
    """What the driver is connected to.

    Attributes:
        address: the address connected to (``local``: a private single-machine cluster).
        nodes: alive nodes.
        cpus, gpus: total logical CPUs and GPUs of the cluster.
        driver_node: node id of the node the driver attached to.
    """

    address: str
    nodes: int
    cpus: float
    gpus: float
    driver_node: str

    def describe(self) -> str:
        gpus = f", {self.gpus:g} GPUs" if self.gpus else ""
        return f"Ray cluster at {self.address}: {self.nodes} node(s), {self.cpus:g} CPUs{gpus}"


def resolve_address(address: str | None) -> str | None:
    """The address to use: ``address`` if given, else ``$RAY_ADDRESS``, else None (no Ray).

    Raises:
        ConfigError: the address is not ``HOST:PORT``, ``ray://HOST:PORT``, ``auto`` or
            ``local``.
    """
    text = (address if address is not None else os.environ.get(RAY_ADDRESS_ENV, "")).strip()
    if not text:
        return None
    _host_port(text)  # validates
    return text


def _host_port(address: str) -> tuple[str, int] | None:
    """``(host, port)`` of an address, None for ``auto``/``local``."""
    if address in _SPECIAL:
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(
            f"a Ray address looks like HOST:PORT (the head's `ray start --head --port`), "
            f"ray://HOST:PORT, auto or local; got {address!r}"
        )
    return host.strip("[]"), int(port)


def probe(address: str, timeout: float = 5.0) -> None:
    """Check that something listens at ``address`` (a TCP connect; Ray is not imported), so
    that a wrong address fails before any work starts.

    Raises:
        ConfigError: a malformed address.
        ClusterError: nothing listens there.
    """
    _probe(address, timeout)


def _probe(address: str, timeout: float) -> None:
    hp = _host_port(address)
    if hp is None:
        return
    try:
        with socket.create_connection(hp, timeout=timeout):
            pass
    except OSError as exc:
        reason = exc.strerror or type(exc).__name__
        raise ClusterError(
            f"cannot reach the Ray cluster at {address} ({reason}); start one with "
            f"`ray start --head --port {hp[1]}` there, or fix --ray-address / {RAY_ADDRESS_ENV}"
        ) from None


def token_available() -> bool:
    """Whether a Ray authentication token is at hand (environment or ``~/.ray/auth_token``)."""
    if os.environ.get("RAY_AUTH_TOKEN"):
        return True
    path = os.environ.get("RAY_AUTH_TOKEN_PATH")
    if path:
        return Path(path).is_file()
    return (Path.home() / ".ray" / "auth_token").is_file()


def _prepare_auth_env() -> bool:
    """Set ``RAY_AUTH_MODE=token`` when a token is at hand and no mode is set; True if set."""
    if _AUTH_MODE_ENV in os.environ or not token_available():
        return False
    os.environ[_AUTH_MODE_ENV] = "token"
    return True


def _reread_ray_config() -> None:
    """Ray reads the authentication mode into its configuration when it is imported: in a
    process that imported Ray already (a server module does, to declare its deployment) the
    configuration is read again, as Ray's own authentication tests do, so that a mode set
    since counts."""
    if "ray._raylet" in sys.modules:
        from ray._raylet import AuthenticationTokenLoader, Config

        Config.initialize("")
        AuthenticationTokenLoader.instance().reset_cache()


def _info(address: str) -> ClusterInfo:
    import ray

    res = ray.cluster_resources()
    alive = [n for n in ray.nodes() if n.get("Alive")]
    return ClusterInfo(
        address=address,
        nodes=len(alive),
        cpus=float(res.get("CPU", 0.0)),
        gpus=float(res.get("GPU", 0.0)),
        driver_node=ray.get_runtime_context().get_node_id(),
    )


_CONNECTED: list[str] = []  # the address this module connected to (so that it also disconnects)


def connect(
    address: str, *, probe_timeout: float = 5.0, log_to_driver: bool = False
) -> ClusterInfo:
    """Connect this process to the Ray cluster at ``address`` (no-op if already connected).

    ``local`` starts a private Ray on this machine instead (tests, one-machine runs).

    Raises:
        ConfigError: a malformed address.
        ClusterError: nothing listens there, authentication failed, or Ray refused.
    """
    hp = _host_port(address)
    if "ray" in sys.modules and sys.modules["ray"].is_initialized():
        return _info(_CONNECTED[0] if _CONNECTED else address)
    _probe(address, probe_timeout)
    # A private local Ray sets up its own authentication; forcing the token mode on it fails.
    # Set before Ray is imported here (it reads the mode when imported).
    auth_set = _prepare_auth_env() if hp is not None else False
    if auth_set:
        _reread_ray_config()
    import ray

    kwargs: dict[str, Any] = {
        "namespace": _NAMESPACE,
        "log_to_driver": log_to_driver,
        "logging_level": logging.WARNING,  # not Ray's "Connecting to existing cluster" lines
    }
    if address == "local":
        kwargs["include_dashboard"] = False
        # Ray's notice, on every start, that the private Ray it starts here uses token
        # authentication: nothing for the user to act on
        logging.getLogger("ray._private.authentication.authentication_token_setup").setLevel(
            logging.ERROR
        )
    try:
        ray.init(address=address, **kwargs)
    except Exception as exc:  # ray raises ConnectionError, AuthenticationError, RuntimeError...
        detail = " ".join(str(exc).split())[:200]
        hint = ""
        if hp is not None and not auth_set and os.environ.get(_AUTH_MODE_ENV) != "token":
            hint = (
                "; if the cluster uses token authentication, make its token available "
                "(RAY_AUTH_TOKEN or RAY_AUTH_TOKEN_PATH) and set RAY_AUTH_MODE=token"
            )
        raise ClusterError(
            f"cannot connect to the Ray cluster at {address}: {detail}{hint}"
        ) from None
    _CONNECTED[:] = [address]
    return _info(address)


def connected_here() -> bool:
    """Whether :func:`connect` made this process's Ray connection (:func:`disconnect` then
    ends it, and a private local Ray with it)."""
    return bool(_CONNECTED)


def disconnect() -> None:
    """Disconnect if :func:`connect` connected this process (a cluster itself keeps running)."""
    if not _CONNECTED:
        return
    import ray

    ray.shutdown()
    _CONNECTED.clear()


@contextmanager
def ray_cluster(address: str | None) -> Iterator[ClusterInfo | None]:
    """Connect for the duration of a block when an address is given (else yield None).

    Connections made here are closed at the end; one made earlier by the caller is kept.

    Example:
        >>> with ray_cluster(None) as info:  # no address: nothing happens, Ray stays unimported
        ...     info is None
        True
    """
    address = resolve_address(address)
    if address is None:
        yield None
        return
    ours = not _CONNECTED and not _ray_initialized()
    info = connect(address)
    try:
        yield info
    finally:
        if ours:
            disconnect()


def _ray_initialized() -> bool:
    import sys

    ray = sys.modules.get("ray")
    return bool(ray is not None and ray.is_initialized())


def task_device(device: str) -> str:
    """The device of tasks on the connected cluster: ``cuda`` (each task then requests one GPU)
    or ``cpu``. ``auto`` takes ``cuda`` when the cluster has a GPU.

    Raises:
        ClusterError: CUDA asked for on a cluster without a GPU (its tasks would wait forever).
    """
    import ray

    text = device.strip().lower()
    gpus = ray.cluster_resources().get("GPU", 0)
    if text == "auto":
        return "cuda" if gpus > 0 else "cpu"
    if text.startswith("cuda"):
        if gpus <= 0:
            raise ClusterError(
                f"--device {device} asked for, but the Ray cluster has no GPU; use --device cpu"
            )
        return "cuda"  # a task sees only the GPU Ray gave it
    return "cpu"
