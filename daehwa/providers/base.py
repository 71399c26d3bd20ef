"""The Provider interface: an async stream of text deltas, then one ``StreamEnd`` with usage.

A provider is one backend (the embedded model, OpenAI, a vLLM server, ...). Models are addressed as
``<provider>/<model>``; a bare provider name (``local``) means that provider's default model.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from ..types import ProviderEvent, ProviderRequest

if TYPE_CHECKING:
    from ..config import Settings
    from ..context.tokens import Tokenizer


@dataclass(frozen=True, slots=True)
class ProviderConfig:
    """One provider entry: built in, or a table of the providers file (``DAEHWA_PROVIDERS_FILE``)."""

    name: str
    type: str  # the implementation, an entry point name in the ``daehwa.providers`` group: "local", "openai", ...
    base_url: str | None = None
    api_key_env: str | None = None  # the *name* of the environment variable holding the key, never the key
    models: tuple[str, ...] = ()
    default_model: str | None = None
    unsupported_params: tuple[str, ...] = ()
    unsupported_action: str = "reject"  # "reject" (400) or "drop" (logged warning)
    options: Mapping[str, Any] = field(default_factory=dict)
    context_window: int | None = None  # tokens (prompt + reply) of every model of this provider, overriding the table
    context_windows: Mapping[str, int] = field(default_factory=dict)  # per model id, overriding both


@dataclass(frozen=True, slots=True)
class ModelInfo:
    """A model a provider offers, as ``daehwa models`` and ``/v1/models`` list it."""

    id: str  # full name, "<provider>/<model>"
    provider: str
    available: bool
    reason: str | None = None  # why it is not available, and how to fix that
    description: str = ""


@dataclass(frozen=True, slots=True)
class ProviderStatus:
    available: bool
    reason: str | None = None
    loaded: bool = False  # models are in memory / the client is ready
    detail: Mapping[str, Any] = field(default_factory=dict)


class Provider(abc.ABC):
    """One model backend. Implementations must be safe for many concurrent ``stream`` calls."""

    #: Chat Completions parameters (wire names) this provider honours; others are rejected or dropped loudly.
    supported_params: frozenset[str] = frozenset()
    #: Seconds this provider may take to its first token, instead of DAEHWA_FIRST_TOKEN_TIMEOUT (None: that setting).
    first_token_timeout: float | None = None

    def __init__(self, config: ProviderConfig, settings: Settings) -> None:
        self.config = config
        self.settings = settings

    @property
    def name(self) -> str:
        return self.config.name

    @property
    def default_model(self) -> str:
        if self.config.default_model:
            return self.config.default_model
        if self.config.models:
            return self.config.models[0]
        raise NotImplementedError(f"provider {self.name!r} has no default model: name one as {self.name}/<model>")

    async def start(self) -> None:  # noqa: B027 - optional hook
        """Prepare (load weights, open clients). Called once in the app's lifespan; must be idempotent."""

    async def aclose(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""

    async def warm(self, model: str) -> None:  # noqa: B027 - optional hook
        """Make ``model`` ready to answer (load it); the router calls this before its first-token clock starts."""

    def tokenizer(self, model: str) -> Tokenizer | None:
        """The exact tokenizer of ``model``, or None (context budgets then use the estimate, marked as such)."""
        return None

    def config_context_window(self, model: str) -> int | None:
        """The window the providers file gives ``model`` (``context_windows``, else ``context_window``)."""
        return self.config.context_windows.get(model) or self.config.context_window

    def context_window(self, model: str) -> int | None:
        """Tokens (prompt + reply) ``model`` holds: the providers file, else the known-models table, else None."""
        from ..context.limits import known_window

        return self.config_context_window(model) or known_window(model)

    @abc.abstractmethod
    def stream(self, request: ProviderRequest) -> AsyncIterator[ProviderEvent]:
        """Yield ``TextDelta`` events, then exactly one ``StreamEnd``. Raise ``DaehwaError`` subclasses on failure.

        Cancelling the iteration (``aclose`` or task cancellation) must stop generation upstream promptly.
        """

    @abc.abstractmethod
    async def list_models(self) -> list[ModelInfo]:
        """The models this provider offers (others may still be accepted by name)."""

    @abc.abstractmethod
    def status(self) -> ProviderStatus:
        """Whether the provider can serve now, and if not, what to do about it. Must not block."""
