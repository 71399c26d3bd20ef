"""A real OpenAI-compatible HTTP server on 127.0.0.1 with a script of replies and faults, for tests and benchmarks.

It is a small HTTP/1.1 server (h11 over asyncio streams) running its own event loop in a background thread. We do not
use uvicorn here because the faults live below HTTP: a connection reset must be a real TCP RST at a chosen point of
the stream, a stall must hang the socket, and shutdown must be immediate even with hung streams open.

    with FakeUpstream() as up:
        up.enqueue(Reply("Hello there", chunks=["Hel", "lo there"]), Fault.status(503))
        ...  # point a client at up.base_url
        up.requests[0].json["model"]

Each request to ``POST /v1/chat/completions`` takes the next behaviour from the queue, or ``up.default`` when the queue
is empty. With an empty queue, directives in the last user message script the reply instead, so a test that only
controls what a user types (a browser, a subprocess, a hand-made curl) can still call for a fault; the reply then
echoes the message (``"ECHO: "`` + the text without its directives):

    [[stall]]          the echo in 4-character chunks, all but the last one, then hang (``break [[stall]]`` sends
                       ``ECHO`` and ``: br``)
    [[nofinish]]       the echo word by word, no ``finish_reason`` at all, then ``[DONE]``
    [[nodone]]         the echo with its ``finish_reason`` and usage, then the body ends without ``[DONE]``
    [[steady N MS]]    ``N`` words (``w1 w2 ...``), one every ``MS`` milliseconds, then a normal finish

Directive replies are ``close_delimited`` (no chunked encoding), so killing the upstream's process mid-stream
(``python -m tests.fake_upstream``) ends the body the way issue 15 saw it: cleanly, with nothing but the stream's own
content to say it was cut off.

``GET /v1/models`` lists ``up.models``. ``FakeUpstream(instant=True)`` skips recording and scripting and answers every
request with a precomputed reply, for latency benchmarks; ``python -m tests.fake_upstream --instant`` runs one in its
own process.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import itertools
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import h11
import pytest

__all__ = ["FakeUpstream", "Fault", "RecordedRequest", "Reply", "fake_upstream"]

_WORD = re.compile(r"\S+\s*|\s+")
_DIRECTIVE = re.compile(r"\[\[\s*(stall|nofinish|nodone|steady\s+(\d+)\s+(\d+))\s*\]\]")


@dataclass(frozen=True)
class Reply:
    """A successful completion. ``text`` may be a list with one text per choice (for ``n`` > 1).

    ``chunks`` fixes how a single text is split into stream chunks (default: word by word). ``usage`` is
    ``(prompt_tokens, completion_tokens)``; by default prompt tokens are the words of the request's messages and
    completion tokens the number of chunks. ``send_usage=False`` never sends usage, even when asked.
    """

    text: str | Sequence[str] = "Hello from the fake upstream."
    chunks: Sequence[str] | None = None
    finish_reason: str = "stop"
    usage: tuple[int, int] | None = None
    send_usage: bool = True
    model: str | None = None  # None: echo the request's model
    chunk_delay: float = 0.0  # seconds between stream chunks
    headers: Mapping[str, str] = field(default_factory=dict)
    send_finish: bool = True  # False: no chunk carries a finish_reason (a stream cut short that still says [DONE])
    send_done: bool = True  # False: the body ends after the last chunk without ``data: [DONE]``
    #: Stream without chunked encoding, the body ending when the connection closes (HTTP/1.0 style, as simple SSE
    #: servers and some proxies do). Then a killed upstream looks exactly like a body that ended: only the stream's
    #: own content (``finish_reason``, ``[DONE]``) tells them apart.
    close_delimited: bool = False

    def pieces(self, n: int) -> list[list[str]]:
        """The stream chunks of each of ``n`` choices."""
        texts = [self.text] * n if isinstance(self.text, str) else list(self.text)
        if len(texts) < n:
            texts += [texts[-1]] * (n - len(texts))
        if self.chunks is not None:
            return [list(self.chunks) for _ in texts[:n]]
        return [_WORD.findall(t) or [""] for t in texts[:n]]


@dataclass(frozen=True)
class Fault:
    """A failure, built with one of the class methods (``Fault.status(503)``, ``Fault.reset_after(2)``, ...)."""

    kind: str
    status_code: int = 200
    body: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)
    after: int = 0  # chunks sent before the fault strikes
    delay: float = 0.0
    reply: Reply | None = None

    @classmethod
    def status(
        cls, code: int, body: str | Mapping[str, Any] | None = None, headers: Mapping[str, str] | None = None
    ) -> Fault:
        """Answer with HTTP ``code``; a str body becomes OpenAI's error JSON, a mapping is sent as is."""
        return cls("status", status_code=code, body=body, headers=dict(headers or {}))

    @classmethod
    def rate_limited(cls, retry_after: float = 1.5, header: str = "retry-after") -> Fault:
        """A 429 with ``Retry-After`` (``header="retry-after"``), ``retry-after-ms`` or ``"both"`` headers."""
        headers: dict[str, str] = {}
        if header in ("retry-after", "both"):
            headers["retry-after"] = f"{retry_after:g}"
        if header in ("retry-after-ms", "both"):
            headers["retry-after-ms"] = f"{retry_after * 1000:g}"
        body = {"error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit"}}
        return cls("status", status_code=429, body=body, headers=headers)

    @classmethod
    def delay_first_token(cls, seconds: float, reply: Reply | None = None) -> Fault:
        """Send the response headers at once, then wait ``seconds`` before the first chunk (non-stream: the body)."""
        return cls("delay", delay=seconds, reply=reply)

    @classmethod
    def stall_after(cls, n_chunks: int) -> Fault:
        """Send ``n_chunks`` content chunks, then hang until the client leaves or the server stops."""
        return cls("stall", after=n_chunks)

    @classmethod
    def reset(cls) -> Fault:
        """Read the request, then drop the connection with a TCP reset; no response at all."""
        return cls("reset")

    @classmethod
    def reset_after(cls, n_chunks: int) -> Fault:
        """Send ``n_chunks`` content chunks, then drop the connection (the client sees the body end early)."""
        return cls("reset", after=n_chunks)

    @classmethod
    def malformed_chunk(cls, after: int = 1, data: str = '{"choices": [{"index": 0, "delta": ') -> Fault:
        """Send ``after`` good chunks, then an SSE event whose data is not valid JSON."""
        return cls("malformed", after=after, body=data)

    @classmethod
    def stream_error(cls, message: str = "internal error mid-stream", after: int = 1) -> Fault:
        """Send ``after`` good chunks, then an ``{"error": ...}`` event, as vLLM does when generation fails."""
        return cls("stream_error", after=after, body=message)


Behaviour = Reply | Fault


@dataclass
class RecordedRequest:
    """One request the server received. ``disconnected`` is set when the client left before the response ended."""

    method: str
    path: str
    headers: dict[str, str]
    json: Any
    completed: threading.Event = field(default_factory=threading.Event)
    disconnected: threading.Event = field(default_factory=threading.Event)

    async def wait_disconnected(self, within: float = 5.0) -> bool:
        """Wait (without blocking the event loop) until the server saw the client leave mid-response."""
        deadline = time.monotonic() + within
        while not self.disconnected.is_set():
            if time.monotonic() > deadline:
                return False
            await asyncio.sleep(0.005)
        return True


class _ClientGone(Exception):
    """The client closed the connection, or we reset it on purpose."""


class _Exchange:
    """One request/response on a connection: writes through h11 and notices when the client goes away."""

    def __init__(self, owner: FakeUpstream, conn: h11.Connection, reader: asyncio.StreamReader, writer) -> None:
        self.owner = owner
        self.conn = conn
        self.writer: asyncio.StreamWriter = writer
        self.gone = asyncio.Event()
        self.close_delimited = False  # set before the response: write it raw, then close instead of ending a chunk
        self._watcher = asyncio.create_task(self._watch(reader))

    async def _watch(self, reader: asyncio.StreamReader) -> None:
        # Clients do not send anything while they wait for a response, so any read returning EOF means they left.
        try:
            while data := await reader.read(65536):
                self.conn.receive_data(data)  # a pipelined next request; h11 keeps it for the next cycle
        except (ConnectionError, h11.ProtocolError):
            pass
        self.gone.set()

    async def finish(self) -> None:
        self._watcher.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._watcher

    async def write(self, event: Any) -> None:
        if self.gone.is_set():
            raise _ClientGone
        data = self._raw(event) if self.close_delimited else self.conn.send(event)
        if data:
            self.writer.write(data)
            try:
                await self.writer.drain()
            except ConnectionError:
                raise _ClientGone from None

    def _raw(self, event: Any) -> bytes | None:
        # h11 always frames HTTP/1.1 bodies (chunked or content-length), so a close-delimited body bypasses it; the
        # connection is not reused afterwards (h11 never reaches DONE), which is what "connection: close" says.
        if isinstance(event, h11.Response):
            lines = [f"HTTP/1.1 {event.status_code} OK".encode()]
            lines += [k + b": " + v for k, v in event.headers if k.lower() != b"transfer-encoding"]
            return b"\r\n".join([*lines, b"connection: close", b"", b""])
        if isinstance(event, h11.Data):
            return bytes(event.data)
        self.writer.transport.close()  # EndOfMessage: a FIN after what is buffered
        return None

    async def pause(self, seconds: float | None) -> bool:
        """Sleep (``None``: forever); False when the client left or the server is stopping meanwhile."""
        if seconds is not None and seconds <= 0:
            return not self.gone.is_set()
        waiters = [asyncio.ensure_future(self.gone.wait()), asyncio.ensure_future(self.owner._stopping.wait())]
        try:
            done, _ = await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for w in waiters:
                w.cancel()
            await asyncio.gather(*waiters, return_exceptions=True)
        return not done

    def reset(self, *, rst: bool = True) -> None:
        # SO_LINGER 0 makes close() send a TCP RST instead of a FIN: the client sees "connection reset by peer". A RST
        # also makes the client's kernel discard data it has not read yet, so mid-stream we close with a FIN instead:
        # the chunks sent so far arrive, then the body ends early.
        sock = self.writer.get_extra_info("socket")
        if rst and sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        self.writer.transport.abort()
        self.gone.set()


class FakeUpstream:
    """An OpenAI-compatible server on a free port of 127.0.0.1; use as a context manager or call start()/stop()."""

    def __init__(
        self,
        *,
        default: Behaviour | None = None,
        models: Sequence[str] = ("fake-model",),
        api_key: str | None = None,
        instant: bool = False,
        port: int = 0,
    ) -> None:
        self.default: Behaviour = default or Reply()
        self.models = list(models)
        self.api_key = api_key  # when set, requests without "Authorization: Bearer <api_key>" get a 401
        self.instant = instant
        self.requests: list[RecordedRequest] = []
        self.request_count = 0
        self._queue: collections.deque[Behaviour] = collections.deque()
        self._ids = itertools.count(1)
        self._sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._sock.bind(("127.0.0.1", port))
        self.port: int = self._sock.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}/v1"
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._ready = threading.Event()
        self._startup_error: BaseException | None = None
        self._instant_payloads: dict[bool, tuple[list[tuple[str, str]], bytes]] = {}

    # -- scripting ---------------------------------------------------------------------------------------------
    def enqueue(self, *behaviours: Behaviour) -> None:
        """Script the next requests, one behaviour each, in order."""
        self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Scripted behaviours not used yet."""
        return len(self._queue)

    @property
    def last(self) -> RecordedRequest:
        return self.requests[-1]

    # -- lifecycle ---------------------------------------------------------------------------------------------
    def start(self) -> FakeUpstream:
        if self._thread is not None:
            return self
        self._thread = threading.Thread(target=self._run, name=f"fake-upstream-{self.port}", daemon=True)
        self._thread.start()
        self._ready.wait(10)
        if self._startup_error is not None:
            self._thread.join(5)
            raise RuntimeError("fake upstream failed to start") from self._startup_error
        return self

    def stop(self) -> None:
        """Stop at once: hung streams and open connections are dropped, the thread is joined."""
        if self._thread is None:
            self._sock.close()
            return
        if self._loop is not None and self._thread.is_alive():
            with contextlib.suppress(RuntimeError):  # the loop already finished
                self._loop.call_soon_threadsafe(self._stopping.set)
        self._thread.join(10)
        if self._thread.is_alive():
            raise RuntimeError("fake upstream did not stop within 10 s")
        self._thread = None

    def __enter__(self) -> FakeUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            loop.run_until_complete(self._serve())
        except BaseException as exc:
            self._startup_error = exc
            self._ready.set()
        finally:
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

    async def _serve(self) -> None:
        self._stopping = asyncio.Event()
        self._handlers: set[asyncio.Task[None]] = set()
        self._writers: set[asyncio.StreamWriter] = set()
        if self.instant:
            self._prepare_instant()
        server = await asyncio.start_server(self._handle_connection, sock=self._sock, backlog=1024)
        self._ready.set()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            await asyncio.gather(*self._handlers, return_exceptions=True)
            await server.wait_closed()

    # -- HTTP --------------------------------------------------------------------------------------------------
    async def _handle_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._handlers.add(task)
        self._writers.add(writer)
        sock = writer.get_extra_info("socket")
        if sock is not None:
            # Headers and body go out in separate writes; with Nagle on, the body waits for the client's delayed ACK
            # (~40 ms per request). asyncio only sets this itself for sockets created with proto=IPPROTO_TCP.
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = h11.Connection(h11.SERVER)
        try:
            while not self._stopping.is_set():
                request = await self._read_request(conn, reader)
                if request is None:
                    break
                head, body = request
                exchange = _Exchange(self, conn, reader, writer)
                try:
                    await self._respond(exchange, head, body)
                except _ClientGone:
                    break
                finally:
                    await exchange.finish()
                if conn.our_state is not h11.DONE or conn.their_state is not h11.DONE:
                    break
                conn.start_next_cycle()
        except (ConnectionError, h11.ProtocolError, asyncio.IncompleteReadError):
            pass
        finally:
            self._writers.discard(writer)
            self._handlers.discard(task)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    async def _read_request(
        self, conn: h11.Connection, reader: asyncio.StreamReader
    ) -> tuple[h11.Request, bytes] | None:
        head: h11.Request | None = None
        body = bytearray()
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await reader.read(65536))
            elif isinstance(event, h11.Request):
                head = event
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                assert head is not None
                return head, bytes(body)
            else:  # ConnectionClosed, or PAUSED after a request we did not finish
                return None

    async def _respond(self, ex: _Exchange, head: h11.Request, raw: bytes) -> None:
        method = head.method.decode()
        path = head.target.decode().split("?", 1)[0]
        self.request_count += 1
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            await self._send_json(ex, 400, _error("The request body is not valid JSON.", "invalid_request_error"))
            return
        if self.instant and path == "/v1/chat/completions":
            headers, payload = self._instant_payloads[bool(isinstance(body, dict) and body.get("stream"))]
            await ex.write(h11.Response(status_code=200, headers=headers))
            await ex.write(h11.Data(data=payload))
            await ex.write(h11.EndOfMessage())
            return
        headers = {k.decode().lower(): v.decode() for k, v in head.headers}
        record = RecordedRequest(method, path, headers, body)
        if not self.instant:
            self.requests.append(record)
        try:
            if self.api_key is not None and headers.get("authorization") != f"Bearer {self.api_key}":
                given = headers.get("authorization", "").removeprefix("Bearer ")
                # Real servers echo (part of) the wrong key; we echo all of it so tests prove it is redacted.
                message = f"Incorrect API key provided: {given}."
                await self._send_json(ex, 401, _error(message, "invalid_request_error", "invalid_api_key"))
            elif method == "GET" and path == "/v1/models":
                data = [{"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in self.models]
                await self._send_json(ex, 200, {"object": "list", "data": data})
            elif method == "POST" and path == "/v1/chat/completions":
                await self._chat(ex, body, record)
            else:
                await self._send_json(ex, 404, _error(f"Unknown path {method} {path}.", "invalid_request_error"))
        except _ClientGone:
            if not record.completed.is_set():
                record.disconnected.set()
            raise
        else:
            record.completed.set()

    async def _send_json(self, ex: _Exchange, status: int, body: Any, headers: Mapping[str, str] | None = None) -> None:
        data = json.dumps(body).encode()
        head = [("content-type", "application/json"), ("content-length", str(len(data)))]
        head += list((headers or {}).items())
        await ex.write(h11.Response(status_code=status, headers=head))
        await ex.write(h11.Data(data=data))
        await ex.write(h11.EndOfMessage())

    async def _chat(self, ex: _Exchange, body: Any, record: RecordedRequest) -> None:
        if not isinstance(body, dict) or not isinstance(body.get("messages"), list):
            await self._send_json(ex, 400, _error("Missing required parameter: 'messages'.", "invalid_request_error"))
            return
        behaviour = self._queue.popleft() if self._queue else directive_behaviour(body["messages"]) or self.default
        fault = behaviour if isinstance(behaviour, Fault) else None
        reply = behaviour if isinstance(behaviour, Reply) else (fault.reply if fault and fault.reply else Reply())

        if fault is not None and fault.kind == "status":
            error = fault.body if isinstance(fault.body, Mapping) else None
            if error is None:
                message = fault.body or f"fake upstream error {fault.status_code}"
                error = _error(message, "server_error" if fault.status_code >= 500 else "invalid_request_error")
            await self._send_json(ex, fault.status_code, error, fault.headers)
            return
        if fault is not None and fault.kind == "reset" and fault.after == 0:
            ex.reset()
            raise _ClientGone

        stream = bool(body.get("stream"))
        n = int(body.get("n") or 1)
        model = reply.model or str(body.get("model", "fake-model"))
        pieces = reply.pieces(n)
        completion_tokens = sum(len(p) for p in pieces)
        prompt_tokens = sum(len(str(m.get("content", "")).split()) for m in body["messages"] if isinstance(m, dict))
        if reply.usage is not None:
            prompt_tokens, completion_tokens = reply.usage
        usage = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        }
        cid = f"chatcmpl-fake-{next(self._ids)}"
        created = int(time.time())

        if not stream:
            waits = fault is not None and fault.kind in ("delay", "stall")
            if waits and not await ex.pause(fault.delay if fault.kind == "delay" else None):  # type: ignore[union-attr]
                raise _ClientGone
            if fault is not None and fault.kind == "reset":
                ex.reset()
                raise _ClientGone
            choices = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": "".join(p)},
                    "finish_reason": reply.finish_reason if reply.send_finish else None,
                    "logprobs": None,
                }
                for i, p in enumerate(pieces)
            ]
            out = {"id": cid, "object": "chat.completion", "created": created, "model": model, "choices": choices}
            if reply.send_usage:
                out["usage"] = usage
            await self._send_json(ex, 200, out, reply.headers)
            return

        include_usage = bool((body.get("stream_options") or {}).get("include_usage")) and reply.send_usage
        base = {"id": cid, "object": "chat.completion.chunk", "created": created, "model": model}

        def event(choices: list[dict[str, Any]], **more: Any) -> bytes:
            chunk = {**base, "choices": choices, **more}
            if include_usage and "usage" not in more:
                chunk["usage"] = None
            return b"data: " + json.dumps(chunk).encode() + b"\n\n"

        head = [("content-type", "text/event-stream"), ("cache-control", "no-cache"), *reply.headers.items()]
        ex.close_delimited = reply.close_delimited
        await ex.write(h11.Response(status_code=200, headers=head))
        if fault is not None and fault.kind == "delay" and not await ex.pause(fault.delay):
            raise _ClientGone

        sent = 0
        longest = max(len(p) for p in pieces)
        for j in range(longest):
            for i, choice_pieces in enumerate(pieces):
                if j >= len(choice_pieces):
                    continue
                if fault is not None and fault.kind != "delay" and sent == fault.after:
                    await self._strike(ex, fault, event)
                    return
                delta = {"role": "assistant", "content": choice_pieces[j]} if j == 0 else {"content": choice_pieces[j]}
                if sent and reply.chunk_delay and not await ex.pause(reply.chunk_delay):
                    raise _ClientGone
                await ex.write(h11.Data(data=event([{"index": i, "delta": delta, "finish_reason": None}])))
                sent += 1
        if fault is not None and fault.kind != "delay":
            await self._strike(ex, fault, event)
            return
        for i in range(len(pieces) if reply.send_finish else 0):
            await ex.write(h11.Data(data=event([{"index": i, "delta": {}, "finish_reason": reply.finish_reason}])))
        if include_usage:
            await ex.write(h11.Data(data=event([], usage=usage)))
        if reply.send_done:
            await ex.write(h11.Data(data=b"data: [DONE]\n\n"))
        await ex.write(h11.EndOfMessage())

    async def _strike(self, ex: _Exchange, fault: Fault, event: Any) -> None:
        """Deliver a mid-stream fault."""
        if fault.kind == "stall":
            await ex.pause(None)
            raise _ClientGone  # the client left or we are stopping: either way this connection is finished
        if fault.kind == "reset":
            ex.reset(rst=False)
            raise _ClientGone
        if fault.kind == "malformed":
            await ex.write(h11.Data(data=f"data: {fault.body}\n\n".encode()))
        elif fault.kind == "stream_error":
            error = _error(str(fault.body), "server_error")
            await ex.write(h11.Data(data=b"data: " + json.dumps(error).encode() + b"\n\n"))
        await ex.write(h11.Data(data=b"data: [DONE]\n\n"))
        await ex.write(h11.EndOfMessage())

    def _prepare_instant(self) -> None:
        # One precomputed answer each for stream and non-stream requests: the benchmark measures the client side.
        reply = self.default if isinstance(self.default, Reply) else Reply()
        text = reply.text if isinstance(reply.text, str) else reply.text[0]
        usage = {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15}
        base = {"id": "chatcmpl-instant", "created": 0, "model": reply.model or "fake-model"}
        message = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        whole = json.dumps({**base, "object": "chat.completion", "choices": [message], "usage": usage}).encode()
        chunk = {**base, "object": "chat.completion.chunk"}
        events = [
            {
                **chunk,
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": text}, "finish_reason": None}],
            },
            {**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]},
            {**chunk, "choices": [], "usage": usage},
        ]
        sse = b"".join(b"data: " + json.dumps(e).encode() + b"\n\n" for e in events) + b"data: [DONE]\n\n"
        self._instant_payloads = {
            False: ([("content-type", "application/json"), ("content-length", str(len(whole)))], whole),
            True: ([("content-type", "text/event-stream"), ("content-length", str(len(sse)))], sse),
        }


def directive_behaviour(messages: Any) -> Behaviour | None:
    """The behaviour the directives in the last user message ask for (see the module docstring), or None."""
    last = next((m for m in reversed(messages) if isinstance(m, dict) and m.get("role") == "user"), None)
    content = last.get("content") if last else None
    if not isinstance(content, str):
        return None
    found = _DIRECTIVE.search(content)
    if found is None:
        return None
    echo = "ECHO: " + " ".join(_DIRECTIVE.sub(" ", content).split())
    name = found.group(1)
    if name == "stall":
        chunks = [echo[i : i + 4] for i in range(0, len(echo), 4)]
        return Fault("stall", after=max(1, len(chunks) - 1), reply=Reply(echo, chunks=chunks, close_delimited=True))
    if name == "nofinish":
        return Reply(echo, send_finish=False, close_delimited=True)
    if name == "nodone":
        return Reply(echo, send_done=False, close_delimited=True)
    count, every_ms = int(found.group(2)), int(found.group(3))
    words = [f"w{i} " for i in range(1, count + 1)]
    return Reply("".join(words), chunks=words, chunk_delay=every_ms / 1000, close_delimited=True)


def _error(message: str, type_: str, code: str | None = None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    """A started FakeUpstream, stopped after the test."""
    with FakeUpstream() as up:
        yield up


def main() -> None:
    """Run a fake upstream in its own process (for benchmarks): ``python -m tests.fake_upstream --instant``."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--instant", action="store_true", help="precomputed replies, no recording")
    parser.add_argument("--chunks", type=int, default=0, help="with --chunk-delay: words of the streamed reply")
    parser.add_argument("--chunk-delay", type=float, default=0.0, help="seconds between stream chunks (load tests)")
    args = parser.parse_args()
    default = None
    if args.chunks or args.chunk_delay:
        words = [f"word{i} " for i in range(max(1, args.chunks or 8))]
        default = Reply("".join(words), chunks=words, chunk_delay=args.chunk_delay)
    up = FakeUpstream(port=args.port, instant=args.instant, default=default).start()
    print(up.base_url, flush=True)
    try:
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        up.stop()


if __name__ == "__main__":
    main()
