"""Building the context sent to the model: the system prompt plus as many recent turns as the token budget allows."""

from __future__ import annotations

from collections.abc import Sequence

from ..errors import InvalidRequest
from ..types import ChatMessage
from .tokens import MESSAGE_OVERHEAD, TokenCounter, estimate_tokens


def build_context(
    system: str | None,
    history: Sequence[ChatMessage],
    *,
    budget: int,
    counter: TokenCounter = estimate_tokens,
) -> list[ChatMessage]:
    """The system prompt, then the newest messages of ``history`` that fit in ``budget`` tokens, oldest first.

    The last message (the one being answered) is always kept; if even it does not fit, the caller gets an error that
    says how far over it is rather than a silently truncated question.
    """
    head = [ChatMessage("system", system)] if system else []
    used = sum(counter(m.content) + MESSAGE_OVERHEAD for m in head) + 2
    kept: list[ChatMessage] = []
    for i, message in enumerate(reversed(history)):
        cost = counter(message.content) + MESSAGE_OVERHEAD
        if used + cost > budget:
            if i == 0:
                raise InvalidRequest(
                    f"The message is about {cost} tokens but the context budget left after the system prompt is "
                    f"{max(budget - used, 0)} tokens: shorten it, or raise DAEHWA_CONTEXT_MAX_TOKENS if the model's "
                    "context window allows.",
                    param="content",
                    code="context_length_exceeded",
                )
            break
        kept.append(message)
        used += cost
    kept.reverse()
    # A cut window must not open with an assistant turn whose question was dropped: it reads as the model talking
    # alone. (An uncut history may: a persona that speaks first opens with its own greeting.)
    while len(kept) < len(history) and len(kept) > 1 and kept[0].role == "assistant":
        kept.pop(0)
    return head + kept
