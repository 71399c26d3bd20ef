"""Recall of older turns by meaning: rank the turns outside the recent window by how related they are to a message.

A *turn* is a user message and the reply to it; its vector is the embedding of both texts together (a question
alone rarely says what was settled, and "the city" in a follow-up matches "Seoul ... 15 degrees" better than the
bare question). The new message is embedded as a query.

Scores are cosine similarities, corrected for two habits of sentence embeddings that otherwise let chit-chat win:

- every chat message shares a large common direction (all scores sit near 0.8), so vectors are *centred* on the
  conversation's mean before comparing;
- some turns ("thanks!", "how are you?") are close to everything (hubs); a turn's score is lowered by
  ``hub_weight`` times its mean similarity to its ``hub_neighbours`` nearest other turns (CSLS).

Measured on generated Korean and English conversations in benchmarks/bench_context.py (recall@3 0.75 without the
corrections).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from ..types import ChatMessage

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    Vectors = npt.NDArray[np.float32]
else:
    Vectors = Any

#: Turns the hub correction compares each turn with at most (an evenly spread sample beyond that keeps it cheap).
HUB_REFERENCE = 128


@dataclass(frozen=True, slots=True)
class Turn:
    """Positions in the history of one user message and the reply that followed it (``None`` if it had none)."""

    user: int
    reply: int | None


def turns_of(roles: Sequence[str]) -> list[Turn]:
    """Group a history (by roles) into turns; an assistant message with no user message before it is its own turn."""
    turns: list[Turn] = []
    i = 0
    while i < len(roles):
        if roles[i] == "user":
            reply = i + 1 if i + 1 < len(roles) and roles[i + 1] == "assistant" else None
            turns.append(Turn(i, reply))
            i += 2 if reply is not None else 1
        else:
            turns.append(Turn(i, None))
            i += 1
    return turns


def turn_text(user: str | None, reply: str | None) -> str:
    """The text a turn is embedded as."""
    return "\n".join(x for x in (user, reply) if x)


def rank(
    query: Vectors,
    vectors: Vectors,
    *,
    k: int,
    hub_weight: float = 0.5,
    hub_neighbours: int = 5,
    min_score: float | None = None,
) -> list[tuple[int, float]]:
    """Indices of the ``k`` rows of ``vectors`` most related to ``query``, best first, with their scores.

    ``vectors`` (n, dim) are unit rows; ``query`` (dim,) a unit vector. Rows below ``min_score`` are left out.
    """
    import numpy as np

    n = len(vectors)
    if n == 0 or k <= 0:
        return []
    mean = vectors.mean(axis=0)
    centred = vectors - mean
    centred /= np.maximum(np.linalg.norm(centred, axis=1, keepdims=True), 1e-6)
    q = query - mean
    q = q / max(float(np.linalg.norm(q)), 1e-6)
    scores = centred @ q
    if hub_weight and n > 2:
        reference = centred if n <= HUB_REFERENCE else centred[np.linspace(0, n - 1, HUB_REFERENCE).astype(int)]
        sims = centred @ reference.T
        if n <= HUB_REFERENCE:
            np.fill_diagonal(sims, -1.0)  # a turn is not its own neighbour
        m = min(hub_neighbours, sims.shape[1] - 1)
        if m > 0:
            hub = np.partition(sims, -m, axis=1)[:, -m:].mean(axis=1)
            scores = scores - hub_weight * hub
    count = min(k, n)
    top = np.argpartition(-scores, count - 1)[:count]
    top = top[np.argsort(-scores[top], kind="stable")]
    return [(int(i), float(scores[i])) for i in top if min_score is None or scores[i] >= min_score]


def excerpt(messages: Sequence[ChatMessage], *, language: str, max_chars: int = 600) -> str:
    """One recalled turn as quoted text for the prompt, each message cut to ``max_chars``."""
    names = (
        {"user": "사용자", "assistant": "어시스턴트"}
        if language == "ko"
        else {"user": "User", "assistant": "Assistant"}
    )
    lines = []
    for m in messages:
        text = m.content if len(m.content) <= max_chars else m.content[: max_chars - 1].rstrip() + "…"
        lines.append(f"{names.get(m.role, m.role)}: {text}")
    return "\n".join(lines)
