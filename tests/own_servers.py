"""A redis-server or a PostgreSQL server of a test's (or a benchmark's) own, on a free loopback port, that it may stop
and start again: the outage tests and ``benchmarks/bench_load.py --restart-store`` use these, never the shared
servers (which must never be stopped).

Both keep their data across a restart (Redis: an append-only file synced on every write; PostgreSQL: its data
directory, stopped with a fast shutdown), so what was acknowledged before the outage is still there after it.
PostgreSQL refuses to run as root: as root, its data directory belongs to, and the server runs as, the ``postgres``
system user (Debian's packages create it).
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _listening(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.2)
        return s.connect_ex(("127.0.0.1", port)) == 0


class OwnRedis:
    """A redis-server on a free port with its append-only file in ``data``; ``stop`` and ``start`` again."""

    name = "redis"
    label = "Redis"

    def __init__(self, data: Path) -> None:
        self.data = data
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def available() -> str | None:
        """None, or why this server cannot run here."""
        return None if shutil.which("redis-server") else "redis-server is not installed"

    def start(self) -> None:
        import redis

        durable = ["--save", "", "--appendonly", "yes", "--appendfsync", "always", "--protected-mode", "no"]
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.data), *durable],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if redis.Redis(port=self.port, socket_timeout=0.5).ping():
                    return
            except redis.exceptions.RedisError:
                time.sleep(0.05)
        raise RuntimeError(f"redis-server did not start on port {self.port}")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()  # SIGTERM: redis-server flushes its append-only file and exits
            self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        self.stop()


def postgres_bindir() -> Path | None:
    """Where Debian's PostgreSQL server binaries are (``DAEHWA_TEST_PG_BINDIR`` overrides), newest version first."""
    if os.environ.get("DAEHWA_TEST_PG_BINDIR"):
        return Path(os.environ["DAEHWA_TEST_PG_BINDIR"])
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"), key=lambda p: int(p.split("/")[4] or 0))
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("postgres")
    return Path(on_path).parent if on_path else None


class OwnPostgres:
    """A PostgreSQL server on a free port with its own data directory (``initdb`` once); ``stop`` and ``start``
    again. ``close`` stops it and removes the directory."""

    name = "postgres"
    label = "PostgreSQL"

    def __init__(self) -> None:
        bindir = postgres_bindir()
        if bindir is None:
            raise RuntimeError(self.available() or "no PostgreSQL binaries")
        self.bindir = bindir
        self.port = free_port()
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self.proc: subprocess.Popen[bytes] | None = None
        # Not under pytest's tmp_path: its parents are private to root, and the server may run as another user.
        self.root = Path(tempfile.mkdtemp(prefix="daehwa-pg-"))
        self.data = self.root / "data"
        self.user = _server_user()
        if self.user is not None:
            os.chown(self.root, self.user.pw_uid, self.user.pw_gid)
        self._run(
            [
                str(self.bindir / "initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ]
        )

    @staticmethod
    def available() -> str | None:
        if postgres_bindir() is None:
            return "PostgreSQL's server binaries (initdb, postgres) are not installed"
        if os.geteuid() == 0 and _server_user() is None:
            return "running as root and there is no 'postgres' user to run a PostgreSQL server as"
        return None

    def _user_args(self) -> dict[str, object]:
        if self.user is None:
            return {}
        return {"user": self.user.pw_uid, "group": self.user.pw_gid, "extra_groups": []}

    def _run(self, argv: list[str]) -> None:
        done = subprocess.run(argv, capture_output=True, timeout=120, cwd=self.root, **self._user_args())  # type: ignore[call-overload]
        if done.returncode != 0:
            raise RuntimeError(f"{argv[0]} failed: {done.stderr.decode(errors='replace')[-2000:]}")

    def start(self) -> None:
        argv = [
            str(self.bindir / "postgres"),
            "-D",
            str(self.data),
            "-p",
            str(self.port),
            "-k",
            str(self.root),
            "-c",
            "listen_addresses=127.0.0.1",
            "-c",
            "fsync=off",
            "-c",
            "max_connections=200",
        ]
        log = (self.root / "server.log").open("ab")
        # fsync=off: the test stops the server, never the machine; what a commit acknowledged survives a restart.
        self.proc = subprocess.Popen(argv, stdout=log, stderr=log, cwd=self.root, **self._user_args())  # type: ignore[call-overload]
        log.close()
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"postgres exited: {(self.root / 'server.log').read_text()[-2000:]}")
            if _listening(self.port) and self._ready():
                return
            time.sleep(0.1)
        raise RuntimeError(f"postgres did not start on port {self.port}")

    def _ready(self) -> bool:
        ready = subprocess.run(
            [str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"],
            capture_output=True,
            timeout=10,
        )
        return ready.returncode == 0

    def stop(self) -> None:
        """A fast shutdown (SIGINT to this server's own postmaster): open connections are cut, as in an outage."""
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.send_signal(signal.SIGQUIT)  # immediate shutdown
                self.proc.wait(10)
            self.proc = None

    def close(self) -> None:
        try:
            self.stop()
        finally:
            shutil.rmtree(self.root, ignore_errors=True)


def _server_user() -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        return None


@contextmanager
def own_server(kind: str, data: Path) -> Iterator[OwnRedis | OwnPostgres]:
    """A started server of ``kind`` ("redis" or "postgres"), closed afterwards."""
    server: OwnRedis | OwnPostgres = OwnRedis(data) if kind == "redis" else OwnPostgres()
    try:
        server.start()
        yield server
    finally:
        server.close()
