"""The context report: what one reply's model was sent, and why. Stored on the reply's ``meta["context"]``."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True, slots=True)
class SentMessage:
    id: str | None  # None for a message that is not stored (the stateless API)
    role: str
    tokens: int


@dataclass(frozen=True, slots=True)
class SummaryUse:
    first_id: str
    last_id: str
    messages: int  # how many messages it covers
    tokens: int


@dataclass(frozen=True, slots=True)
class RecalledTurn:
    ids: tuple[str, ...]  # the turn: the user's message and the reply to it
    score: float
    tokens: int


@dataclass(frozen=True, slots=True)
class ContextReport:
    """Counts and token costs of everything a reply's prompt held.

    ``tokens`` is the prompt's size by ``tokenizer`` (``exact`` False means it is an estimate); ``budget`` says how the
    limit was reached (window, reply tokens, cap). ``dropped`` counts the older messages not sent verbatim.
    ``notes`` say why something was left out (e.g. "recall: the embedding model is not installed").
    """

    policy: str
    tokenizer: str
    exact: bool
    tokens: int
    budget: Mapping[str, int | None]
    system_tokens: int
    messages: tuple[SentMessage, ...]
    dropped: int
    summary: SummaryUse | None = None
    recalled: tuple[RecalledTurn, ...] = ()
    notes: tuple[str, ...] = field(default_factory=tuple)
    mood: Mapping[str, Any] | None = None  # the user message's mood (conversation intelligence), when detected

    def as_dict(self) -> dict[str, Any]:
        """Plain JSON data (written out field by field: ``dataclasses.asdict`` cost ~5% of a /v1 request's CPU)."""
        summary = self.summary
        return {
            "policy": self.policy,
            "tokenizer": self.tokenizer,
            "exact": self.exact,
            "tokens": self.tokens,
            "budget": dict(self.budget),
            "system_tokens": self.system_tokens,
            "messages": [{"id": m.id, "role": m.role, "tokens": m.tokens} for m in self.messages],
            "dropped": self.dropped,
            "summary": None
            if summary is None
            else {
                "first_id": summary.first_id,
                "last_id": summary.last_id,
                "messages": summary.messages,
                "tokens": summary.tokens,
            },
            "recalled": [{"ids": list(r.ids), "score": r.score, "tokens": r.tokens} for r in self.recalled],
            "notes": list(self.notes),
            "mood": None if self.mood is None else copy.deepcopy(dict(self.mood)),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ContextReport:
        summary = data.get("summary")
        return cls(
            policy=str(data["policy"]),
            tokenizer=str(data["tokenizer"]),
            exact=bool(data["exact"]),
            tokens=int(data["tokens"]),
            budget=dict(data["budget"]),
            system_tokens=int(data["system_tokens"]),
            messages=tuple(SentMessage(**m) for m in data["messages"]),
            dropped=int(data["dropped"]),
            summary=SummaryUse(**summary) if summary else None,
            recalled=tuple(
                RecalledTurn(ids=tuple(r["ids"]), score=float(r["score"]), tokens=int(r["tokens"]))
                for r in data.get("recalled", ())
            ),
            notes=tuple(data.get("notes", ())),
            mood=data.get("mood"),
        )

    def describe(self) -> list[str]:
        """The report as a few lines of text (``daehwa chat``'s ``/context``)."""
        b = self.budget
        count = "exact" if self.exact else "estimated"
        lines = [
            f"context ({self.policy}): {self.tokens} of {b.get('tokens')} tokens, {count} by {self.tokenizer} "
            f"(window {b.get('window')}, {b.get('reply_tokens')} kept for the reply"
            + (f", capped at {b.get('cap')})" if b.get("cap") is not None else ")"),
            f"  system prompt: {self.system_tokens} tokens",
            f"  recent messages: {len(self.messages)} sent ({sum(m.tokens for m in self.messages)} tokens), "
            f"{self.dropped} older not sent word for word",
        ]
        if self.summary is not None:
            s = self.summary
            lines.append(f"  summary: the first {s.messages} messages ({s.first_id} .. {s.last_id}), {s.tokens} tokens")
        for r in self.recalled:
            lines.append(f"  recalled: {' + '.join(r.ids)} (score {r.score:.3f}, {r.tokens} tokens)")
        if self.mood:
            m = self.mood
            lines.append(f"  mood: {m.get('label')} ({float(m.get('confidence', 0)):.2f}, {m.get('method')})")
        lines += [f"  note: {n}" for n in self.notes]
        return lines
