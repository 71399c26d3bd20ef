"""What the client reads from the server: small typed records, the error, and the SSE parser (shared by both clients).

The records are frozen dataclasses built from the server's JSON (docs/api.md); each keeps the JSON it came from in
``raw``, so a field the server adds later is still reachable without a client upgrade.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import KW_ONLY, dataclass, field, fields
from typing import TYPE_CHECKING, Any, TypeVar

import httpx

from ..wire import ConversationOut

if TYPE_CHECKING:
    from _typeshed import DataclassInstance

__all__ = [
    "Conversation",
    "ConversationPage",
    "ConversationStart",
    "DaehwaAPIError",
    "DaehwaConnectionError",
    "Message",
    "Model",
    "Persona",
    "ReplyUsage",
    "SSEEvent",
    "Started",
    "TurnResult",
    "UsageReport",
    "User",
]


@dataclass(eq=False)  # an exception is equal only to itself (and stays hashable)
class DaehwaAPIError(Exception):
    """An error answer of the server: its ``code`` (e.g. ``rate_limit_exceeded``, ``content_blocked``, ``not_found``),
    HTTP ``status``, and ``message`` (in the language the client asked for, where the server localises it)."""

    message: str
    _: KW_ONLY
    code: str | None = None
    status: int | None = None
    type: str | None = None
    param: str | None = None
    retry_after: float | None = None
    request_id: str | None = None

    def __post_init__(self) -> None:
        super().__init__(self.message)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, status={self.status!r}, message={self.message!r})"

    @classmethod
    def from_body(
        cls, body: Any, *, status: int | None = None, retry_after: float | None = None, request_id: str | None = None
    ) -> DaehwaAPIError:
        """From the server's ``{"error": {"message", "type", "param", "code"}}`` (or an SSE ``error`` event)."""
        detail = body.get("error") if isinstance(body, Mapping) else None
        if not isinstance(detail, Mapping):
            return cls(f"The server answered {status} without an error body.", code="http_error", status=status)
        if retry_after is None and isinstance(body.get("retry_after"), int | float):
            retry_after = float(body["retry_after"])
        return cls(
            str(detail.get("message") or "The server reported an error."),
            code=_str(detail.get("code")),
            status=status,
            type=_str(detail.get("type")),
            param=_str(detail.get("param")),
            retry_after=retry_after,
            request_id=request_id,
        )

    @classmethod
    def from_response(cls, response: httpx.Response, body: Any) -> DaehwaAPIError:
        wait = response.headers.get("retry-after")
        try:
            retry_after = float(wait) if wait is not None else None
        except ValueError:
            retry_after = None
        return cls.from_body(
            body, status=response.status_code, retry_after=retry_after, request_id=response.headers.get("x-request-id")
        )


class DaehwaConnectionError(DaehwaAPIError):
    """The server could not be reached, or the connection broke off mid-reply (``code`` ``connection_error``).

    Mid-reply, ``received`` holds the text that arrived and ``offset`` its length in characters: pass the error to
    ``resume_stream`` (or ``conversation_id``, ``message_id`` and ``offset`` by hand) to get the rest of the reply.
    """

    def __init__(
        self,
        message: str,
        *,
        conversation_id: str | None = None,
        message_id: str | None = None,
        received: str = "",
        offset: int = 0,
    ) -> None:
        super().__init__(message, code="connection_error")
        self.conversation_id = conversation_id
        self.message_id = message_id
        self.received = received
        self.offset = offset


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) else None


def _float(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


#: How a record's field is read from its JSON value, by the field's declared type (where ``from_json`` does not say
#: otherwise): text missing or null is "", optional text that is not a string is None, a missing object or list
#: is empty.
_READ_AS: dict[str, Callable[[Any], Any]] = {
    "str": lambda value: str(value or ""),
    "str | None": _str,
    "bool": bool,
    "dict[str, Any]": lambda value: dict(value or {}),
    "list[Mapping[str, Any]]": lambda value: list(value or []),
}

RecordT = TypeVar("RecordT", bound="DataclassInstance")


def _record(cls: type[RecordT], data: Mapping[str, Any], **given: Any) -> RecordT:
    """A record from its JSON object: the fields in ``given``, each other one read from the key of its name by its
    type (``_READ_AS``), and ``raw``, the object itself."""
    given = {"raw": data, **given}
    read = {f.name: _READ_AS[str(f.type)](data.get(f.name)) for f in fields(cls) if f.name not in given}
    return cls(**read, **given)


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    is_admin: bool
    anonymous: bool
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> User:
        return _record(cls, data, id=str(data["id"]), name=str(data["name"]))


@dataclass(frozen=True, slots=True)
class Conversation(ConversationOut):
    """A conversation: the fields the server sends (``daehwa.wire.ConversationOut``) and ``raw``."""

    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Conversation:
        return _record(cls, data, id=str(data["id"]), kind=str(data.get("kind") or "chat"))


@dataclass(frozen=True, slots=True)
class ReplyUsage:
    """A finished reply's tokens and cost in USD (``cost`` None when the model's price is unknown)."""

    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None = None

    @classmethod
    def from_json(cls, data: Any, cost: Any = None) -> ReplyUsage | None:
        if not isinstance(data, Mapping):
            return None
        return cls(
            int(data.get("prompt_tokens") or 0),
            int(data.get("completion_tokens") or 0),
            int(data.get("total_tokens") or 0),
            _float(data.get("cost", cost)),
        )


@dataclass(frozen=True, slots=True)
class Message:
    id: str
    conversation_id: str
    role: str  # user, assistant or system
    content: str
    status: str  # complete, streaming, interrupted, error, blocked or fallback
    model: str | None
    created_at: str | None
    error_code: str | None
    error_message: str | None
    usage: ReplyUsage | None  # replies only, once finished
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Message:
        found = data.get("error")
        error: Mapping[str, Any] = found if isinstance(found, Mapping) else {}
        return _record(
            cls,
            data,
            id=str(data["id"]),
            status=str(data.get("status") or "complete"),
            error_code=_str(error.get("code")),
            error_message=_str(error.get("message")),
            usage=ReplyUsage.from_json(data.get("usage")),
        )


@dataclass(frozen=True, slots=True)
class ConversationStart:
    """A new conversation, and the persona's first message when it speaks first."""

    conversation: Conversation
    messages: list[Message]

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversationStart:
        return cls(Conversation.from_json(data["conversation"]), [Message.from_json(m) for m in data["messages"]])


@dataclass(frozen=True, slots=True)
class ConversationPage:
    """A conversation with a page of its messages, oldest first; ``next_before`` pages back when ``has_more``."""

    conversation: Conversation
    messages: list[Message]
    has_more: bool
    next_before: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ConversationPage:
        start = ConversationStart.from_json(data)  # the conversation and messages, read alike
        return cls(start.conversation, start.messages, bool(data.get("has_more")), data.get("next_before"))


@dataclass(frozen=True, slots=True)
class TurnResult:
    """The end of a turn: the stored reply, its usage (and cost), and how it ended.

    ``outcome`` is ``ok``, ``fallback``, ``interrupted`` (stopped: ``finish_reason`` ``stopped``; broken off:
    ``error`` says why), ``blocked`` or ``error``.
    """

    conversation_id: str
    user_message: Message | None
    message: Message
    usage: ReplyUsage | None
    outcome: str
    finish_reason: str
    model: str | None
    ttft_ms: float | None
    total_ms: float | None
    error: DaehwaAPIError | None
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @property
    def text(self) -> str:
        return self.message.content

    @property
    def stopped(self) -> bool:
        return self.finish_reason == "stopped"

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TurnResult:
        message = Message.from_json(data["message"])
        error = data.get("error")
        usage = ReplyUsage.from_json(data.get("usage"), data.get("cost")) or message.usage
        return cls(
            conversation_id=str(data.get("conversation_id") or message.conversation_id),
            user_message=Message.from_json(data["user_message"]) if data.get("user_message") else None,
            message=message,
            usage=usage,
            outcome=str(data.get("outcome") or "ok"),
            finish_reason=str(data.get("finish_reason") or "stop"),
            model=_str(data.get("model")),
            ttft_ms=_float(data.get("ttft_ms")),
            total_ms=_float(data.get("total_ms")),
            error=DaehwaAPIError.from_body({"error": error}) if isinstance(error, Mapping) else None,
            raw=data,
        )


@dataclass(frozen=True, slots=True)
class Started:
    """The ``start`` event of a streamed turn: the conversation, the stored user message, and the reply's id."""

    conversation: Conversation
    user_message: Message | None
    message_id: str
    model: str | None

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Started:
        return cls(
            Conversation.from_json(data["conversation"]),
            Message.from_json(data["user_message"]) if data.get("user_message") else None,
            str(data["message_id"]),
            _str(data.get("model")),
        )


@dataclass(frozen=True, slots=True)
class Persona:
    name: str
    title: str  # in the language asked for
    description: str
    speaks_first: bool
    model: str | None
    variables: list[Mapping[str, Any]]
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Persona:
        return _record(cls, data, name=str(data["name"]), title=str(data.get("title") or data["name"]))


@dataclass(frozen=True, slots=True)
class Model:
    id: str
    provider: str
    available: bool
    reason: str | None
    description: str
    raw: Mapping[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Model:
        return _record(cls, data, id=str(data["id"]), available=bool(data.get("available", True)))


@dataclass(frozen=True, slots=True)
class UsageReport:
    """``GET /api/usage``: rows per user and model (turns, tokens, cost) and their sum, in ``currency`` (USD)."""

    since: str | None
    currency: str
    totals: list[Mapping[str, Any]]
    sum: Mapping[str, Any]

    @property
    def total_tokens(self) -> int:
        return int(self.sum.get("total_tokens") or 0)

    @property
    def cost(self) -> float:
        return float(self.sum.get("cost") or 0.0)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> UsageReport:
        return cls(_str(data.get("since")), str(data.get("currency") or "USD"), list(data["totals"]), dict(data["sum"]))


# -- SSE ---------------------------------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class SSEEvent:
    event: str
    data: Any
    id: str | None = None


class SSEParser:
    """Server-sent events from lines (``text/event-stream``): ``feed(line)`` returns an event at each blank line."""

    def __init__(self) -> None:
        self._event = "message"
        self._data: list[str] = []
        self._id: str | None = None

    def feed(self, line: str) -> SSEEvent | None:
        if not line:
            if not self._data:
                self._event, self._id = "message", None
                return None
            text = "\n".join(self._data)
            try:
                data: Any = json.loads(text)
            except ValueError:
                data = text
            event = SSEEvent(self._event, data, self._id)
            self._event, self._data, self._id = "message", [], None
            return event
        if line.startswith(":"):
            return None
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        elif name == "id":
            self._id = value
        return None

    def events(self, lines: Iterable[str]) -> Iterator[SSEEvent]:
        for line in lines:
            event = self.feed(line)
            if event is not None:
                yield event


def error_of(response: httpx.Response, body_text: str) -> DaehwaAPIError:
    try:
        body = json.loads(body_text) if body_text else None
    except ValueError:
        body = None
    if body is None:
        return DaehwaAPIError(
            f"The server answered {response.status_code}: {body_text[:200] or response.reason_phrase}",
            code="http_error",
            status=response.status_code,
        )
    return DaehwaAPIError.from_response(response, body)
