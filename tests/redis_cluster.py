"""A throwaway 3-master Redis Cluster for the test session: ``redis-server`` processes on free loopback ports.

``redis_cluster_url`` starts it on first use (about a second), yields ``redis+cluster://127.0.0.1:<port>`` and
stops the processes at the end of the session. Without ``redis-server`` the tests that use it skip, except under
CI=true, where they fail (``require``). ``DAEHWA_TEST_REDIS_CLUSTER_URL`` points the tests at a cluster of your own.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

START_SECONDS = 30.0  # the whole start (processes, slots, agreement) must take less than this


def _free(port: int) -> bool:
    with socket.socket() as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _free_ports(n: int) -> list[int]:
    """``n`` ports whose cluster-bus port (+10000) is free as well."""
    found: list[int] = []
    while len(found) < n:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port + 10_000 < 65_536 and port not in found and _free(port + 10_000):
            found.append(port)
    return found


def _cli(port: int, *args: str) -> str:
    done = subprocess.run(
        ["redis-cli", "-h", "127.0.0.1", "-p", str(port), *args], capture_output=True, text=True, timeout=10
    )
    return done.stdout


def start_cluster(workdir: Path, masters: int = 3) -> tuple[list[subprocess.Popen[bytes]], list[int]]:
    """Start ``masters`` redis-server processes, give them the 16384 slots and wait until they all agree."""
    ports = _free_ports(masters)
    procs: list[subprocess.Popen[bytes]] = []
    deadline = time.monotonic() + START_SECONDS
    try:
        for port in ports:
            node_dir = workdir / str(port)
            node_dir.mkdir(parents=True)
            procs.append(
                subprocess.Popen(
                    ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--cluster-enabled", "yes",
                     "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "5000", "--dir", str(node_dir),
                     "--save", "", "--appendonly", "no", "--daemonize", "no", "--loglevel", "warning"],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )  # fmt: skip
        for port in ports:
            while _cli(port, "ping").strip() != "PONG":
                if time.monotonic() > deadline:
                    raise TimeoutError(f"redis-server on port {port} did not start")
                time.sleep(0.05)
        # Slots in even ranges, then every node meets the first one.
        per = 16_384 // masters
        for i, port in enumerate(ports):
            last = 16_383 if i == masters - 1 else (i + 1) * per - 1
            _cli(port, "cluster", "addslotsrange", str(i * per), str(last))
        for port in ports[1:]:
            _cli(port, "cluster", "meet", "127.0.0.1", str(ports[0]))
        for port in ports:
            while "cluster_state:ok" not in _cli(port, "cluster", "info") or (
                f"cluster_known_nodes:{masters}" not in _cli(port, "cluster", "info")
            ):
                if time.monotonic() > deadline:
                    raise TimeoutError(f"the cluster did not agree within {START_SECONDS:.0f}s")
                time.sleep(0.1)
    except BaseException:
        stop_cluster(procs)
        raise
    return procs, ports


def stop_cluster(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=5)


@pytest.fixture(scope="session")
def redis_cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    from .conftest import require

    own = os.environ.get("DAEHWA_TEST_REDIS_CLUSTER_URL")
    if own:
        yield own
        return
    require(shutil.which("redis-server") is not None and shutil.which("redis-cli") is not None,
            "redis-server/redis-cli are not installed (apt-get install redis-server), so no Redis Cluster")  # fmt: skip
    procs, ports = start_cluster(tmp_path_factory.mktemp("redis-cluster"))
    try:
        yield f"redis+cluster://127.0.0.1:{ports[0]}"
    finally:
        stop_cluster(procs)
