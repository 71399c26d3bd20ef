"""The project's own small types, shared by every layer.

Wire formats (OpenAI JSON, HTTP bodies) are translated to and from these at the edge; inside, code speaks only these.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

Role = Literal["system", "user", "assistant"]
ROLES: frozenset[str] = frozenset({"system", "user", "assistant"})


@dataclass(frozen=True, slots=True)
class ChatMessage:
    """One message of the context sent to a model."""

    role: Role
    content: str
    name: str | None = None

    def as_dict(self) -> dict[str, str]:
        data = {"role": self.role, "content": self.content}
        if self.name:
            data["name"] = self.name
        return data


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """Chat Completions sampling parameters; ``None`` means "the provider's default".

    ``extra`` carries any further OpenAI parameter by its wire name (e.g. ``logit_bias``); providers that do not know
    it reject or drop it loudly, never silently.
    """

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    n: int | None = None
    stop: tuple[str, ...] | None = None
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    seed: int | None = None
    user: str | None = None
    response_format: Mapping[str, Any] | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def set_fields(self) -> dict[str, Any]:
        """The parameters that were given, by their OpenAI wire name (``extra`` merged in)."""
        out: dict[str, Any] = {}
        for name in PARAM_NAMES:
            value = getattr(self, name)
            if value is not None:
                out[name] = list(value) if name == "stop" else value
        out.update(self.extra)
        return out

    def merged_over(self, defaults: GenerationParams) -> GenerationParams:
        """These parameters, with unset ones taken from ``defaults`` (e.g. a persona's)."""
        values = {name: getattr(self, name) for name in PARAM_NAMES}
        for name in PARAM_NAMES:
            if values[name] is None:
                values[name] = getattr(defaults, name)
        return GenerationParams(**values, extra={**defaults.extra, **self.extra})


PARAM_NAMES: tuple[str, ...] = (
    "max_tokens",
    "temperature",
    "top_p",
    "n",
    "stop",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "user",
    "response_format",
)

#: The range of every numeric parameter, inclusive, the same on every route (REST, SSE, WebSocket, /v1, the CLI).
#: Integers are whole numbers only; floats must be finite (NaN and infinity are refused).
PARAM_BOUNDS: Mapping[str, tuple[int | float, int | float]] = {
    "max_tokens": (1, 1_000_000),
    "max_completion_tokens": (1, 1_000_000),  # /v1's newer name for max_tokens
    "temperature": (0, 2),
    "top_p": (0, 1),
    "n": (1, 128),  # OpenAI's own limit; DAEHWA_MAX_CHOICES may lower it further
    "presence_penalty": (-2, 2),
    "frequency_penalty": (-2, 2),
    "seed": (-(2**63), 2**63 - 1),  # a signed 64-bit integer, as OpenAI takes it
}
INTEGER_PARAMS: frozenset[str] = frozenset({"max_tokens", "max_completion_tokens", "n", "seed"})


def bound_message(name: str, value: object = None) -> str:
    """How a person reads the bound: "max_tokens must be between 1 and 1000000 (a whole number; got 1e+30)."."""
    low, high = PARAM_BOUNDS[name]
    kind = "a whole number" if name in INTEGER_PARAMS else "a finite number"
    got = "" if value is None else f"; got {str(value)[:40]}"
    return f"{name} must be between {low} and {high} ({kind}{got})."


def out_of_bounds(name: str, value: object) -> bool:
    """Whether ``value`` is outside ``PARAM_BOUNDS[name]`` (or not a number of the right kind at all)."""
    low, high = PARAM_BOUNDS[name]
    if isinstance(value, bool) or not isinstance(value, int | float):
        return True
    if name in INTEGER_PARAMS and not isinstance(value, int):
        return True
    return not low <= value <= high  # False for NaN too: every comparison with NaN is False


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(self.prompt_tokens + other.prompt_tokens, self.completion_tokens + other.completion_tokens)


@dataclass(frozen=True, slots=True)
class ProviderRequest:
    """What a provider is asked: a provider-local model id, the full context and the parameters."""

    model: str
    messages: tuple[ChatMessage, ...]
    params: GenerationParams = field(default_factory=GenerationParams)


@dataclass(frozen=True, slots=True)
class TextDelta:
    """A piece of generated text for choice ``index``."""

    text: str
    index: int = 0


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """The last event of a provider stream: token usage and why each choice stopped."""

    usage: Usage | None
    finish_reasons: Mapping[int, str] = field(default_factory=lambda: {0: "stop"})
    model: str | None = None  # the model id the provider reports, if it says


ProviderEvent = TextDelta | StreamEnd


class MessageStatus(enum.StrEnum):
    """Lifecycle of a stored message. A reply is stored as ``streaming`` first and finalised once."""

    COMPLETE = "complete"
    STREAMING = "streaming"  # still being generated (or the process died: fixed to interrupted on start)
    INTERRUPTED = "interrupted"  # stream broke off, was stopped or the client left: partial text kept
    ERROR = "error"  # the model failed before any text arrived
    BLOCKED = "blocked"  # moderation refused it
    FALLBACK = "fallback"  # the canned fallback reply, stored because every model failed


class Outcome(enum.StrEnum):
    """How a turn ended, for accounting and metrics."""

    OK = "ok"
    FALLBACK = "fallback"
    INTERRUPTED = "interrupted"
    BLOCKED = "blocked"
    ERROR = "error"


@dataclass(frozen=True, slots=True)
class User:
    id: str
    name: str
    is_admin: bool = False
    anonymous: bool = False
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class Conversation:
    id: str
    user_id: str
    title: str
    persona: str | None
    model: str | None
    created_at: datetime
    updated_at: datetime
    kind: str = "chat"  # "chat" (server keeps the history) or "api" (stateless /v1 request log)
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class StoredMessage:
    id: str
    conversation_id: str
    role: Role
    content: str
    status: MessageStatus
    created_at: datetime
    model: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def as_chat_message(self) -> ChatMessage:
        return ChatMessage(self.role, self.content)


@dataclass(frozen=True, slots=True)
class ConversationSummary:
    """A rolling summary of a conversation's first ``messages`` messages, ``first_id`` .. ``last_id``."""

    conversation_id: str
    first_id: str
    last_id: str
    messages: int
    text: str
    model: str
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageRecord:
    """One accounted model call (a turn, or a /v1 request)."""

    user_id: str
    model: str
    usage: Usage
    outcome: Outcome
    ttft_ms: float | None
    total_ms: float
    conversation_id: str | None = None
    message_id: str | None = None
    cost: float | None = None
    source: str = "chat"
    request_id: str | None = None
    created_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UsageTotal:
    user_id: str
    user_name: str | None
    model: str
    turns: int
    prompt_tokens: int
    completion_tokens: int
    cost: float

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens
