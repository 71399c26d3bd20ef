"""Context windows: the system prompt, then the newest turns that fit the token budget."""

from __future__ import annotations

import pytest

from daehwa.context import build_context, estimate_tokens
from daehwa.errors import InvalidRequest
from daehwa.types import ChatMessage


def turns(n: int) -> list[ChatMessage]:
    return [ChatMessage("user" if i % 2 == 0 else "assistant", f"message number {i} " * 5) for i in range(n)]


def test_everything_fits():
    history = turns(4)
    assert build_context("sys", history, budget=10_000) == [ChatMessage("system", "sys"), *history]


def test_oldest_turns_are_dropped_first_and_the_window_starts_with_a_user_turn():
    history = turns(41)  # ends with a user message
    window = build_context("sys", history, budget=300)
    assert window[0] == ChatMessage("system", "sys")
    assert window[-1] == history[-1]
    assert window[1].role == "user"
    assert window[1:] == history[-(len(window) - 1) :]
    assert len(window) < len(history)


def test_a_message_too_long_for_the_budget_is_an_error_naming_the_setting():
    with pytest.raises(InvalidRequest, match="DAEHWA_CONTEXT_MAX_TOKENS"):
        build_context("sys", [ChatMessage("user", "가" * 5000)], budget=1000)


def test_estimates_count_hangul_about_one_token_per_syllable():
    assert estimate_tokens("안녕하세요") == 5
    assert 2 <= estimate_tokens("hello world") <= 4
    assert estimate_tokens("") == 0
