"""A lean HTTP/1.1 client for the gateway's one hot request: ``POST /chat/completions`` to the upstream.

Profiled on ``/v1`` (benchmarks/README.md, "Leaner /v1, part 3"), the upstream call through httpcore2's connection
pool was the largest part of the server's CPU per request: anyio's stream wrappers, h11's per-header validation,
trace hooks and the pool's bookkeeping, for one small POST and its answer. This module does just that exchange on
keep-alive connections of its own: an ``asyncio.Protocol`` per connection with httptools' response parser (the C
parser uvicorn uses, already installed with ``uvicorn[standard]``), Content-Length, chunked and close-delimited
bodies, TLS through the event loop with the HTTP client's own SSL context.

Everything else stays with httpx2 (``OpenAIProvider`` takes this route only when the client would use its plain
pool): redirects, proxies, HTTP/2, auth flows, cookies. Failures are raised as httpx2's transport errors
(``ConnectError``, ``ConnectTimeout``, ``ReadError``, ``RemoteProtocolError``, ``WriteError``), so the provider
translates them exactly as before. Time limits other than the connect timeout are the caller's: the provider bounds
every wait for the upstream by its request deadline.
"""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import AsyncIterator
from typing import Any, cast

import httptools
import httpx2

#: Body bytes buffered from the socket before reading pauses until the consumer catches up.
_HIGH_WATER = 1 << 20


class _Connection(asyncio.Protocol):
    """One keep-alive connection: writes a request, parses its response, hands the body over as it arrives."""

    def __init__(self, pool: Http1Pool, origin: tuple[str, str, int]) -> None:
        self.pool = pool
        self.origin = origin
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.lost = False
        self.idle_since = 0.0
        self.response: Http1Response | None = None
        self._can_write: asyncio.Future[None] | None = None

    # -- asyncio.Protocol ------------------------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast("asyncio.Transport", transport)  # uvloop's transports are not asyncio.Transport's

    def data_received(self, data: bytes) -> None:
        response = self.response
        if response is None:  # bytes nobody asked for: the connection cannot be trusted any more
            self.close()
            return
        response.received_any = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            response.fail(httpx2.RemoteProtocolError(f"malformed HTTP response from the upstream: {exc}"))
            self.close()
            return
        if response.buffered > _HIGH_WATER and self.transport is not None:
            self.transport.pause_reading()
            response.paused = True

    def eof_received(self) -> bool | None:
        response = self.response
        if response is not None and response.headers_done and not response.complete and response.until_close:
            response.finish(reusable=False)  # a body that ends when the connection does
        return None

    def connection_lost(self, exc: Exception | None) -> None:
        self.lost = True
        self.pool.forget(self)
        response = self.response
        if response is not None and not response.complete:
            if response.headers_done and response.until_close and exc is None:
                response.finish(reusable=False)
            elif response.headers_done:
                response.fail(httpx2.ReadError(_closed_text(exc, "while sending the response body")))
            else:
                response.fail(httpx2.RemoteProtocolError(_closed_text(exc, "without sending a response")))
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)

    def pause_writing(self) -> None:
        self._can_write = asyncio.get_running_loop().create_future()

    def resume_writing(self) -> None:
        if self._can_write is not None and not self._can_write.done():
            self._can_write.set_result(None)
        self._can_write = None

    # -- httptools callbacks ---------------------------------------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        assert self.response is not None
        self.response.headers.append((name, value))

    def on_headers_complete(self) -> None:
        response = self.response
        assert response is not None
        response.status = self.parser.get_status_code()
        response.keep_alive = self.parser.should_keep_alive()
        lowered = {name.lower() for name, _ in response.headers}
        response.until_close = b"content-length" not in lowered and b"transfer-encoding" not in lowered
        response.headers_done = True
        response.wake()

    def on_body(self, body: bytes) -> None:
        assert self.response is not None
        self.response.add(body)

    def on_message_complete(self) -> None:
        assert self.response is not None
        self.response.finish(reusable=self.response.keep_alive)

    # -- used by the pool and the response ---------------------------------------------------------------------------
    async def write(self, data: bytes) -> None:
        assert self.transport is not None
        if self.lost:
            raise httpx2.WriteError("the upstream closed the connection")
        self.transport.write(data)
        if self._can_write is not None:
            await self._can_write
            if self.lost:
                raise httpx2.WriteError("the upstream closed the connection while the request was being sent")

    def resume_reading(self) -> None:
        if self.transport is not None and not self.lost:
            self.transport.resume_reading()

    def close(self) -> None:
        self.lost = True
        self.pool.forget(self)
        if self.transport is not None:
            self.transport.close()


class Http1Response:
    """The answer to one request: status and headers at once, the body as it arrives (``aiter_bytes``)."""

    def __init__(self, connection: _Connection) -> None:
        self._connection = connection
        self.status = 0
        self.headers: list[tuple[bytes, bytes]] = []
        self.headers_done = False
        self.keep_alive = False
        self.until_close = False
        self.complete = False
        self.paused = False
        self.buffered = 0
        self._chunks: deque[bytes] = deque()
        self._error: Exception | None = None
        self._reusable = False
        self._waiter: asyncio.Future[None] | None = None
        self._closed = False
        self.received_any = False  # a byte of the answer arrived: the request reached the server

    # -- fed by the connection ---------------------------------------------------------------------------------------
    def add(self, body: bytes) -> None:
        self._chunks.append(body)
        self.buffered += len(body)
        self.wake()

    def finish(self, *, reusable: bool) -> None:
        self.complete = True
        self._reusable = reusable
        self.wake()

    def fail(self, error: Exception) -> None:
        if self._error is None:
            self._error = error
        self.wake()

    def wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def _wait(self) -> None:
        self._waiter = asyncio.get_running_loop().create_future()
        try:
            await self._waiter
        finally:
            self._waiter = None

    # -- read by the caller -------------------------------------------------------------------------------------------
    async def _headers(self) -> None:
        while not self.headers_done:
            if self._error is not None:
                raise self._error
            await self._wait()

    async def aiter_bytes(self) -> AsyncIterator[bytes]:
        """The body's bytes (chunked encoding removed) as they arrive; raises the connection's failure."""
        while True:
            if self._chunks:
                chunk = self._chunks.popleft()
                self.buffered -= len(chunk)
                if self.paused and self.buffered <= _HIGH_WATER // 2:
                    self.paused = False
                    self._connection.resume_reading()
                yield chunk
            elif self.complete:
                return
            elif self._error is not None:
                raise self._error
            else:
                await self._wait()

    async def aread(self) -> bytes:
        return b"".join([chunk async for chunk in self.aiter_bytes()])

    async def aclose(self) -> None:
        """Give the connection back for the next request when the body was read to its end, else close it."""
        if self._closed:
            return
        self._closed = True
        connection = self._connection
        connection.response = None
        if self.complete and self._reusable and not self._chunks and self._error is None:
            connection.pool.release(connection)
        else:
            connection.close()


class Http1Pool:
    """Keep-alive HTTP/1.1 connections per origin, for ``POST``s with a body of known length."""

    def __init__(
        self,
        *,
        ssl_context: ssl.SSLContext | None = None,
        connect_timeout: float | None = None,
        keepalive_expiry: float = 5.0,
        max_idle: int = 100,
    ) -> None:
        self.ssl_context = ssl_context
        self.connect_timeout = connect_timeout
        self.keepalive_expiry = keepalive_expiry
        self.max_idle = max_idle
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._open: set[_Connection] = set()

    async def post(self, origin: tuple[str, str, int], head: bytes, body: bytes) -> Http1Response:
        """Send ``head`` (request line and headers, without the final blank line) and ``body``; the response once its
        headers are in. A reused connection that closes before answering is retried once on a new one (the server
        dropped it while idle; the request never reached it)."""
        message = b"%s\r\nContent-Length: %d\r\n\r\n%s" % (head, len(body), body)
        connection = self._reused(origin)
        if connection is not None:
            try:
                return await self._exchange(connection, message)
            except httpx2.TransportError:
                if connection.response is not None and connection.response.received_any:
                    raise
                connection.close()
        return await self._exchange(await self._connect(origin), message)

    async def _exchange(self, connection: _Connection, message: bytes) -> Http1Response:
        response = Http1Response(connection)
        connection.response = response
        try:
            await connection.write(message)
            await response._headers()
        except BaseException:
            connection.close()
            raise
        return response

    def _reused(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin)
        if not idle:
            return None
        now = asyncio.get_running_loop().time()
        while idle:
            connection = idle.pop()
            if connection.lost or now - connection.idle_since > self.keepalive_expiry:
                connection.close()
                continue
            return connection
        return None

    async def _connect(self, origin: tuple[str, str, int]) -> _Connection:
        scheme, host, port = origin
        loop = asyncio.get_running_loop()
        tls: ssl.SSLContext | None = None
        if scheme == "https":
            tls = self.ssl_context or ssl.create_default_context()
        connection = _Connection(self, origin)
        try:
            async with asyncio.timeout(self.connect_timeout):
                await loop.create_connection(
                    lambda: connection, host, port, ssl=tls, server_hostname=host if tls is not None else None
                )
        except TimeoutError:
            raise httpx2.ConnectTimeout(f"no connection to {host}:{port} within {self.connect_timeout:g}s") from None
        except ssl.SSLError:
            raise
        except OSError as exc:
            raise httpx2.ConnectError(str(exc) or type(exc).__name__) from exc
        self._open.add(connection)
        return connection

    def release(self, connection: _Connection) -> None:
        if connection.lost:
            return
        idle = self._idle.setdefault(connection.origin, [])
        if len(idle) >= self.max_idle:
            connection.close()
            return
        connection.idle_since = asyncio.get_running_loop().time()
        idle.append(connection)

    def forget(self, connection: _Connection) -> None:
        self._open.discard(connection)
        idle = self._idle.get(connection.origin)
        if idle and connection in idle:
            idle.remove(connection)

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        for connection in list(self._open):
            connection.close()
        self._idle.clear()


def _closed_text(exc: Exception | None, when: str) -> str:
    cause = f": {exc}" if exc is not None and str(exc) else ""
    return f"Server disconnected {when}{cause}"


def request_head(method: str, target: bytes, headers: list[tuple[bytes, bytes]]) -> bytes:
    """The request line and headers of a request, ready for ``Http1Pool.post`` (which adds Content-Length)."""
    lines = [b"%s %s HTTP/1.1" % (method.encode("ascii"), target)]
    lines.extend(b"%s: %s" % (name, value) for name, value in headers)
    return b"\r\n".join(lines)


def pool_settings(pool: Any) -> dict[str, Any] | None:
    """What an httpcore2 pool is set to, as ``Http1Pool`` arguments; None when it has something this client does not
    do (HTTP/2, a proxy, a Unix socket, a local address, socket options)."""
    if (
        getattr(pool, "_http2", False)
        or getattr(pool, "_proxy", None) is not None
        or getattr(pool, "_uds", None) is not None
        or getattr(pool, "_local_address", None) is not None
        or getattr(pool, "_socket_options", None)
    ):
        return None
    expiry = getattr(pool, "_keepalive_expiry", None)
    return {
        "ssl_context": getattr(pool, "_ssl_context", None),
        "keepalive_expiry": 5.0 if expiry is None else float(expiry),
        "max_idle": int(getattr(pool, "_max_keepalive_connections", None) or 100),
    }
