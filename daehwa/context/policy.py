"""Context policies: what besides the recent turns a turn's context holds.

A policy is written as strategies joined by ``+``: ``recent`` (the system prompt and the last messages that fit, at
most ``recent_messages`` of them), ``summary`` (a rolling summary of the turns that fell out of the window) and
``recall`` (the older turns most related to the new message, by meaning). ``recent`` is always part of it: the
message being answered is always sent. The default is ``summary+recall+recent``; ``DAEHWA_CONTEXT_POLICY`` sets it
globally and a persona's ``context`` key per persona.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import ConfigError

STRATEGIES = ("summary", "recall", "recent")
DEFAULT_POLICY = "summary+recall+recent"


@dataclass(frozen=True, slots=True)
class ContextPolicy:
    summary: bool = True
    recall: bool = True
    #: Most recent messages sent verbatim (0: as many as the budget allows).
    recent_messages: int = 16
    #: Older turns recalled at most.
    recall_k: int = 3

    @classmethod
    def parse(cls, spec: str, *, recent_messages: int = 16, recall_k: int = 3, where: str = "context") -> ContextPolicy:
        """``"summary+recall+recent"`` -> a policy; an unknown strategy is a ConfigError naming ``where``."""
        parts = [p.strip().lower() for p in spec.replace(",", "+").split("+") if p.strip()]
        unknown = [p for p in parts if p not in STRATEGIES]
        if unknown or not parts:
            raise ConfigError(
                f"{where}: unknown context policy {spec!r}: join {', '.join(STRATEGIES)} with '+', "
                f"e.g. {DEFAULT_POLICY!r} or 'recent'."
            )
        return cls(
            summary="summary" in parts, recall="recall" in parts, recent_messages=recent_messages, recall_k=recall_k
        )

    @property
    def name(self) -> str:
        return "+".join(s for s in STRATEGIES if s == "recent" or getattr(self, s))
