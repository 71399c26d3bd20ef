"""Token counting for context budgets.

Budgets only need a close, slightly high estimate; exact usage always comes from the provider. Every budget today uses
``estimate_tokens``: providers' own ``count_tokens`` (the embedded model has one) are not consulted yet.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence

from ..types import ChatMessage

#: Tokens a chat template adds around each message (role markers, separators) in common templates.
MESSAGE_OVERHEAD = 4

TokenCounter = Callable[[str], int]


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate that errs high: Hangul and other CJK about one token a character, else ~4 chars."""
    wide = 0
    other = 0
    for ch in text:
        code = ord(ch)
        if 0xAC00 <= code <= 0xD7A3 or 0x3040 <= code <= 0x9FFF or 0x1100 <= code <= 0x11FF or 0x3130 <= code <= 0x318F:
            wide += 1
        elif code > 0x2000:  # emoji and symbols take several byte-level tokens
            wide += 2
        else:
            other += 1
    return wide + math.ceil(other / 3.5)


def count_message_tokens(messages: Sequence[ChatMessage], counter: TokenCounter = estimate_tokens) -> int:
    return sum(counter(m.content) + MESSAGE_OVERHEAD for m in messages) + 2
