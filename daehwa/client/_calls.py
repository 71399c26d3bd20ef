"""Each route of the conversation API as a ``Call``: the request, and how its JSON answer becomes the result.

Sans-IO: a method of ``DaehwaClient`` or ``AsyncDaehwaClient`` is one of these functions, sent (blocking or
awaited); nothing here does I/O.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TypedDict, TypeVar

from ._core import Call, StreamCall, StreamState
from ._wire import (
    Conversation,
    ConversationPage,
    ConversationStart,
    DaehwaConnectionError,
    Model,
    Persona,
    TurnResult,
    UsageReport,
    User,
)

T = TypeVar("T")

#: The generation options every reply-producing route takes (docs/api.md, "Options").
OPTION_NAMES = ("model", "temperature", "top_p", "max_tokens", "stop", "seed", "presence_penalty", "frequency_penalty")


class NewConversation(TypedDict, total=False):
    """What ``create_conversation`` takes, each optional: the persona, the model, the persona's template
    ``variables`` and a title."""

    persona: str | None
    model: str | None
    variables: dict[str, Any] | None
    title: str | None


def given(values: Mapping[str, Any], names: tuple[str, ...], what: str) -> dict[str, Any]:
    """The ``values`` a caller set (None means "the server's default"); a name not in ``names`` is a TypeError."""
    unknown = set(values) - set(names)
    if unknown:
        raise TypeError(f"unknown {what}(s) {sorted(unknown)}: the {what}s are {', '.join(names)}")
    return {k: v for k, v in values.items() if v is not None}


def options(opts: Mapping[str, Any]) -> dict[str, Any]:
    """The generation options a caller set."""
    return given(opts, OPTION_NAMES, "option")


def _nothing(body: Any) -> None:
    return None


def _data(record: Callable[[Any], T]) -> Callable[[Any], list[T]]:
    """A list answer (``{"data": [...]}``), each item read by ``record``."""
    return lambda body: [record(item) for item in body["data"]]


def _conversation(conversation_id: str) -> str:
    return f"/api/conversations/{conversation_id}"


# -- login ---------------------------------------------------------------------------------------------------------
def login(username: str, password: str) -> Call[Mapping[str, Any]]:
    return Call("POST", "/api/auth/login", dict, json={"username": username, "password": password})


def login_anonymous() -> Call[Mapping[str, Any]]:
    return Call("POST", "/api/auth/anonymous", dict)


def logout() -> Call[None]:
    return Call("POST", "/api/auth/logout", _nothing)


def me() -> Call[User]:
    return Call("GET", "/api/auth/me", lambda body: User.from_json(body["user"]))


# -- conversations -------------------------------------------------------------------------------------------------
def create_conversation(fields: NewConversation) -> Call[ConversationStart]:
    body = given(fields, tuple(NewConversation.__annotations__), "field")
    return Call("POST", "/api/conversations", ConversationStart.from_json, json=body)


def list_conversations(query: str | None, limit: int, before: str | None) -> Call[list[Conversation]]:
    params = {"q": query, "limit": limit, "before": before}
    return Call("GET", "/api/conversations", _data(Conversation.from_json), params=params)


def get_conversation(conversation_id: str, limit: int, before: str | None) -> Call[ConversationPage]:
    params = {"limit": limit, "before": before}
    return Call("GET", _conversation(conversation_id), ConversationPage.from_json, params=params)


def rename_conversation(conversation_id: str, title: str) -> Call[Conversation]:
    return Call("PATCH", _conversation(conversation_id), Conversation.from_json, json={"title": title})


def delete_conversation(conversation_id: str) -> Call[None]:
    return Call("DELETE", _conversation(conversation_id), _nothing)


# -- turns ---------------------------------------------------------------------------------------------------------
def send(conversation_id: str, content: str, opts: Mapping[str, Any]) -> Call[TurnResult]:
    body = {"content": content, "stream": False, **options(opts)}
    return Call("POST", f"{_conversation(conversation_id)}/messages", TurnResult.from_json, json=body)


def stream(conversation_id: str, content: str, opts: Mapping[str, Any]) -> StreamCall:
    body = {"content": content, "stream": True, **options(opts)}
    call = Call("POST", f"{_conversation(conversation_id)}/messages", _nothing, json=body)
    return StreamCall(call, StreamState(conversation_id))


def regenerate(conversation_id: str, opts: Mapping[str, Any]) -> Call[TurnResult]:
    body = {"stream": False, **options(opts)}
    return Call("POST", f"{_conversation(conversation_id)}/regenerate", TurnResult.from_json, json=body)


def regenerate_stream(conversation_id: str, opts: Mapping[str, Any]) -> StreamCall:
    body = {"stream": True, **options(opts)}
    call = Call("POST", f"{_conversation(conversation_id)}/regenerate", _nothing, json=body)
    return StreamCall(call, StreamState(conversation_id))


def resume(conversation_id: str | DaehwaConnectionError, message_id: str | None, after: int) -> StreamCall:
    """The rest of a reply (from the ids, or a dropped stream's error): its stream opens with the next delta."""
    if isinstance(conversation_id, DaehwaConnectionError):
        dropped = conversation_id
        if dropped.conversation_id is None or dropped.message_id is None:
            raise ValueError("this connection error happened before the reply started: send the message again")
        conversation_id, message_id, after = dropped.conversation_id, dropped.message_id, dropped.offset
    if message_id is None:
        raise TypeError("resume_stream needs the reply's message_id")
    path = f"{_conversation(conversation_id)}/messages/{message_id}/stream"
    call = Call("GET", path, _nothing, params={"after": after})
    return StreamCall(call, StreamState(conversation_id, message_id=message_id, offset=after), expect_start=False)


def stop(conversation_id: str) -> Call[bool]:
    return Call("POST", f"{_conversation(conversation_id)}/stop", lambda body: bool(body["stopped"]))


# -- catalogues and usage ------------------------------------------------------------------------------------------
def personas() -> Call[list[Persona]]:
    return Call("GET", "/api/personas", _data(Persona.from_json))


def models() -> Call[list[Model]]:
    return Call("GET", "/api/models", _data(Model.from_json))


def usage(since: str | None) -> Call[UsageReport]:
    return Call("GET", "/api/usage", UsageReport.from_json, params={"since": since})
