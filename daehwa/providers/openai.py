"""Any OpenAI-compatible Chat Completions server: OpenAI itself, Zhipu GLM, Ollama, vLLM, llama.cpp server, ...

One ``AsyncOpenAI`` client per provider, with the SDK's own retries off: the pipeline has the one retry layer, and it
decides from ``ProviderError.retryable`` / ``retry_after``, which this module derives from the upstream's answer.

The request goes out as one raw ``httpx2`` stream on the client the SDK is built around (passed to it as
``http_client``, so one connection pool and one close): this module builds the JSON body, sends it with the key in
the ``Authorization`` header, turns an error status into the SDK's ``APIStatusError`` (the same ``code``, ``param``
and ``type``) and reads the SSE lines itself. ``chat.completions.create`` would run its typed request transform and
build a pydantic model per chunk, and even the SDK's generic ``client.post`` cost about as much CPU per request as
the rest of the pass-through (benchmarks/README.md, "HTTP gateway").
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import json
import logging
import re
import ssl
import time
from collections.abc import AsyncGenerator, AsyncIterator, Mapping
from typing import TYPE_CHECKING, Any, cast

import httpx2  # the SDK's HTTP client library: its responses and transport errors are what we handle here
import openai
from pydantic import SecretStr

from ..errors import (
    ConfigError,
    DaehwaError,
    InvalidRequest,
    ModelNotFound,
    ModelUnavailable,
    ProviderError,
    ProviderTimeout,
    UnsupportedParameter,
)
from ..types import PARAM_NAMES, ProviderEvent, ProviderRequest, StreamEnd, TextDelta, Usage
from .base import ModelInfo, Provider, ProviderConfig, ProviderStatus
from .http1 import Http1Pool, Http1Response, pool_settings, request_head

if TYPE_CHECKING:
    from ..config import Settings
    from ..context.tokens import Tokenizer

log = logging.getLogger(__name__)

DEFAULT_BASE_URL = "https://api.openai.com/v1"
#: Sent when the server needs no key (Ollama, llama.cpp server): the SDK insists on one.
PLACEHOLDER_KEY = "sk-no-key-required"
#: Wire parameters this module sets itself; ``GenerationParams.extra`` may not override them.
RESERVED_PARAMS = frozenset({"model", "messages", "stream", "stream_options"})
#: Keys of ``options`` in a providers-file entry of type "openai".
OPTION_KEYS = frozenset({"timeout", "headers", "sends_done"})
_MAX_UPSTREAM_MESSAGE = 500
#: The SDK's own defaults for its HTTP client.
_LIMITS = httpx2.Limits(max_connections=1000, max_keepalive_connections=100, keepalive_expiry=5.0)
_JSON = {"Content-Type": "application/json"}
#: After ``[DONE]``, how long to read on to the end of the body so the connection can be reused (as the SDK does).
_DRAIN_SECONDS = 0.1


class OpenAIProvider(Provider):
    """A provider speaking OpenAI's Chat Completions API over HTTP, streamed."""

    # Every Chat Completions parameter passes through (plus any ``extra`` one), unless the config lists it as
    # unsupported.
    supported_params = frozenset(PARAM_NAMES)

    def __init__(self, config: ProviderConfig, settings: Settings) -> None:
        super().__init__(config, settings)
        unknown = set(config.options) - OPTION_KEYS
        if unknown:
            raise ConfigError(
                f"Provider {config.name!r} has unknown options {sorted(unknown)}; known: {sorted(OPTION_KEYS)}."
            )
        self.base_url = (config.base_url or settings.openai_base_url or DEFAULT_BASE_URL).rstrip("/")
        self.timeout = float(config.options.get("timeout", settings.request_timeout))
        self._headers = {str(k): str(v) for k, v in dict(config.options.get("headers", {})).items()}
        sends_done = config.options.get("sends_done", True)
        if not isinstance(sends_done, bool):
            raise ConfigError(
                f"Provider {config.name!r}: options.sends_done must be true or false, not {sends_done!r}."
            )
        # OpenAI ends every stream with ``data: [DONE]``; a body that ends without it was cut off, unless the server
        # is known never to send it.
        self.sends_done = sends_done
        # Resolved once: a key changed later needs a restart, like every other setting.
        self._api_key: SecretStr | None = settings.secret(config.api_key_env)
        self._client: openai.AsyncOpenAI | None = None
        self._http: httpx2.AsyncClient | None = None  # the SDK client's HTTP client, used directly by stream()
        self._completions_url = httpx2.URL()
        self._raw: _RawRoute | None = None

    def tokenizer(self, model: str) -> Tokenizer | None:
        """OpenAI's own BPE for OpenAI-family model ids (on any server); None for others (Qwen on vLLM, GLM, ...)."""
        from ..context.tokenizers import openai_tokenizer

        return openai_tokenizer(model)

    def __repr__(self) -> str:
        return (
            f"OpenAIProvider(name={self.name!r}, base_url={self.base_url!r}, api_key_env={self.config.api_key_env!r})"
        )

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def start(self) -> None:
        if self._missing_key_reason() is None:
            self._get_client()

    async def aclose(self) -> None:
        client, self._client, self._http = self._client, None, None
        raw, self._raw = self._raw, None
        if raw is not None:
            await raw.aclose()
        if client is not None:
            await client.close()  # closes the HTTP client too

    def _get_client(self) -> openai.AsyncOpenAI:
        if self._client is None:
            key = self._api_key.get_secret_value() if self._api_key is not None else PLACEHOLDER_KEY
            headers = {"Authorization": f"Bearer {key}", "Accept": "application/json", **self._headers}
            self._http = httpx2.AsyncClient(
                base_url=self.base_url,
                headers=headers,
                timeout=httpx2.Timeout(self.timeout),
                limits=_LIMITS,
                follow_redirects=True,
            )
            # Merged into the base URL once, as the client would (it re-parsed the URL on every request).
            base = self._http.base_url
            self._completions_url = base.copy_with(raw_path=base.raw_path + b"chat/completions")
            self._client = openai.AsyncOpenAI(
                api_key=key,
                base_url=self.base_url,
                max_retries=0,
                timeout=self.timeout,
                default_headers=self._headers or None,
                http_client=self._http,
            )
        return self._client

    def _raw_route(self, client: httpx2.AsyncClient) -> _RawRoute | None:
        """The upstream's connection pool, called without httpx2's request/response layer (``_RawRoute``); None
        when the client would not use its own pool for the URL (a proxy from the environment, a custom transport)."""
        if self._raw is None or self._raw.client is not client:
            self._raw = _RawRoute.of(client, self._completions_url, _JSON)
        return self._raw if self._raw.pool is not None else None

    def _http_client(self) -> httpx2.AsyncClient:
        self._get_client()
        assert self._http is not None
        return self._http

    def _missing_key_reason(self) -> str | None:
        env = self.config.api_key_env
        if env and self._api_key is None:
            return f"Provider {self.name!r} needs an API key: set {env} (in the environment or the .env file)."
        return None

    # -- status ------------------------------------------------------------------------------------------------
    def status(self) -> ProviderStatus:
        reason = self._missing_key_reason()
        return ProviderStatus(
            available=reason is None,
            reason=reason,
            loaded=self._client is not None,
            detail={"base_url": self.base_url, "api_key_env": self.config.api_key_env},
        )

    async def list_models(self) -> list[ModelInfo]:
        """The configured models; no upstream call, so it works offline and never waits on a slow server."""
        names = list(self.config.models)
        if self.config.default_model and self.config.default_model not in names:
            names.insert(0, self.config.default_model)
        reason = self._missing_key_reason()
        return [
            ModelInfo(
                id=f"{self.name}/{model}",
                provider=self.name,
                available=reason is None,
                reason=reason,
                description=f"via {self.base_url}",
            )
            for model in names
        ]

    # -- streaming ---------------------------------------------------------------------------------------------
    def build_body(self, request: ProviderRequest) -> dict[str, Any]:
        """The JSON body of ``POST /chat/completions`` for ``request``; applies ``unsupported_params``."""
        fields = request.params.set_fields()
        reserved = RESERVED_PARAMS & set(request.params.extra)
        if reserved:
            name = sorted(reserved)[0]
            raise InvalidRequest(
                f"Parameter {name!r} is set by daehwa itself and cannot be passed as extra.", param=name
            )
        for name in self.config.unsupported_params:
            if name not in fields:
                continue
            if self.config.unsupported_action == "drop":
                log.warning(
                    "provider %s does not support parameter %r: dropped (unsupported_action = 'drop')", self.name, name
                )
                del fields[name]
            else:
                raise UnsupportedParameter(
                    f"Provider {self.name!r} does not support the parameter {name!r}: leave it out, or set "
                    f"unsupported_action = 'drop' for this provider in the providers file.",
                    param=name,
                )
        body: dict[str, Any] = {
            "model": request.model,
            "messages": [m.as_dict() for m in request.messages],
            "stream": True,
        }
        # Some servers reject stream_options; listing it as unsupported skips it (usage is then estimated).
        if "stream_options" not in self.config.unsupported_params:
            body["stream_options"] = {"include_usage": True}
        body.update((name, _plain(value)) for name, value in fields.items())
        return body

    async def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        body = self.build_body(request)
        reason = self._missing_key_reason()
        if reason is not None:
            raise ModelUnavailable(f"Model '{self.name}/{request.model}' is not available. {reason}")
        client = self._http_client()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout
        content = json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode()
        route = self._raw_route(client)
        try:
            async with asyncio.timeout_at(deadline):
                response: httpx2.Response | _RawResponse | None = None
                if route is not None:
                    response = await route.send(content)
                    if response.status >= 400:
                        raise await _status_error(await response.as_error(self._completions_url, content))
                    if response.status >= 300:  # a redirect: the client's full path follows it
                        await response.aclose()
                        response = None
                if response is None:
                    sent = client.build_request("POST", self._completions_url, content=content, headers=_JSON)
                    response = await client.send(sent, stream=True)
                    if response.status_code >= 400:
                        raise await _status_error(response)
        except Exception as exc:
            raise self._translate(exc, request.model) from None

        events = _SSEEvents()
        chunks = _Chunks()
        received = cast("AsyncGenerator[bytes, None]", response.aiter_bytes())
        try:
            while not events.done:
                try:
                    # The deadline covers only the wait for upstream, never the time the consumer spends per delta.
                    async with asyncio.timeout_at(deadline):
                        raw = await anext(received)
                except StopAsyncIteration:
                    break
                except Exception as exc:
                    raise self._translate(exc, request.model, mid_stream=True) from None
                deltas: list[TextDelta] = []
                failure: DaehwaError | None = None
                for data in events.feed(raw):
                    try:
                        error = chunks.read(data, deltas)
                    except (AttributeError, KeyError, TypeError, ValueError) as exc:  # ValueError: JSONDecodeError
                        failure = self._malformed(exc)
                        break
                    if error is not None:
                        failure = self._stream_error(error)
                        break
                # The text of the events before a failure in the same read is still delivered, then the failure.
                for delta in deltas:
                    yield delta
                if failure is not None:
                    raise failure
            if events.done:
                await _drain(received)
        finally:
            # Runs on normal end, on errors and when the consumer closes or cancels us: frees the connection now.
            await received.aclose()
            await response.aclose()
        incomplete = self._incomplete(events.done, chunks)
        if incomplete is not None:
            raise incomplete
        yield StreamEnd(usage=chunks.usage, finish_reasons=chunks.finish_reasons, model=chunks.model)

    # -- errors ------------------------------------------------------------------------------------------------
    def _incomplete(self, done: bool, chunks: _Chunks) -> ProviderError | None:
        """The error for a body that ended before the reply did: no ``[DONE]``, or a choice with no finish_reason.

        Without this, a connection closed mid-reply (the upstream crashed, a proxy timed out) would pass for a
        finished reply and be stored ``complete`` with half its text.
        """
        where = f"Provider {self.name!r} ({self.base_url})"
        if not done and self.sends_done:
            return ProviderError(
                f"{where} ended the stream without [DONE]: the reply is incomplete. If this server never sends "
                f"[DONE], set options.sends_done = false for provider {self.name!r} in the providers file.",
                retryable=True,
                code="upstream_incomplete",
            )
        unfinished = sorted((chunks.seen or {0}) - chunks.finish_reasons.keys())
        if unfinished:
            which = "the reply" if unfinished == [0] else f"choice(s) {unfinished}"
            return ProviderError(
                f"{where} ended the stream before {which} had a finish_reason: the reply is incomplete.",
                retryable=True,
                code="upstream_incomplete",
            )
        return None

    def _redact(self, text: str) -> str:
        """``text`` without the API key, so an upstream that echoes it cannot leak it into our messages."""
        if self._api_key is not None:
            key = self._api_key.get_secret_value()
            if key:
                text = text.replace(key, "***")
        return text

    def _upstream_message(self, body: object) -> str:
        if isinstance(body, Mapping):
            message = body.get("message") or body.get("detail") or body.get("error") or ""
        else:
            message = body or ""
        text = self._redact(str(message).strip())
        return text[:_MAX_UPSTREAM_MESSAGE] + ("…" if len(text) > _MAX_UPSTREAM_MESSAGE else "")

    def _stream_error(self, error: object) -> ProviderError:
        """An error event inside the stream (``data: {"error": ...}``)."""
        where = f"Provider {self.name!r} ({self.base_url})"
        detail = self._upstream_message(error) or "An error occurred during streaming"
        return ProviderError(f"{where} reported an error mid-stream: {detail}", retryable=True)

    def _malformed(self, exc: BaseException) -> ProviderError:
        return ProviderError(
            f"Provider {self.name!r} ({self.base_url}) sent a malformed stream chunk ({type(exc).__name__}): is it "
            f"really OpenAI-compatible? Check base_url.",
            code="upstream_malformed",
        )

    def _translate(self, exc: Exception, model: str, *, mid_stream: bool = False) -> DaehwaError:
        """The ``DaehwaError`` for an exception of the SDK (or of our deadline)."""
        where = f"Provider {self.name!r} ({self.base_url})"
        if isinstance(exc, DaehwaError):
            return exc
        if isinstance(exc, (openai.APITimeoutError, TimeoutError, httpx2.TimeoutException)):
            return ProviderTimeout(
                f"{where} did not answer within {self.timeout:g}s (model {model!r}): try again, or raise "
                f"DAEHWA_REQUEST_TIMEOUT."
            )
        # The transport errors come raw while we read the body ourselves, wrapped by the SDK before that.
        if isinstance(exc, (openai.APIConnectionError, httpx2.RequestError, ssl.SSLError)):
            cause = self._redact(_root_cause(exc))
            if mid_stream:
                message = f"{where} broke off the stream: {cause}."
            else:
                message = f"{where} cannot be reached: {cause}. Check that the server is running and base_url is right."
            return ProviderError(message, retryable=True, code="upstream_unreachable")
        if isinstance(exc, openai.APIStatusError):
            return self._translate_status(exc, model, where)
        if isinstance(exc, openai.APIError):  # an error event inside the stream
            detail = self._upstream_message(exc.body) or self._redact(exc.message)
            return ProviderError(f"{where} reported an error mid-stream: {detail}", retryable=True)
        if isinstance(exc, ValueError):  # json.JSONDecodeError from the SSE decoder
            return self._malformed(exc)
        return ProviderError(f"{where} failed: {type(exc).__name__}: {self._redact(str(exc))}")

    def _translate_status(self, exc: openai.APIStatusError, model: str, where: str) -> DaehwaError:
        status = exc.status_code
        detail = self._upstream_message(exc.body) or f"HTTP {status}"
        code = str(exc.code or "")
        if status in (401, 403):
            env = self.config.api_key_env
            fix = f"set {env} to a valid key" if env else f"set api_key_env for provider {self.name!r}"
            return ProviderError(
                f"{where} refused the credentials ({status}: {detail}): {fix}.",
                upstream_status=status,
                code="upstream_auth_error",
            )
        if status == 404:
            if code == "model_not_found" or "model" in detail.lower():
                return ModelNotFound(
                    f"{where} has no model {model!r} ({detail}). Check the model name; 'daehwa models' lists the "
                    f"configured ones."
                )
            return ProviderError(
                f"{where} answered 404 for /chat/completions ({detail}): check base_url (it usually ends in /v1).",
                upstream_status=status,
            )
        if status == 429:
            if code == "insufficient_quota" or exc.type == "insufficient_quota":
                return ProviderError(
                    f"{where} says the account's quota is used up ({detail}): check the plan and billing.",
                    upstream_status=status,
                    code="upstream_quota_exceeded",
                )
            return ProviderError(
                f"{where} is rate limiting us ({detail}).",
                retryable=True,
                retry_after=parse_retry_after(exc.response.headers),
                upstream_status=status,
                code="upstream_rate_limited",
            )
        if status in (408, 504):
            return ProviderTimeout(f"{where} timed out ({status}: {detail}): try again.")
        if status >= 500:
            return ProviderError(
                f"{where} failed ({status}: {detail}).",
                retryable=True,
                retry_after=parse_retry_after(exc.response.headers),
                upstream_status=status,
            )
        if status in (400, 413, 422):
            return InvalidRequest(f"{where} rejected the request: {detail}", param=exc.param)
        return ProviderError(f"{where} answered {status}: {detail}", upstream_status=status)


class _SSEEvents:
    """Splits a server-sent event stream into the ``data`` of its events, as the bytes arrive.

    Lines end in LF, CRLF or CR; an event's ``data:`` lines are joined with LF and the event ends at a blank line;
    other fields (``event:``, ``id:``, ``retry:``) and comments are ignored, as the SDK ignores them for Chat
    Completions. ``done`` turns true at ``data: [DONE]``.
    """

    __slots__ = ("_data", "_rest", "done")

    def __init__(self) -> None:
        self._rest = b""
        self._data: list[bytes] = []
        self.done = False

    def feed(self, raw: bytes) -> list[bytes]:
        """The data of every event completed by ``raw``."""
        buffer = self._rest + raw
        if buffer.endswith(b"\r"):  # may be the first half of a CRLF split across reads
            buffer, self._rest = buffer[:-1], b"\r"
        else:
            self._rest = b""
        if b"\r" in buffer:
            buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        lines = buffer.split(b"\n")
        self._rest = lines.pop() + self._rest  # the unfinished last line
        events: list[bytes] = []
        for line in lines:
            if not line:
                if self._data:
                    data = b"\n".join(self._data)
                    self._data = []
                    if data.startswith(b"[DONE]"):
                        self.done = True
                        break
                    events.append(data)
            elif line.startswith(b"data:"):
                self._data.append(line[6:] if line.startswith(b"data: ") else line[5:])
        return events


class _Chunks:
    """What the stream's ``chat.completion.chunk`` objects said so far (read as plain JSON, no model classes)."""

    __slots__ = ("finish_reasons", "model", "seen", "usage")

    def __init__(self) -> None:
        self.usage: Usage | None = None
        self.finish_reasons: dict[int, str] = {}
        self.model: str | None = None
        self.seen: set[int] = set()

    def read(self, data: bytes, deltas: list[TextDelta]) -> Any:
        """Add the text of one chunk to ``deltas``; if it is an error event instead, return its error."""
        chunk = json.loads(data)
        if not isinstance(chunk, dict):
            raise TypeError(f"a chunk must be a JSON object, not {type(chunk).__name__}")
        if chunk.get("error"):  # the upstream failed after the stream began
            return chunk["error"]
        for choice in chunk.get("choices") or ():
            index = int(choice["index"])
            self.seen.add(index)
            delta = choice.get("delta")
            content = delta.get("content") if delta is not None else None
            if content:
                if not isinstance(content, str):
                    raise TypeError(f"delta.content must be a string, not {type(content).__name__}")
                deltas.append(TextDelta(content, index))
            if choice.get("finish_reason"):
                self.finish_reasons[index] = str(choice["finish_reason"])
        counts = chunk.get("usage")
        if counts is not None:
            self.usage = Usage(int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0))
        if chunk.get("model"):
            self.model = str(chunk["model"])
        return None


class _RawRoute:
    """``POST`` to one URL on a lean HTTP/1.1 connection pool of its own (``http1.Http1Pool``): the client's headers
    (merged once), its connect timeout and SSL context, and httpx2's transport errors, without httpx2's request and
    response layers or httpcore2's pool (benchmarks/README.md, "Leaner /v1, part 3"). Taken only when the client
    would send the request through its plain pool; a redirect is left to the client; an error status becomes an
    ``httpx2.Response`` for ``_status_error``."""

    def __init__(
        self,
        client: httpx2.AsyncClient,
        pool: Http1Pool | None,
        origin: tuple[str, str, int] = ("", "", 0),
        head: bytes = b"",
    ) -> None:
        self.client = client
        self.pool = pool
        self.origin = origin
        self.head = head

    @classmethod
    def of(cls, client: httpx2.AsyncClient, url: httpx2.URL, extra: Mapping[str, str]) -> _RawRoute:
        import httpcore2
        from httpx2._transports.default import AsyncHTTPTransport

        transport = client._transport_for_url(url)
        pool = getattr(transport, "_pool", None)
        if type(transport) is not AsyncHTTPTransport or type(pool) is not httpcore2.AsyncConnectionPool:
            return cls(client, None)
        if client.cookies or client.auth is not None or client.event_hooks["request"] or client.event_hooks["response"]:
            return cls(client, None)
        settings = pool_settings(pool)
        if settings is None or url.scheme not in ("http", "https"):
            return cls(client, None)
        merged = httpx2.Headers(client.headers)
        merged.update(extra)
        merged.pop("accept-encoding", None)  # the body is read as sent: no decoding layer
        host = url.netloc.decode("ascii")
        head = request_head("POST", url.raw_path, [(b"Host", host.encode("ascii")), *merged.raw])
        port = url.port or (443 if url.scheme == "https" else 80)
        http1 = Http1Pool(connect_timeout=client.timeout.connect, **settings)
        return cls(client, http1, (url.scheme, url.host, port), head)

    async def send(self, content: bytes) -> _RawResponse:
        assert self.pool is not None
        return _RawResponse(await self.pool.post(self.origin, self.head, content))

    async def aclose(self) -> None:
        if self.pool is not None:
            await self.pool.aclose()


class _RawResponse:
    """An ``Http1Response`` read like ``httpx2.Response.aiter_bytes``."""

    def __init__(self, response: Http1Response) -> None:
        self.response = response
        self.status: int = response.status

    def aiter_bytes(self) -> AsyncIterator[bytes]:
        return self.response.aiter_bytes()

    async def aclose(self) -> None:
        await self.response.aclose()

    async def as_error(self, url: httpx2.URL, content: bytes) -> httpx2.Response:
        """The error status as an ``httpx2.Response`` with its body read (and the connection freed)."""
        try:
            body = await self.response.aread()
        finally:
            await self.aclose()
        request = httpx2.Request("POST", url, content=content)
        return httpx2.Response(self.status, headers=self.response.headers, content=body, request=request)


async def _status_error(response: httpx2.Response) -> openai.APIStatusError:
    """The SDK's error for an error status (its body read and closed), as ``client.post`` would have raised it."""
    try:
        await response.aread()
    finally:
        await response.aclose()
    try:
        data: object = response.json()
    except ValueError:
        data = response.text or None
    body = data.get("error", data) if isinstance(data, dict) else data
    return openai.APIStatusError(f"Error code: {response.status_code} - {data}", response=response, body=body)


async def _drain(received: AsyncIterator[bytes]) -> None:
    """Read what follows ``[DONE]`` (the end of the body), briefly, so the keep-alive connection can be reused."""
    with contextlib.suppress(TimeoutError, httpx2.HTTPError, httpx2.StreamError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in received:
                pass


def _plain(value: Any) -> Any:
    """``value`` as JSON can write it: mappings as dicts and tuples as lists, at any depth."""
    if isinstance(value, Mapping):
        return {key: _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    return value


def _root_cause(exc: BaseException) -> str:
    """The most specific description in an exception chain, e.g. "[Errno 104] Connection reset by peer"."""
    best = ""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        text = str(current).strip()
        if text and text != "Connection error.":  # the SDK's generic text says nothing the chain does not
            best = text
        current = current.__cause__ or current.__context__
    return best or type(exc).__name__


_NUMBER = re.compile(r"^\s*\d+(\.\d+)?\s*$")


def parse_retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds to wait from ``retry-after-ms`` (OpenAI's, more precise) or ``Retry-After`` (seconds or HTTP date)."""
    lowered = {k.lower(): v for k, v in headers.items()}
    ms = lowered.get("retry-after-ms")
    if ms is not None and _NUMBER.match(ms):
        return float(ms) / 1000
    value = lowered.get("retry-after")
    if value is None:
        return None
    if _NUMBER.match(value):
        return float(value)
    try:
        when = email.utils.parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())
