"""What the sync and async clients share: building each request, reading each answer, and a streamed reply's state.

A client method is a request description (``Call``) and a parser; ``DaehwaClient`` and ``AsyncDaehwaClient`` only
differ in how they send it. ``StreamState`` turns the SSE events of a turn (``start``, ``delta``, ``error``,
``done``) into text deltas and a ``TurnResult``, and knows where a dropped reply resumes.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import httpx

from ._wire import DaehwaAPIError, DaehwaConnectionError, SSEEvent, Started, TurnResult, error_of

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)  # a model may think for a while before (and between) tokens
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

#: The generation options every reply-producing route takes (docs/api.md, "Options").
OPTION_NAMES = ("model", "temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty")


@dataclass(frozen=True, slots=True)
class Call:
    method: str
    path: str
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)


TransportT = TypeVar("TransportT", httpx.BaseTransport, httpx.AsyncBaseTransport)
HTTPT = TypeVar("HTTPT", httpx.Client, httpx.AsyncClient)


class ClientBase(Generic[TransportT, HTTPT]):
    """Credentials, language and the request descriptions both clients send; ``_open`` makes the httpx client."""

    def __init__(
        self,
        base_url: str,
        *,
        api_key: str | None = None,
        language: str | None = None,
        timeout: httpx.Timeout | float = DEFAULT_TIMEOUT,
        transport: TransportT | None = None,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self.api_key = api_key
        self.language = language
        self.csrf_token: str | None = None  # set by login(): session logins send it on state-changing requests
        self._http: HTTPT = self._open(timeout, transport)

    def _open(self, timeout: httpx.Timeout | float, transport: TransportT | None) -> HTTPT:
        raise NotImplementedError

    def _headers(self, method: str, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        if self.language:
            headers["Accept-Language"] = self.language
        if method in _UNSAFE and self.csrf_token and not self.api_key:
            headers[CSRF_HEADER] = self.csrf_token
        headers.update(extra or {})
        return headers

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call) -> httpx.Request:
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        return http.build_request(
            call.method, call.path, params=params, json=call.json, headers=self._headers(call.method, call.headers)
        )

    def _logged_in(self, body: Mapping[str, Any]) -> None:
        self.csrf_token = body.get("csrf_token") if isinstance(body.get("csrf_token"), str) else None


def options(given: Mapping[str, Any]) -> dict[str, Any]:
    """The generation options a caller set (None means "the server's default")."""
    unknown = set(given) - set(OPTION_NAMES)
    if unknown:
        raise TypeError(f"unknown option(s) {sorted(unknown)}: the options are {', '.join(OPTION_NAMES)}")
    return {k: v for k, v in given.items() if v is not None}


def message_body(content: str, stream: bool, opts: Mapping[str, Any]) -> dict[str, Any]:
    return {"content": content, "stream": stream, **options(opts)}


# -- requests and answers (sans-IO: each client only sends the Call and hands the JSON back) -----------------------
def create_conversation_call(
    persona: str | None, model: str | None, variables: dict[str, Any] | None, title: str | None
) -> Call:
    body = {"persona": persona, "model": model, "variables": variables, "title": title}
    return Call("POST", "/api/conversations", json={k: v for k, v in body.items() if v is not None})


def resume_call(
    conversation_id: str | DaehwaConnectionError, message_id: str | None, after: int
) -> tuple[Call, StreamState]:
    """The request and the stream state that get the rest of a reply (from the ids, or a dropped stream's error)."""
    if isinstance(conversation_id, DaehwaConnectionError):
        dropped = conversation_id
        if dropped.conversation_id is None or dropped.message_id is None:
            raise ValueError("this connection error happened before the reply started: send the message again")
        conversation_id, message_id, after = dropped.conversation_id, dropped.message_id, dropped.offset
    if message_id is None:
        raise TypeError("resume_stream needs the reply's message_id")
    call = Call("GET", f"/api/conversations/{conversation_id}/messages/{message_id}/stream", params={"after": after})
    return call, StreamState(conversation_id, message_id=message_id, offset=after)


class StreamState:
    """A streamed reply as it arrives: ``text`` so far, ``offset`` (the last delta's SSE id), and the end."""

    def __init__(self, conversation_id: str, *, message_id: str | None = None, offset: int = 0) -> None:
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.started: Started | None = None
        self.offset = offset  # characters of the reply the client has: a resume asks for what comes after
        self.text = ""  # what this stream delivered (after ``offset`` for a resume)
        self.error: DaehwaAPIError | None = None  # an ``error`` event (the model failed mid-reply)
        self.result: TurnResult | None = None

    def on_event(self, event: SSEEvent) -> str | None:
        """The delta's text for a ``delta`` event of the first choice, else None (the state is updated)."""
        data = event.data if isinstance(event.data, Mapping) else {}
        if event.event == "start":
            self.started = Started.from_json(data)
            self.message_id = self.started.message_id
            self.conversation_id = self.started.conversation.id
        elif event.event == "delta":
            text = data.get("text")
            if not isinstance(text, str) or data.get("index", 0) != 0:
                return None
            self.text += text
            self.offset = int(event.id) if event.id and event.id.isdigit() else self.offset + len(text)
            return text
        elif event.event == "error":
            self.error = DaehwaAPIError.from_body(data)
        elif event.event == "done":
            self.result = TurnResult.from_json(data)
        return None

    def dropped(self, cause: BaseException | None) -> DaehwaConnectionError:
        why = f" ({type(cause).__name__}: {cause})" if cause is not None else ""
        return DaehwaConnectionError(
            f"The connection to the server broke off mid-reply{why}; resume_stream() gets the rest.",
            conversation_id=self.conversation_id,
            message_id=self.message_id,
            received=self.text,
            offset=self.offset,
        )

    def finish(self) -> TurnResult:
        """The result once ``done`` came; a turn whose model failed before any text raises its error."""
        assert self.result is not None
        if self.result.outcome == "error":
            error = self.result.error or self.error or DaehwaAPIError("The model failed.", code="upstream_error")
            raise error
        return self.result


class StreamView:
    """What a streamed reply shows of its ``StreamState`` (both ``ReplyStream`` and ``AsyncReplyStream``)."""

    _state: StreamState

    @property
    def conversation_id(self) -> str:
        return self._state.conversation_id

    @property
    def message_id(self) -> str | None:
        return self._state.message_id

    @property
    def started(self) -> Started | None:
        return self._state.started

    @property
    def text(self) -> str:
        """The text this stream delivered so far."""
        return self._state.text

    @property
    def offset(self) -> int:
        return self._state.offset

    @property
    def result(self) -> TurnResult | None:
        """The ``done`` event's TurnResult, once the stream ended."""
        return self._state.result

    @property
    def error(self) -> DaehwaAPIError | None:
        """An ``error`` event: the model failed mid-reply (the partial reply is kept)."""
        return self._state.error


def http_error(response: httpx.Response, body: bytes) -> DaehwaAPIError:
    """The error of an answer with status >= 400, from its body."""
    return error_of(response, body.decode("utf-8", "replace"))


def unreachable(base_url: str, exc: httpx.TransportError) -> DaehwaConnectionError:
    return DaehwaConnectionError(f"Cannot reach the daehwa server at {base_url} ({type(exc).__name__}: {exc}).")
