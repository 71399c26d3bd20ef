"""Rolling summaries of the turns that fell out of the recent window.

A summary covers a contiguous run of a conversation's messages from its first one (``first_id`` .. ``last_id``).
When more messages leave the window, the summary is *extended*: the model is given the previous summary and only the
newly dropped messages, never the whole history again. It is written in the conversation's language.

Everything here is pure: which messages a new summary must fold in (``pending``), the prompt that asks for it
(``summary_prompt``), and whether a stored summary still matches the history (``still_valid``: editing or
regenerating deletes messages, and a summary that covered a deleted message is discarded). The background task that
runs the model lives in the pipeline.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from ..types import ChatMessage, ConversationSummary, Role

#: Messages that must have left the window before a summary is (re)written: fewer is not worth a model call.
MIN_BATCH = 4
#: Longest summary asked for, in tokens (the model's max_tokens for the summary call).
SUMMARY_MAX_TOKENS = 300
#: Characters of one message given to the summariser at most (a pasted document does not need to be read whole).
MESSAGE_CHARS = 1_500


#: A stored summary (the type lives in ``daehwa.types``: stores return it).
Summary = ConversationSummary


@dataclass(frozen=True, slots=True)
class Entry:
    """One message of a history as these functions see it."""

    id: str
    role: Role
    content: str


def language_of(texts: Sequence[str]) -> str:
    """``"ko"`` when Hangul makes up a fair part of the letters of ``texts``, else ``"en"``."""
    hangul = letters = 0
    for text in texts:
        for ch in text:
            if "\uac00" <= ch <= "\ud7a3" or "\u3131" <= ch <= "\u318e":
                hangul += 1
                letters += 1
            elif ch.isalpha():
                letters += 1
    return "ko" if letters and hangul / letters >= 0.3 else "en"


def still_valid(summary: Summary | None, history: Sequence[Entry]) -> bool:
    """Whether ``summary`` still describes the start of ``history``: it opens with ``first_id`` and ``last_id`` and
    every message between are still there, in the same count."""
    if summary is None:
        return False
    ids = [e.id for e in history]
    if not ids or ids[0] != summary.first_id or summary.last_id not in ids:
        return False
    return ids.index(summary.last_id) + 1 == summary.messages


def pending(history: Sequence[Entry], window_start: int, summary: Summary | None) -> list[Entry] | None:
    """The messages a new summary must fold in, or None when no summary is due.

    ``history[:window_start]`` is what the recent window no longer holds; what an existing (valid) summary covers
    is not asked for again. A summary is due once at least ``MIN_BATCH`` uncovered messages have left the window.
    """
    covered = summary.messages if still_valid(summary, history) and summary is not None else 0
    if window_start - covered < MIN_BATCH:
        return None
    return list(history[covered:window_start])


def summary_prompt(previous: Summary | None, entries: Sequence[Entry], *, language: str) -> list[ChatMessage]:
    """The messages asking the model for the new summary: the previous summary and the newly dropped messages."""

    def cut(text: str) -> str:
        return text if len(text) <= MESSAGE_CHARS else text[: MESSAGE_CHARS - 1] + "…"

    if language == "ko":
        names = {"user": "사용자", "assistant": "어시스턴트"}
        system = (
            "당신은 대화를 요약합니다. 나중에 대화를 이어 갈 때 필요한 사실, 이름, 숫자, 결정, 사용자의 요청과 "
            "선호를 빠짐없이 남기고, 인사나 잡담은 뺍니다. 한국어로, 5문장 이내로 씁니다. 요약만 답합니다."
        )
        head = f"지금까지의 요약:\n{previous.text}\n\n이어진 대화:\n" if previous else "대화:\n"
        tail = "위 요약에 이어진 대화를 합쳐 새 요약을 쓰세요." if previous else "이 대화를 요약하세요."
    else:
        names = {"user": "User", "assistant": "Assistant"}
        system = (
            "You summarise conversations. Keep every fact, name, number, decision, and the user's requests and "
            "preferences that a later reply may need; leave out greetings and small talk. Write at most five "
            "sentences, in English. Answer with the summary only."
        )
        head = f"Summary so far:\n{previous.text}\n\nThe conversation continued:\n" if previous else "Conversation:\n"
        tail = (
            "Write a new summary that merges the summary so far with what followed."
            if previous
            else "Summarise this conversation."
        )
    lines = "\n".join(f"{names.get(e.role, e.role)}: {cut(e.content)}" for e in entries)
    return [ChatMessage("system", system), ChatMessage("user", f"{head}{lines}\n\n{tail}")]


def extended(
    previous: Summary | None, entries: Sequence[Entry], *, conversation_id: str, text: str, model: str
) -> Summary:
    """The summary that results from folding ``entries`` into ``previous`` (``entries`` follow what it covers)."""
    if not entries:
        raise ValueError("a summary covers at least one message")
    first = previous.first_id if previous else entries[0].id
    count = (previous.messages if previous else 0) + len(entries)
    return Summary(conversation_id, first, entries[-1].id, count, text.strip(), model)


def summary_block(summary: Summary, *, language: str) -> str:
    """The summary as it is added to the system prompt."""
    if language == "ko":
        return f"[이전 대화 요약 — 메시지 {summary.messages}개]\n{summary.text}"
    return f"[Summary of the earlier conversation — {summary.messages} messages]\n{summary.text}"
