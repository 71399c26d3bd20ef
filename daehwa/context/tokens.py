"""Token counting for context budgets: exact where the model's tokenizer is at hand, an estimate marked as such else.

A ``Tokenizer`` counts a text's tokens and knows what the chat template adds around each message, so
``count_messages`` is the prompt's size as the model sees it:

- the embedded model counts with its own vocabulary (llama.cpp's ``/tokenize``), and its chat template's overhead is
  measured once per model (``LocalTokenizer`` in ``daehwa.context.tokenizers``);
- OpenAI-family models count with an offline BPE (``bpe-openai``: o200k_base / cl100k_base, no download);
- any other model falls back to ``EstimateTokenizer``, which errs high and says ``exact = False``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

from ..types import ChatMessage

#: Tokens a chat template adds around each message (role markers, separators) in common templates.
MESSAGE_OVERHEAD = 4
#: Tokens a template adds once per prompt (the start of the reply, e.g. ``<|im_start|>assistant\n``).
PROMPT_OVERHEAD = 2

TokenCounter = Callable[[str], int]


@runtime_checkable
class Tokenizer(Protocol):
    """Counts tokens the way one model does."""

    name: str  # what counts: "o200k_base", "local/qwen2.5-0.5b", "estimate"
    exact: bool  # False for the estimate

    def count(self, text: str) -> int: ...

    def message_overhead(self, role: str) -> int: ...

    def prompt_overhead(self, messages: Sequence[ChatMessage]) -> int: ...


def estimate_tokens(text: str) -> int:
    """A tokenizer-free estimate that errs high: Hangul and other CJK about one token a character, else ~3.5 chars."""
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


@functools.lru_cache(maxsize=16384)
def _cached_estimate(text: str) -> int:
    return estimate_tokens(text)


class EstimateTokenizer:
    """The fallback for models whose tokenizer daehwa does not have."""

    name = "estimate"
    exact = False
    blocking = False

    def count(self, text: str) -> int:
        return _cached_estimate(text)

    def message_overhead(self, role: str) -> int:
        return MESSAGE_OVERHEAD

    def prompt_overhead(self, messages: Sequence[ChatMessage]) -> int:
        return PROMPT_OVERHEAD


class CounterTokenizer:
    """A plain ``text -> tokens`` function with the common template overheads."""

    def __init__(self, counter: TokenCounter, *, name: str = "counter", exact: bool = False) -> None:
        self._counter = counter
        self.name = name
        self.exact = exact

    def count(self, text: str) -> int:
        return self._counter(text)

    def message_overhead(self, role: str) -> int:
        return MESSAGE_OVERHEAD

    def prompt_overhead(self, messages: Sequence[ChatMessage]) -> int:
        return PROMPT_OVERHEAD


def as_tokenizer(counter: Tokenizer | TokenCounter) -> Tokenizer:
    """A ``Tokenizer`` from either a tokenizer or a bare counting function."""
    if isinstance(counter, Tokenizer):
        return counter
    if counter is estimate_tokens:
        return EstimateTokenizer()
    return CounterTokenizer(counter)


def message_cost(message: ChatMessage, tokenizer: Tokenizer) -> int:
    """Tokens one message takes in the prompt, template markers included."""
    return tokenizer.count(message.content) + tokenizer.message_overhead(message.role)


def count_message_tokens(messages: Sequence[ChatMessage], counter: Tokenizer | TokenCounter = estimate_tokens) -> int:
    """The prompt size of ``messages`` (exact when ``counter`` is an exact tokenizer)."""
    tokenizer = as_tokenizer(counter)
    return sum(message_cost(m, tokenizer) for m in messages) + tokenizer.prompt_overhead(messages)
