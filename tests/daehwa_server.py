"""A real ``daehwa serve`` subprocess on a free port, answering with a ``FakeUpstream`` (for the client tests).

    with FakeUpstream(models=("m1",)) as up, serving(tmp_path, up) as server:
        DaehwaClient(server.url, api_key=server.key)

The server has one user with a password and an API key (``server.username``, ``server.password``, ``server.key``);
``env`` adds or overrides settings. Breakers and retries are set so that a scripted upstream failure is one failed
turn, not a breaker that stays open for the next test.
"""

from __future__ import annotations

import contextlib
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.api_helpers import free_port
from tests.fake_upstream import FakeUpstream


@dataclass
class Served:
    url: str
    key: str
    username: str
    password: str
    upstream: FakeUpstream
    env: dict[str, str]
    log: Path
    proc: subprocess.Popen[bytes]

    def daehwa(self, *args: str, stdin: str | None = None) -> str:
        """Run a ``daehwa`` command against the same store; its stdout."""
        return run_daehwa(self.env, *args, stdin=stdin)


def run_daehwa(env: Mapping[str, str], *args: str, stdin: str | None = None) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=dict(env), input=stdin, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def server_env(tmp_path: Path, upstream: FakeUpstream, port: int, env: Mapping[str, str] | None) -> dict[str, str]:
    providers = tmp_path / "providers.toml"
    models = ", ".join(f'"{m}"' for m in upstream.models)
    providers.write_text(f'[providers.up]\ntype = "openai"\nbase_url = "{upstream.base_url}"\nmodels = [{models}]\n')
    out = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    out.update(
        DAEHWA_DATA_DIR=str(tmp_path),
        DAEHWA_DATABASE_URL=f"sqlite:///{tmp_path / 'd.db'}",
        DAEHWA_PROVIDERS_FILE=str(providers),
        DAEHWA_DEFAULT_MODEL=f"up/{upstream.models[0]}",
        DAEHWA_PORT=str(port),
        DAEHWA_LOG_LEVEL="warning",
        DAEHWA_RETRY_ATTEMPTS="1",
        DAEHWA_BREAKER_MIN_REQUESTS="1000",
        DAEHWA_FILTER_OUTPUT_ACTION="off",
    )
    out.update(env or {})
    return out


@contextlib.contextmanager
def serving(
    tmp_path: Path, upstream: FakeUpstream, *, env: Mapping[str, str] | None = None, username: str = "tester"
) -> Iterator[Served]:
    port = free_port()
    full = server_env(tmp_path, upstream, port, env)
    password = "a long password"
    run_daehwa(full, "users", "create", username, "--password-stdin", stdin=password + "\n")
    key = run_daehwa(full, "keys", "create", "--user", username).strip().splitlines()[-1]
    assert key.startswith("dh-"), key
    url = f"http://127.0.0.1:{port}"
    log = tmp_path / "serve.log"
    with running([sys.executable, "-m", "daehwa", "serve"], env=full, log=log, ready_url=f"{url}/healthz") as proc:
        yield Served(url, key, username, password, upstream, full, log, proc)


@contextlib.contextmanager
def running(
    argv: list[str],
    *,
    env: Mapping[str, str],
    log: Path,
    ready_url: str,
    timeout: float = 60,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """A server process (output appended to ``log``) once ``ready_url`` answers 200; terminated afterwards (killed
    if it does not stop within 15 s). A process that exits or never answers fails the test with its log."""
    with log.open("ab") as sink:
        proc = subprocess.Popen(argv, env=dict(env), cwd=cwd, stdout=sink, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + timeout
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(ready_url, timeout=1).status_code == 200:
                    break
            assert proc.poll() is None, f"{argv[-1]} exited with {proc.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"{ready_url} did not answer within {timeout:.0f} s:\n{log.read_text()}"
            time.sleep(0.1)
        yield proc
    finally:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


class CuttingProxy:
    """A TCP proxy on 127.0.0.1 in front of a server that can drop a client's connection mid-reply.

    ``cut_after(b"event: delta")`` arms it: the next response chunk holding those bytes is passed on, then that
    connection is closed on both sides (the server sees the client leave, the client sees its body end early).
    ``down()`` closes every open connection and refuses new ones, as if the server were gone, until ``up()``.
    """

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(16)
        self.port = int(self._listener.getsockname()[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._marker: bytes | None = None
        self.cuts = 0
        self.refusing = False
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    def cut_after(self, marker: bytes) -> None:
        with self._lock:
            self._marker = marker

    def down(self) -> None:
        self.refusing = True
        with self._lock:
            sockets, self._open = list(self._open), set()
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)

    def up(self) -> None:
        self.refusing = False

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            if self.refusing:
                client.close()
                continue
            upstream = socket.create_connection(("127.0.0.1", self.target_port))
            with self._lock:
                self._open.update((client, upstream))
            threading.Thread(target=self._pipe, args=(client, upstream, False), daemon=True).start()
            threading.Thread(target=self._pipe, args=(upstream, client, True), daemon=True).start()

    def _pipe(self, source: socket.socket, sink: socket.socket, responses: bool) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
                if responses:
                    with self._lock:
                        cut = self._marker is not None and self._marker in data
                        if cut:
                            self._marker = None
                            self.cuts += 1
                    if cut:
                        break
        except OSError:
            pass
        for sock in (source, sink):
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
            with self._lock:
                self._open.discard(sock)

    def close(self) -> None:
        self._closed = True
        self._listener.close()

    def __enter__(self) -> CuttingProxy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
