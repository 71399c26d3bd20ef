"""The lean HTTP/1.1 client of the /v1 hot path (daehwa/providers/http1.py) against real sockets on loopback."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path

import httpx2
import pytest

from daehwa.providers.http1 import Http1Pool, pool_settings, request_head

Answer = Callable[[bytes], list[bytes]]  # the request's body -> what the server writes back, piece by piece


class RawServer:
    """A loopback HTTP server that answers each request with scripted bytes, counting connections."""

    def __init__(self, answer: Answer, *, close_after: bool = False) -> None:
        self.answer = answer
        self.close_after = close_after  # close each connection after its first answer (an idle timeout)
        self.connections = 0
        self.requests: list[tuple[bytes, bytes]] = []  # (head, body)
        self.server: asyncio.Server | None = None
        self.port = 0

    async def __aenter__(self) -> RawServer:
        self.server = await asyncio.start_server(self._handle, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self.server is not None
        self.server.close()
        await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except asyncio.IncompleteReadError:
                    return
                length = 0
                for line in head.split(b"\r\n"):
                    if line.lower().startswith(b"content-length:"):
                        length = int(line.split(b":", 1)[1])
                body = await reader.readexactly(length)
                self.requests.append((head, body))
                for piece in self.answer(body):
                    if piece == b"<close>":
                        return
                    writer.write(piece)
                    await writer.drain()
                    await asyncio.sleep(0)
                if self.close_after:
                    return
        finally:
            writer.close()


def ok(body: bytes, *, extra: bytes = b"") -> list[bytes]:
    return [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n%sContent-Length: %d\r\n\r\n" % (extra, len(body)), body]


def head_for(port: int) -> bytes:
    return request_head("POST", b"/v1/chat/completions", [(b"Host", b"127.0.0.1:%d" % port)])


async def post(pool: Http1Pool, server: RawServer, body: bytes = b"{}") -> tuple[int, bytes]:
    response = await pool.post(("http", "127.0.0.1", server.port), head_for(server.port), body)
    try:
        return response.status, await response.aread()
    finally:
        await response.aclose()


LOOPS: dict[str, Callable[[], asyncio.AbstractEventLoop]] = {"asyncio": asyncio.new_event_loop}
try:
    import uvloop
except ImportError:  # pragma: no cover - uvloop is installed with uvicorn[standard] where it builds
    pass
else:
    LOOPS["uvloop"] = uvloop.new_event_loop


def on_both_loops(scenario: Callable[[Http1Pool], Awaitable[None]]) -> Callable[[str], None]:
    """The scenario as a test on asyncio's loop and on uvloop (the served app's, whose transports differ), with a
    fresh pool each time."""

    @pytest.mark.parametrize("loop", sorted(LOOPS))
    def test(loop: str) -> None:
        async def main() -> None:
            pool = Http1Pool(connect_timeout=5)
            try:
                await scenario(pool)
            finally:
                await pool.aclose()

        with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
            runner.run(main())

    test.__name__, test.__doc__ = scenario.__name__, scenario.__doc__
    return test


@on_both_loops
async def test_sends_the_request_and_reuses_the_connection(pool: Http1Pool) -> None:
    async with RawServer(lambda body: ok(b"echo:" + body)) as server:
        assert await post(pool, server, b'{"a":1}') == (200, b'echo:{"a":1}')
        assert await post(pool, server, b'{"b":2}') == (200, b'echo:{"b":2}')
    assert server.connections == 1
    head, body = server.requests[0]
    assert head.startswith(b"POST /v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1:")
    assert b"\r\nContent-Length: 7\r\n" in head and body == b'{"a":1}'


@on_both_loops
async def test_chunked_body_arrives_piece_by_piece_without_the_chunk_framing(pool: Http1Pool) -> None:
    events = [b"data: one\n\n", b"data: two\n\n", b"data: [DONE]\n\n"]

    def answer(_: bytes) -> list[bytes]:
        framed = [b"%x\r\n%s\r\n" % (len(e), e) for e in events]
        return [b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n", *framed, b"0\r\n\r\n"]

    async with RawServer(answer) as server:
        response = await pool.post(("http", "127.0.0.1", server.port), head_for(server.port), b"{}")
        assert response.status == 200
        got = [chunk async for chunk in response.aiter_bytes()]
        await response.aclose()
        assert b"".join(got) == b"".join(events)
        assert await post(pool, server) == (200, b"".join(events))  # the same connection again
    assert server.connections == 1


@on_both_loops
async def test_a_body_that_ends_with_the_connection_is_complete_and_not_reused(pool: Http1Pool) -> None:
    async with RawServer(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\n", b"until ", b"close"]) as s:
        s.close_after = True
        assert await post(pool, s) == (200, b"until close")
        assert await post(pool, s) == (200, b"until close")
    assert s.connections == 2


@on_both_loops
async def test_connection_close_is_honoured(pool: Http1Pool) -> None:
    async with RawServer(lambda _: ok(b"bye", extra=b"Connection: close\r\n")) as server:
        assert await post(pool, server) == (200, b"bye")
        assert await post(pool, server) == (200, b"bye")
    assert server.connections == 2


@on_both_loops
async def test_an_idle_connection_the_server_closed_is_replaced_at_once(pool: Http1Pool) -> None:
    async with RawServer(lambda _: ok(b"fine"), close_after=True) as server:
        assert await post(pool, server) == (200, b"fine")
        await asyncio.sleep(0.05)  # the server's FIN arrives while the connection is idle
        assert await post(pool, server) == (200, b"fine")
    assert server.connections == 2


@on_both_loops
async def test_a_reused_connection_dropped_before_answering_is_retried_once(pool: Http1Pool) -> None:
    calls = 0

    def answer(_: bytes) -> list[bytes]:
        nonlocal calls
        calls += 1
        return ok(b"first") if calls == 1 else [b"<close>"] if calls == 2 else ok(b"again")

    async with RawServer(answer) as server:
        assert await post(pool, server) == (200, b"first")
        assert await post(pool, server) == (200, b"again")  # request 2 was dropped unanswered: sent again, new conn
    assert server.connections == 2 and calls == 3


@on_both_loops
async def test_a_fresh_connection_dropped_before_answering_is_an_error(pool: Http1Pool) -> None:
    async with RawServer(lambda _: [b"<close>"]) as server:
        with pytest.raises(httpx2.RemoteProtocolError, match="without sending a response"):
            await post(pool, server)
    assert server.connections == 1


@on_both_loops
async def test_a_body_cut_short_is_a_read_error_and_the_connection_is_not_reused(pool: Http1Pool) -> None:
    async with RawServer(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n", b"only part", b"<close>"]) as s:
        response = await pool.post(("http", "127.0.0.1", s.port), head_for(s.port), b"{}")
        got = b""
        with pytest.raises(httpx2.ReadError, match="while sending the response body"):
            async for chunk in response.aiter_bytes():
                got += chunk
        await response.aclose()
        assert got == b"only part"


@on_both_loops
async def test_a_malformed_response_is_a_protocol_error(pool: Http1Pool) -> None:
    async with RawServer(lambda _: [b"SMTP ready\r\n\r\n"]) as server:
        with pytest.raises(httpx2.RemoteProtocolError, match="malformed HTTP response"):
            await post(pool, server)


@on_both_loops
async def test_nobody_listening_is_a_connect_error(pool: Http1Pool) -> None:
    async with RawServer(lambda _: ok(b"")) as server:
        port = server.port
    with pytest.raises(httpx2.ConnectError):
        await pool.post(("http", "127.0.0.1", port), head_for(port), b"{}")


@on_both_loops
async def test_a_consumer_that_stops_reading_closes_the_connection(pool: Http1Pool) -> None:
    async with RawServer(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"12345"]) as server:
        response = await pool.post(("http", "127.0.0.1", server.port), head_for(server.port), b"{}")
        reader = response.aiter_bytes()
        assert await anext(reader) == b"12345"
        await reader.aclose()
        await response.aclose()  # half a body: the connection cannot carry another request
        server.answer = lambda _: ok(b"next")
        assert await post(pool, server) == (200, b"next")
    assert server.connections == 2


@on_both_loops
async def test_a_large_body_is_read_whole_through_backpressure(pool: Http1Pool) -> None:
    big = bytes(range(256)) * (5 * 4096)  # 5 MiB, more than the 1 MiB read buffer

    def answer(_: bytes) -> list[bytes]:
        head = b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(big)
        return [head, *(big[i : i + 65536] for i in range(0, len(big), 65536))]

    async with RawServer(answer) as server:
        response = await pool.post(("http", "127.0.0.1", server.port), head_for(server.port), b"{}")
        got = bytearray()
        async for chunk in response.aiter_bytes():
            got += chunk
            await asyncio.sleep(0)  # a slow consumer
        await response.aclose()
        assert bytes(got) == big
        assert await post(pool, server) == (200, big)
    assert server.connections == 1


@on_both_loops
async def test_a_large_request_body_is_sent_whole(pool: Http1Pool) -> None:
    big = b"x" * (8 << 20)
    async with RawServer(lambda body: ok(b"%d" % len(body))) as server:
        assert await post(pool, server, big) == (200, b"%d" % len(big))


@on_both_loops
async def test_close_closes_connections_in_use(made: Http1Pool) -> None:
    async with RawServer(lambda _: [b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n", b"12345"]) as server:
        response = await made.post(("http", "127.0.0.1", server.port), head_for(server.port), b"{}")
        await made.aclose()
        with pytest.raises(httpx2.ReadError):
            await response.aread()


def test_pool_settings_take_the_plain_pool_and_refuse_what_this_client_does_not_do() -> None:
    import httpcore2

    plain = httpcore2.AsyncConnectionPool(max_keepalive_connections=7, keepalive_expiry=2.5)
    settings = pool_settings(plain)
    assert settings is not None and settings["max_idle"] == 7 and settings["keepalive_expiry"] == 2.5
    assert pool_settings(httpcore2.AsyncConnectionPool(http2=True)) is None
    assert pool_settings(httpcore2.AsyncConnectionPool(uds="/tmp/x.sock")) is None
    assert pool_settings(httpcore2.AsyncConnectionPool(local_address="127.0.0.1")) is None


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A self-signed certificate for localhost and its key."""
    if shutil.which("openssl") is None:
        pytest.skip("needs the openssl command to make a certificate")
    folder = tmp_path_factory.mktemp("tls")
    cert, key = folder / "cert.pem", folder / "key.pem"
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"),
            *("-addext", "subjectAltName=DNS:localhost", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert, key


@pytest.mark.parametrize("loop", sorted(LOOPS))
def test_https_through_the_given_ssl_context(loop: str, certificate: tuple[Path, Path]) -> None:
    cert, key = certificate
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    served.load_cert_chain(cert, key)
    trusting = ssl.create_default_context(cafile=str(cert))

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await reader.readuntil(b"\r\n\r\n")
        await reader.readexactly(2)
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: 6\r\n\r\nsecret")
        await writer.drain()
        writer.close()

    async def main() -> None:
        server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=served)
        port = server.sockets[0].getsockname()[1]
        try:
            made = Http1Pool(ssl_context=trusting, connect_timeout=5)
            try:
                response = await made.post(("https", "localhost", port), head_for(port), b"{}")
                assert (response.status, await response.aread()) == (200, b"secret")
                await response.aclose()
            finally:
                await made.aclose()
            untrusting = Http1Pool(ssl_context=ssl.create_default_context(), connect_timeout=5)
            with pytest.raises(ssl.SSLError):
                await untrusting.post(("https", "localhost", port), head_for(port), b"{}")
            await untrusting.aclose()
        finally:
            server.close()
            await server.wait_closed()

    with asyncio.Runner(loop_factory=LOOPS[loop]) as runner:
        runner.run(main())
