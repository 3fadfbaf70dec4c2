"""A real multi-node Ray cluster on this machine, for tests and benchmarks.

Each node is its own ``ray start`` (head, then ``ray start --address``), with its own CPUs and
its own processes, all in a new process group per node so that one node can be killed alone
(``ray stop`` cannot target one node) and everything started here can be ended without
touching other Ray clusters of the machine (``ray stop`` would end them all). Ports are picked
free; the temporary folder is short because Ray's socket paths must fit in 107 characters.

Example:
    >>> with LocalCluster() as cluster:  # doctest: +SKIP
    ...     address = cluster.start_head(num_cpus=1)
    ...     worker = cluster.add_node(num_cpus=1)
    ...     cluster.kill_node(worker)
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exitsearch.distributed.cluster import ClusterError
from exitsearch.distributed.shipping import CACHE_ENV

__all__ = ["LocalCluster", "LocalNode", "free_port", "still_running"]

# A dead node is noticed after about 5 s instead of Ray's default of about 15-30 s (a check
# every 3 s, 10 s timeout, 5 misses); the timeout stays generous so that a busy machine's slow
# raylet is not declared dead.
FAST_FAILURE_DETECTION = {
    "health_check_initial_delay_ms": 1000,
    "health_check_period_ms": 1000,
    "health_check_timeout_ms": 3000,
    "health_check_failure_threshold": 5,
}


# Ports free_port handed out lately: a port is bound seconds after it is chosen (a server
# starting), and meanwhile the next call must not choose it again
_GIVEN: list[int] = []


def _ephemeral_low() -> int:
    """The lowest port of the kernel's range for outgoing connections (32768 by default)."""
    try:
        text = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text()
        return int(text.split()[0])
    except (OSError, ValueError, IndexError):
        return 32768


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port free on ``host`` right now, below the kernel's range for outgoing connections
    and above Ray's worker ports (10002-19999): a server binds it seconds after it is chosen, and
    a port from the outgoing range may be taken meanwhile by any connection a process opens (a
    cluster's test once lost its port that way). Falls back to a port of the kernel's choosing."""
    low, high = 20000, _ephemeral_low() - 1
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    if high - low >= 1000:
        for _ in range(200):
            port = random.randint(low, high)
            if port in _GIVEN:
                continue
            with socket.socket(family) as s:
                try:
                    s.bind((host, port))
                except OSError:
                    continue
            _GIVEN[:] = [*_GIVEN[-63:], port]
            return port
    with socket.socket(family) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


@dataclass
class LocalNode:
    """One ``ray start`` of a :class:`LocalCluster`: its name and its process group."""

    name: str
    pgid: int
    head: bool
    log: Path


class LocalCluster:
    """Start, grow, hurt and end a Ray cluster made of separate local ``ray start`` nodes."""

    def __init__(
        self, root: str | Path | None = None, *, system_config: dict[str, Any] | None = None
    ):
        self.root = Path(root or tempfile.mkdtemp(prefix="esr", dir="/tmp"))
        self.root.mkdir(parents=True, exist_ok=True)
        self.system_config = dict(system_config or FAST_FAILURE_DETECTION)
        self.address: str | None = None
        self.nodes: list[LocalNode] = []
        self._ray = str(Path(sys.executable).with_name("ray"))
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env["RAY_USAGE_STATS_ENABLED"] = "0"
        # A test cluster runs without authentication, and so does this process when it
        # connects: with ~/.ray/auth_token at hand (any local Ray leaves one) a head started
        # without a mode requires the token while a joining node does not send it, and a
        # driver in token mode (what `connect` sets then) cannot create actors on a cluster
        # without authentication (both measured with Ray 2.60).
        self.env["RAY_AUTH_MODE"] = os.environ.setdefault("RAY_AUTH_MODE", "disabled")
        self.env[CACHE_ENV] = str(self.root / "node-cache")  # shipped folders go with the cluster

    # ----------------------------------------------------------------- nodes
    def _start(self, name: str, args: list[str], head: bool, timeout: float) -> LocalNode:
        log = self.root / f"{name}.log"
        with log.open("w") as fh:
            proc = subprocess.Popen(
                [
                    self._ray,
                    "start",
                    *args,
                    "--node-name",
                    name,
                    "--disable-usage-stats",
                    "--min-worker-port",
                    "0",
                    "--max-worker-port",
                    "0",
                    "--dashboard-agent-listen-port",
                    str(free_port()),
                ],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                start_new_session=True,
            )
            node = LocalNode(name, proc.pid, head, log)
            self.nodes.append(node)
            try:
                rc = proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                rc = None
        if rc != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-3:]
            raise ClusterError(f"`ray start` of node {name} failed: {' | '.join(tail)}")
        return node

    def start_head(self, num_cpus: int = 1, timeout: float = 90.0) -> str:
        """Start the head node; returns its address ``127.0.0.1:PORT``."""
        port = free_port()
        self._start(
            "head",
            [
                "--head",
                "--node-ip-address",
                "127.0.0.1",
                "--port",
                str(port),
                "--num-cpus",
                str(num_cpus),
                "--temp-dir",
                str(self.root),
                "--include-dashboard",
                "false",
                "--dashboard-port",
                str(free_port()),
                "--system-config",
                json.dumps(self.system_config),
            ],
            head=True,
            timeout=timeout,
        )
        self.address = f"127.0.0.1:{port}"
        return self.address

    def add_node(
        self, num_cpus: int = 1, resources: dict[str, float] | None = None, timeout: float = 90.0
    ) -> LocalNode:
        """Start one more node joining the head (its ``name`` is its Ray ``NodeName``)."""
        if self.address is None:
            raise ClusterError("start the head first")
        name = f"worker{sum(not n.head for n in self.nodes) + 1}"
        args = [
            "--address",
            self.address,
            "--node-ip-address",
            "127.0.0.1",
            "--num-cpus",
            str(num_cpus),
        ]
        if resources:
            args += ["--resources", json.dumps(resources)]
        return self._start(name, args, head=False, timeout=timeout)

    @staticmethod
    def node_id(node: LocalNode) -> str:
        """The Ray node id of ``node`` (needs a connected driver)."""
        import ray

        for info in ray.nodes():
            if info.get("NodeName") == node.name and info.get("Alive"):
                return str(info["NodeID"])
        raise ClusterError(f"node {node.name} is not alive in the cluster")

    def processes(self, node: LocalNode) -> list[int]:
        """Pids of ``node``: its process group and their descendants (Ray starts each worker
        process in a process group of its own, so the group alone misses the workers)."""
        return _tree(_group_members(node.pgid))

    def kill_node(self, node: LocalNode) -> None:
        """SIGKILL every process of ``node`` at once (a machine lost, not a graceful stop)."""
        pids = self.processes(node)
        _signal_group(node.pgid, signal.SIGKILL)
        _kill(pids)

    # ------------------------------------------------------------- shutdown
    def shutdown(self, grace: float = 5.0) -> None:
        """End every process started here (workers first, then the head), remove the folder."""
        pids = [pid for node in self.nodes for pid in self.processes(node)]
        for node in sorted(self.nodes, key=lambda n: n.head):
            _signal_group(node.pgid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and any(_group_alive(n.pgid) for n in self.nodes):
            time.sleep(0.2)
        for node in self.nodes:
            _signal_group(node.pgid, signal.SIGKILL)
        _kill([*pids, *self.stragglers()])
        # a killed process lingers a moment on a loaded machine: wait until it is gone
        deadline = time.monotonic() + grace
        while time.monotonic() < deadline and (still_running(pids) or self.stragglers()):
            time.sleep(0.1)
        self.nodes.clear()
        shutil.rmtree(self.root, ignore_errors=True)

    def stragglers(self) -> list[int]:
        """Pids of live processes that name this cluster's folder on their command line."""
        pids = []
        for proc in Path("/proc").iterdir():
            if not proc.name.isdigit() or int(proc.name) == os.getpid():
                continue
            try:
                cmd = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
                state = (proc / "stat").read_text().split()[2]
            except OSError:
                continue
            if str(self.root) in cmd and state != "Z":
                pids.append(int(proc.name))
        return pids

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.shutdown()


def _proc_table() -> dict[int, tuple[int, int]]:
    """``pid -> (ppid, pgid)`` of every live, non-zombie process."""
    table = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            fields = (proc / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if fields[0] != "Z":
            table[int(proc.name)] = (int(fields[1]), int(fields[2]))
    return table


def still_running(pids: list[int]) -> list[int]:
    """Those of ``pids`` that are alive (zombies waiting for their parent do not count)."""
    table = _proc_table()
    return [pid for pid in pids if pid in table]


def _group_members(pgid: int) -> list[int]:
    return [pid for pid, (_, group) in _proc_table().items() if group == pgid]


def _tree(roots: list[int]) -> list[int]:
    table = _proc_table()
    found, frontier = set(roots), list(roots)
    while frontier:
        parent = frontier.pop()
        for pid, (ppid, _) in table.items():
            if ppid == parent and pid not in found:
                found.add(pid)
                frontier.append(pid)
    return sorted(found)


def _kill(pids: list[int]) -> None:
    for pid in pids:
        if pid == os.getpid():
            continue
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def _group_alive(pgid: int) -> bool:
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):
        return False
    return True
