"""Context building: token counting and the window of recent turns."""

from __future__ import annotations

from .tokens import TokenCounter, count_message_tokens, estimate_tokens
from .window import build_context

__all__ = ["TokenCounter", "build_context", "count_message_tokens", "estimate_tokens"]
