"""Wire shapes of the /api routes (the project's own JSON, documented in docs/api.md) and their builders.

The ``*Out`` models describe responses in /openapi.json (``ConversationOut``, which the client shares, is in
``daehwa/wire.py``); the ``*_json`` functions build the dicts from the core types
(one place decides what leaves the server: never a password hash, a key hash or moderation internals).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field

from ..chat import TurnFinished, TurnStarted
from ..errors import InvalidRequest
from ..routing import params_from_wire
from ..stores.base import ApiKeyRecord
from ..types import INTEGER_PARAMS, PARAM_BOUNDS, Conversation, GenerationParams, StoredMessage, Usage, User
from ..wire import ConversationOut


def param_field(name: str) -> Any:
    """The pydantic field of a numeric generation parameter, bounded by ``PARAM_BOUNDS`` (one table for every route).

    ``validation_message`` words its errors from the same table: "max_tokens must be ... between 1 and 1000000".
    """
    low, high = PARAM_BOUNDS[name]
    finite = None if name in INTEGER_PARAMS else False  # floats: NaN and infinity are refused
    return Field(default=None, ge=low, le=high, allow_inf_nan=finite, description=f"From {low} to {high}.")


class GenerationOptions(BaseModel):
    """The generation parameters that every reply-producing route and WebSocket frame takes, all optional."""

    temperature: float | None = param_field("temperature")
    top_p: float | None = param_field("top_p")
    max_tokens: int | None = param_field("max_tokens")
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop sequences.")
    seed: int | None = param_field("seed")
    presence_penalty: float | None = param_field("presence_penalty")
    frequency_penalty: float | None = param_field("frequency_penalty")


def iso(value: datetime | None) -> str | None:
    if value is None:
        return None
    text = value.isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


class UserOut(BaseModel):
    id: str
    name: str
    is_admin: bool
    anonymous: bool
    created_at: str | None


class MeOut(BaseModel):
    user: UserOut
    csrf_token: str | None = Field(description="Send as X-CSRF-Token on state-changing requests (session logins).")


class ApiKeyOut(BaseModel):
    id: str
    name: str
    prefix: str
    created_at: str | None
    last_used_at: str | None
    revoked_at: str | None


class MessageError(BaseModel):
    code: str | None
    message: str | None


class ReplyUsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cost: float | None


class MessageOut(BaseModel):
    id: str
    conversation_id: str
    role: str
    content: str
    status: str
    model: str | None
    created_at: str | None
    error: MessageError | None
    mood: dict[str, Any] | None = Field(
        default=None, description="The user message's mood: label (positive/neutral/negative), confidence, method"
    )
    recommendations: list[dict[str, Any]] | None = Field(
        default=None, description="Catalogue items offered with a reply: id, catalogue, title, description, url, tags"
    )
    usage: ReplyUsageOut | None = Field(
        default=None, description="A finished reply's tokens and cost (USD, null when the price is unknown)"
    )


class ContextMessageOut(BaseModel):
    id: str | None
    role: str
    tokens: int


class ContextSummaryOut(BaseModel):
    first_id: str
    last_id: str
    messages: int = Field(description="How many of the oldest messages the summary covers")
    tokens: int


class ContextRecalledOut(BaseModel):
    ids: list[str] = Field(description="The recalled turn: the user's message and the reply to it")
    score: float
    tokens: int


class ContextReportOut(BaseModel):
    policy: str = Field(description="e.g. summary+recall+recent")
    tokenizer: str = Field(description="What counted the tokens: o200k_base, local/<model>, or estimate")
    exact: bool = Field(description="False when the counts are the tokenizer-free estimate")
    tokens: int = Field(description="Prompt tokens of everything sent")
    budget: dict[str, int | None] = Field(description="tokens, window, reply_tokens, cap")
    system_tokens: int
    messages: list[ContextMessageOut] = Field(description="The recent messages sent word for word, oldest first")
    dropped: int = Field(description="Older messages not sent word for word")
    summary: ContextSummaryOut | None
    recalled: list[ContextRecalledOut]
    notes: list[str] = Field(description="Why something was left out")
    mood: dict[str, Any] | None = Field(default=None, description="The user message's mood (label, confidence)")


class MessageContextOut(BaseModel):
    message_id: str
    context: ContextReportOut | None = Field(description="None for replies stored before context reports existed")


class FormFieldOut(BaseModel):
    name: str
    type: str = Field(description="text, number, date, time, choice, phone or email")
    label: str
    required: bool
    value: Any = Field(None, description="the stored value (dates as YYYY-MM-DD, times as HH:MM); None if not given")
    display: str | None = Field(None, description="the value as the user reads it")
    skipped: bool = False


class FormProgressOut(BaseModel):
    form: str | None = Field(description="the persona's form; None when the persona has none (then nothing else)")
    title: str | None = None
    status: str | None = Field(None, description="collecting, confirming, done or cancelled")
    started: bool = False
    fields: list[FormFieldOut] = Field(default_factory=list)
    filled: int = 0
    total: int = 0
    next: str | None = Field(None, description="the field asked next (None while confirming or once done)")
    done: bool = False
    record_id: str | None = Field(None, description="the stored record, once done")
    delivery: str | None = Field(None, description="the webhook: pending, delivered or failed; None without one")


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str | None


class ErrorOut(BaseModel):
    error: ErrorDetail


class TurnResultOut(BaseModel):
    conversation_id: str
    user_message: MessageOut | None
    message: MessageOut
    usage: UsageOut | None
    outcome: Literal["ok", "fallback", "interrupted", "blocked", "error"]
    finish_reason: str
    model: str
    ttft_ms: float | None
    total_ms: float | None
    cost: float | None = Field(default=None, description="USD from the price table; null when the price is unknown")
    error: ErrorDetail | None
    user_meta: dict[str, Any] = Field(
        default_factory=dict, description="What the turn's contributors added to the user's message (e.g. mood)."
    )
    reply_meta: dict[str, Any] = Field(
        default_factory=dict, description="What the turn's contributors added to the reply (e.g. recommendations)."
    )


def _fields_json(record: object, names: Iterable[str], **given: Any) -> dict[str, Any]:
    """The record's attributes that a response model names (datetimes in ISO 8601), except those in ``given``: the
    model decides what leaves the server."""
    values = {name: given[name] if name in given else getattr(record, name) for name in names}
    return {name: iso(value) if isinstance(value, datetime) else value for name, value in values.items()}


def user_json(user: User) -> dict[str, Any]:
    return _fields_json(user, UserOut.model_fields)


def api_key_json(key: ApiKeyRecord) -> dict[str, Any]:
    return _fields_json(key, ApiKeyOut.model_fields)


def conversation_json(c: Conversation) -> dict[str, Any]:
    names = (f.name for f in dataclasses.fields(ConversationOut))
    return _fields_json(c, names, variables=dict(c.meta.get("variables") or {}))


def message_json(m: StoredMessage) -> dict[str, Any]:
    error = m.meta.get("error")
    return {
        "id": m.id,
        "conversation_id": m.conversation_id,
        "role": m.role,
        "content": m.content,
        "status": str(m.status),
        "model": m.model,
        "created_at": iso(m.created_at),
        "error": {"code": error.get("code"), "message": error.get("message")} if isinstance(error, dict) else None,
        "usage": _reply_usage(m.meta),
        **_intelligence(m.meta),
    }


def _reply_usage(meta: Mapping[str, Any]) -> dict[str, Any] | None:
    usage = meta.get("usage")
    if not isinstance(usage, dict) or not all(isinstance(usage.get(k), int) for k in _TOKEN_KEYS):
        return None
    cost = usage.get("cost")
    return {**{k: usage[k] for k in _TOKEN_KEYS}, "cost": cost if isinstance(cost, int | float) else None}


_TOKEN_KEYS = ("prompt_tokens", "completion_tokens", "total_tokens")


def _intelligence(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The message's mood and recommendations when they have conversation intelligence's shape (another hook may
    store other things under these keys in the meta: those stay in the meta only)."""
    mood, picks = meta.get("mood"), meta.get("recommendations")
    ok = isinstance(picks, list) and all(isinstance(p, dict) for p in picks)
    return {"mood": mood if isinstance(mood, dict) else None, "recommendations": picks if ok else None}


def usage_json(usage: Usage | None) -> dict[str, int] | None:
    if usage is None:
        return None
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def started_json(started: TurnStarted) -> dict[str, Any]:
    return {
        "conversation": conversation_json(started.conversation),
        "user_message": message_json(started.user_message) if started.user_message else None,
        "message_id": started.reply_id,
        "model": started.model,
    }


def turn_result_json(
    started: TurnStarted, finished: TurnFinished | None, message: StoredMessage, *, stopped: bool = False
) -> dict[str, Any]:
    """The end of a turn; ``finished`` is None when it was stopped (the stored partial reply is ``message``)."""
    if finished is None:
        stored = _reply_usage(message.meta)  # what the stopped turn had used, as stored with the reply
        return {
            "conversation_id": started.conversation.id,
            "user_message": message_json(started.user_message) if started.user_message else None,
            "message": message_json(message),
            "usage": {k: stored[k] for k in _TOKEN_KEYS} if stored else None,
            "outcome": "interrupted",
            "finish_reason": "stopped" if stopped else "interrupted",
            "model": message.model or started.model,
            "ttft_ms": None,
            "total_ms": None,
            "cost": stored["cost"] if stored else None,
            "error": None,
            "user_meta": {},
            "reply_meta": {},
        }
    return {
        "conversation_id": started.conversation.id,
        "user_message": message_json(started.user_message) if started.user_message else None,
        "message": message_json(finished.message),
        "usage": usage_json(finished.usage),
        "outcome": finished.outcome.value,
        "finish_reason": finished.finish_reason,
        "model": finished.model,
        "ttft_ms": finished.ttft_ms,
        "total_ms": finished.total_ms,
        "cost": finished.cost,
        "error": finished.error.to_openai()["error"] if finished.error else None,
        "user_meta": dict(finished.user_meta),
        "reply_meta": dict(finished.reply_meta),
    }


def generation_params(options: GenerationOptions) -> GenerationParams:
    """GenerationParams from a body's option fields (the ones given)."""
    values = {
        name: getattr(options, name) for name in GenerationOptions.model_fields if getattr(options, name) is not None
    }
    stop = values.get("stop")
    if isinstance(stop, list) and len(stop) > 4:
        raise InvalidRequest("stop takes at most 4 sequences.", param="stop")
    return params_from_wire(values)
