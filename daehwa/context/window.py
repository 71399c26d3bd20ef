"""Building the context sent to the model: system prompt (+ summary), recalled excerpts and the recent window.

The prompt a turn sends is, in order::

    system      the persona's system prompt, then the rolling summary of what left the window (if any)
    ...         the recent window: the newest messages that fit, at most ``recent_messages`` of them
    system      "earlier excerpts": recalled older turns, quoted (only when recall found some)
    user        the message being answered (always sent; too long for the budget is an error)

The summary sits in the first system message because it changes rarely (llama.cpp keeps the prompt's unchanged
start cached); the excerpts change every turn and so come last. The window's start moves in steps of ``WINDOW_STEP``
messages when it is limited by count, for the same reason.

``select_window`` and ``assemble`` are pure: the pipeline loads the history, summary and vectors, ranks the recall
candidates (``daehwa.context.recall``) and hands the results in.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..errors import InvalidRequest
from ..types import ChatMessage
from .limits import Budget
from .policy import ContextPolicy
from .recall import excerpt
from .report import ContextReport, RecalledTurn, SentMessage, SummaryUse
from .summary import Entry, Summary, summary_block
from .tokens import TokenCounter, Tokenizer, as_tokenizer, estimate_tokens, message_cost

#: A count-limited window's start moves by this many messages at a time (two turns).
WINDOW_STEP = 4
#: Share of the budget the summary may take at most.
SUMMARY_SHARE = 0.25
#: Share of the budget recalled excerpts may take at most.
RECALL_SHARE = 0.2


def _too_long(cost: int, room: int) -> InvalidRequest:
    return InvalidRequest(
        f"The message is about {cost} tokens but the context budget left after the system prompt is "
        f"{max(room, 0)} tokens: shorten it, or raise DAEHWA_CONTEXT_MAX_TOKENS if the model's context window "
        "allows.",
        param="content",
        code="context_length_exceeded",
    )


def select_window(
    costs: Sequence[int],
    roles: Sequence[str],
    *,
    room: int,
    recent_messages: int = 0,
    reserve: int = 0,
    step: int = WINDOW_STEP,
) -> int:
    """The index where the recent window starts: the newest messages whose ``costs`` fit in ``room`` tokens.

    ``room`` is the budget left after the system prompt; ``reserve`` is kept free (for summary and excerpts) once not
    everything fits. The last message is always kept; if even it does not fit, ``InvalidRequest`` says by how much.
    A cut window never opens with an assistant message whose question was dropped.
    """
    n = len(costs)
    if n == 0:
        return 0
    if costs[-1] > room:
        raise _too_long(costs[-1], room)
    if sum(costs) <= room and (not recent_messages or n <= recent_messages):
        return 0
    floor = 0
    if recent_messages and n > recent_messages:
        floor = ((n - recent_messages) // step) * step
    limit = max(room - reserve, costs[-1])
    used = 0
    start = n
    for i in range(n - 1, floor - 1, -1):
        if used + costs[i] > limit:
            break
        used += costs[i]
        start = i
    while start < n - 1 and start > 0 and roles[start] == "assistant":
        start += 1
    return start


@dataclass(frozen=True, slots=True)
class Recalled:
    """A recalled older turn: its messages and score."""

    entries: tuple[Entry, ...]
    score: float


def excerpts_header(language: str) -> str:
    """The line that opens the recalled excerpts, so the model reads them as quotes, not as new messages."""
    if language == "ko":
        return "[이전 대화에서 관련 있는 부분 — 인용이며 새 메시지가 아닙니다]"
    return "[Earlier excerpts from this conversation that may be relevant — quoted, not new messages]"


def assemble(
    system: str | None,
    history: Sequence[Entry],
    *,
    window_start: int,
    tokenizer: Tokenizer,
    budget: Budget,
    policy: ContextPolicy,
    summary: Summary | None = None,
    recalled: Sequence[Recalled] = (),
    language: str = "en",
    notes: Sequence[str] = (),
) -> tuple[list[ChatMessage], ContextReport]:
    """The prompt for ``history[window_start:]`` with the summary and excerpts that fit, and its report."""
    notes = list(notes)
    window = list(history[window_start:])
    window_msgs = [ChatMessage(e.role, e.content) for e in window]
    window_costs = [message_cost(m, tokenizer) for m in window_msgs]
    head_text = system or ""
    summary_use: SummaryUse | None = None
    used = sum(window_costs)

    def fixed(head: str, extra: list[ChatMessage]) -> int:
        msgs = ([ChatMessage("system", head)] if head else []) + window_msgs[:1]
        return (
            (message_cost(ChatMessage("system", head), tokenizer) if head else 0)
            + sum(message_cost(m, tokenizer) for m in extra)
            + tokenizer.prompt_overhead(msgs)
        )

    if summary is not None and policy.summary:
        block = summary_block(summary, language=language)
        candidate = f"{head_text}\n\n{block}" if head_text else block
        cost = message_cost(ChatMessage("system", candidate), tokenizer) - (
            message_cost(ChatMessage("system", head_text), tokenizer) if head_text else 0
        )
        if used + fixed(candidate, []) <= budget.tokens and cost <= max(budget.tokens * SUMMARY_SHARE, 1):
            head_text = candidate
            summary_use = SummaryUse(summary.first_id, summary.last_id, summary.messages, cost)
        else:
            notes.append("summary: left out, it does not fit the budget")

    recall_msg: ChatMessage | None = None
    recalled_used: list[RecalledTurn] = []
    if recalled and policy.recall:
        header = excerpts_header(language)
        parts: list[str] = []
        spent = 0
        for hit in recalled:
            text = excerpt([ChatMessage(e.role, e.content) for e in hit.entries], language=language)
            trial = ChatMessage("system", "\n\n".join([header, *parts, text]))
            trial_cost = message_cost(trial, tokenizer)
            if used + fixed(head_text, [trial]) > budget.tokens or trial_cost > max(budget.tokens * RECALL_SHARE, 1):
                notes.append("recall: an excerpt was left out, it does not fit the budget")
                continue
            parts.append(text)
            tokens = trial_cost - spent
            spent = trial_cost
            recalled_used.append(RecalledTurn(tuple(e.id for e in hit.entries), round(hit.score, 4), tokens))
        if parts:
            recall_msg = ChatMessage("system", "\n\n".join([header, *parts]))

    messages: list[ChatMessage] = [ChatMessage("system", head_text)] if head_text else []
    messages += window_msgs[:-1]
    if recall_msg is not None:
        messages.append(recall_msg)
    messages += window_msgs[-1:]
    system_tokens = message_cost(messages[0], tokenizer) if head_text else 0
    total = sum(message_cost(m, tokenizer) for m in messages) + tokenizer.prompt_overhead(messages)
    report = ContextReport(
        policy=policy.name,
        tokenizer=tokenizer.name,
        exact=tokenizer.exact,
        tokens=total,
        budget=budget.as_dict(),
        system_tokens=system_tokens,
        messages=tuple(SentMessage(e.id or None, e.role, c) for e, c in zip(window, window_costs, strict=True)),
        dropped=window_start,
        summary=summary_use,
        recalled=tuple(recalled_used),
        notes=tuple(notes),
    )
    return messages, report


def build_context(
    system: str | None,
    history: Sequence[ChatMessage],
    *,
    budget: int,
    counter: Tokenizer | TokenCounter = estimate_tokens,
    recent_messages: int = 0,
) -> list[ChatMessage]:
    """The system prompt, then the newest messages of ``history`` that fit in ``budget`` tokens, oldest first.

    The last message (the one being answered) is always kept; if even it does not fit, the caller gets an error that
    says how far over it is rather than a silently truncated question.
    """
    tokenizer = as_tokenizer(counter)
    head = [ChatMessage("system", system)] if system else []
    room = budget - sum(message_cost(m, tokenizer) for m in head) - tokenizer.prompt_overhead(head + list(history[:1]))
    start = select_window(
        [message_cost(m, tokenizer) for m in history],
        [m.role for m in history],
        room=room,
        recent_messages=recent_messages,
    )
    return head + list(history[start:])
