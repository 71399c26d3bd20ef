"""Context windows of known models, and the token budget a turn's context may use.

The table is a starting point; a provider's table in the providers file overrides it for any model
(``context_window = 32768`` for all its models, ``context_windows = { "glm-4-flash" = 128000 }`` per model), and the
embedded model's window is ``DAEHWA_LOCAL_CONTEXT_SIZE``. A model found nowhere gets ``DEFAULT_WINDOW``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

#: Tokens of context (prompt + reply) of known model families, matched by the longest prefix of the model id.
KNOWN_WINDOWS: Mapping[str, int] = {
    "gpt-4o": 128_000,
    "gpt-4o-mini": 128_000,
    "chatgpt-4o": 128_000,
    "gpt-4.1": 1_047_576,
    "gpt-4.5": 128_000,
    "gpt-5": 400_000,
    "gpt-4-turbo": 128_000,
    "gpt-4-32k": 32_768,
    "gpt-4": 8_192,
    "gpt-3.5-turbo": 16_385,
    "o1": 200_000,
    "o3": 200_000,
    "o4-mini": 200_000,
    "glm-4": 128_000,
    "glm-4-flash": 128_000,
    "glm-4-plus": 128_000,
    "qwen2.5": 32_768,
    "llama3.1": 128_000,
    "llama3.2": 128_000,
    "llama-3.1": 128_000,
    "llama-3.2": 128_000,
    "mistral": 32_768,
    "gemma2": 8_192,
}

#: Window assumed for a model nobody describes: small enough to be safe on most servers.
DEFAULT_WINDOW = 8_192
#: Tokens kept free for the reply when the request sets no max_tokens.
DEFAULT_REPLY_TOKENS = 1_024


def known_window(model: str) -> int | None:
    """The window of ``model`` from ``KNOWN_WINDOWS`` (longest matching prefix; the part after the last '/')."""
    name = model.rsplit("/", 1)[-1].lower()
    best: str | None = None
    for prefix in KNOWN_WINDOWS:
        if (name == prefix or name.startswith((prefix + "-", prefix + ":", prefix + "."))) and (
            best is None or len(prefix) > len(best)
        ):
            best = prefix
    return KNOWN_WINDOWS[best] if best else None


@dataclass(frozen=True, slots=True)
class Budget:
    """How many prompt tokens a turn may use, and where that number came from (shown in the context report)."""

    tokens: int
    window: int
    reply_tokens: int
    cap: int | None

    def as_dict(self) -> dict[str, int | None]:
        return {"tokens": self.tokens, "window": self.window, "reply_tokens": self.reply_tokens, "cap": self.cap}


def context_budget(
    window: int, *, max_tokens: int | None, cap: int | None, reply_default: int = DEFAULT_REPLY_TOKENS
) -> Budget:
    """Window minus the reply's max_tokens (or ``reply_default``), capped by ``cap`` (DAEHWA_CONTEXT_MAX_TOKENS)."""
    reply = max_tokens if max_tokens is not None else min(reply_default, window // 4)
    tokens = max(window - reply, 0)
    if cap is not None:
        tokens = min(tokens, cap)
    return Budget(tokens=tokens, window=window, reply_tokens=reply, cap=cap)
