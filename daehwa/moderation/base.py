"""The moderation interface the turn pipeline uses: check a whole text, or guard a stream piece by piece."""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Literal

Action = Literal["block", "mask", "flag", "off"]


@dataclass(frozen=True, slots=True)
class Match:
    """A banned word found in a text; ``start``/``end`` are character offsets into the *original* text."""

    word: str
    category: str
    start: int
    end: int


@dataclass(frozen=True, slots=True)
class ModerationResult:
    text: str
    matches: tuple[Match, ...] = ()
    masked: str = ""

    @property
    def hit(self) -> bool:
        return bool(self.matches)


@dataclass(frozen=True, slots=True)
class ModerationPolicy:
    """What to do on a match, separately for the user's input and the model's output."""

    input: Action = "block"
    output: Action = "mask"

    def override(self, *, input: Action | None = None, output: Action | None = None) -> ModerationPolicy:
        """This policy with the given actions replaced; ``None`` keeps the current one (global, then persona)."""
        return ModerationPolicy(input=input or self.input, output=output or self.output)


class StreamGuard(abc.ABC):
    """Checks a streamed reply. Text is released only once no banned word can still straddle it."""

    matches: list[Match]

    @abc.abstractmethod
    def feed(self, text: str) -> str:
        """Take the next chunk; return the text that is safe to show now (masked if the action is mask)."""

    @abc.abstractmethod
    def finish(self) -> str:
        """The stream ended: return whatever was held back (checked)."""

    @property
    @abc.abstractmethod
    def blocked(self) -> bool:
        """True once a match was found and the action is block: the caller stops the stream."""


class Moderator(abc.ABC):
    """A text checker; ``WordFilter`` is the built-in one."""

    @abc.abstractmethod
    def check(self, text: str) -> ModerationResult: ...

    @abc.abstractmethod
    def guard(self, action: Action) -> StreamGuard: ...

    def reload(self) -> dict[str, object]:
        """Re-read the word lists (blocking: run it in a worker thread); returns what was loaded, JSON-ready."""
        return {}


class NullModerator(Moderator):
    """Checks nothing (moderation turned off)."""

    def check(self, text: str) -> ModerationResult:
        return ModerationResult(text=text, masked=text)

    def guard(self, action: Action) -> StreamGuard:
        return _PassThrough()


class _PassThrough(StreamGuard):
    def __init__(self) -> None:
        self.matches = []

    def feed(self, text: str) -> str:
        return text

    def finish(self) -> str:
        return ""

    @property
    def blocked(self) -> bool:
        return False


__all__ = ["Action", "Match", "ModerationPolicy", "ModerationResult", "Moderator", "NullModerator", "StreamGuard"]
