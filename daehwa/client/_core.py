"""What the sync and async clients share: the request of each route, reading its answer, and a streamed reply's state.

A client method sends a ``Call`` (a request description that knows how its JSON answer is read, ``_calls.py``);
``DaehwaClient`` and ``AsyncDaehwaClient`` only differ in how they send it. ``StreamState`` turns the SSE events of
a turn (``start``, ``delta``, ``error``, ``done``) into text deltas and a ``TurnResult``, and knows where a dropped
reply resumes.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar, overload

import httpx

from ._wire import DaehwaAPIError, DaehwaConnectionError, SSEEvent, Started, TurnResult, User, error_of

DEFAULT_TIMEOUT = httpx.Timeout(30.0, read=300.0)  # a model may think for a while before (and between) tokens
CSRF_HEADER = "X-CSRF-Token"
_UNSAFE = frozenset({"POST", "PUT", "PATCH", "DELETE"})

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Call(Generic[T]):
    """One request, and ``read``: what the method returns, from the answer's JSON (None when the body is empty)."""

    method: str
    path: str
    read: Callable[[Any], T]
    params: Mapping[str, Any] | None = None
    json: Any = None
    headers: Mapping[str, str] = field(default_factory=dict)

    def answer(self, response: httpx.Response) -> T:
        return self.read(response.json() if response.content else None)


@dataclass(frozen=True, slots=True)
class StreamCall:
    """A request answered by a turn's SSE stream, the state its reply starts from, and whether the stream opens
    with ``start`` (a resumed reply does not)."""

    call: Call[None]
    state: StreamState
    expect_start: bool = True


ClassT = TypeVar("ClassT", bound=type)


def documented_by(sync: type) -> Callable[[ClassT], ClassT]:
    """An async class's methods take the docstrings of ``sync``'s methods of the same name: the async client is the
    sync one method for method, awaited, so each method is documented once (on the sync class)."""

    def document(cls: ClassT) -> ClassT:
        for name, method in vars(cls).items():
            twin = getattr(sync, name, None)
            if callable(method) and method.__doc__ is None and twin is not None:
                method.__doc__ = twin.__doc__
        return cls

    return document


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

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        params = {k: v for k, v in (call.params or {}).items() if v is not None}
        return http.build_request(
            call.method, call.path, params=params, json=call.json, headers=self._headers(call.method, call.headers)
        )

    def _logged_in(self, body: Mapping[str, Any]) -> User:
        """The user a login answered with; its CSRF token is kept for the state-changing requests."""
        self.csrf_token = body.get("csrf_token") if isinstance(body.get("csrf_token"), str) else None
        return User.from_json(body["user"])

    def _logged_out(self) -> None:
        self.csrf_token = None
        self._http.cookies.clear()


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


class _FromState(Generic[T]):
    """A read-only attribute of a streamed reply: its ``StreamState``'s attribute of the same name."""

    def __init__(self, doc: str | None = None) -> None:
        self.__doc__ = doc

    def __set_name__(self, owner: type, name: str) -> None:
        self._name = name

    @overload
    def __get__(self, view: None, owner: type | None = None) -> _FromState[T]: ...
    @overload
    def __get__(self, view: StreamView, owner: type | None = None) -> T: ...
    def __get__(self, view: StreamView | None, owner: type | None = None) -> T | _FromState[T]:
        if view is None:
            return self
        value: T = getattr(view._state, self._name)
        return value

    def __set__(self, view: StreamView, value: object) -> None:
        raise AttributeError(f"{self._name} is read-only: the stream sets it as the reply arrives")


class StreamView:
    """What a streamed reply shows of its ``StreamState`` (both ``ReplyStream`` and ``AsyncReplyStream``)."""

    _state: StreamState

    conversation_id = _FromState[str]()
    message_id = _FromState[str | None]()
    started = _FromState[Started | None]()
    text = _FromState[str]("The text this stream delivered so far.")
    offset = _FromState[int]()
    result = _FromState[TurnResult | None]("The ``done`` event's TurnResult, once the stream ended.")
    error = _FromState[DaehwaAPIError | None](
        "An ``error`` event: the model failed mid-reply (the partial reply is kept)."
    )


def http_error(response: httpx.Response, body: bytes) -> DaehwaAPIError:
    """The error of an answer with status >= 400, from its body."""
    return error_of(response, body.decode("utf-8", "replace"))


def unreachable(base_url: str, exc: httpx.TransportError) -> DaehwaConnectionError:
    return DaehwaConnectionError(f"Cannot reach the daehwa server at {base_url} ({type(exc).__name__}: {exc}).")
