"""Small helpers every store backend shares: ids, UTC time, and turning rows into the project's types."""

from __future__ import annotations

import secrets
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from ..errors import InvalidRequest


def new_id() -> str:
    """A sortable, unguessable id: 12 hex digits of milliseconds since the epoch, then 64 random bits.

    Ids created later sort later (to the millisecond), so listings and logs read in time order, and the random part
    makes them impossible to guess or enumerate.
    """
    return f"{time.time_ns() // 1_000_000:012x}{secrets.token_hex(8)}"


def utcnow() -> datetime:
    return datetime.now(UTC)


def as_utc(value: datetime) -> datetime:
    """``value`` in UTC; a naive datetime is taken to be UTC already (callers pass ``utcnow()``-based values)."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def iso(value: datetime) -> str:
    """Fixed-width ISO text in UTC, so that string order equals time order (SQLite and Redis compare these)."""
    return as_utc(value).isoformat(timespec="microseconds")


def from_iso(text: str) -> datetime:
    return as_utc(datetime.fromisoformat(text))


def micros(value: datetime) -> int:
    """Microseconds since the epoch: exact as a Redis sorted-set score (doubles hold integers up to 2**53)."""
    # Integer arithmetic on the timedelta: float timestamps would round away the last microseconds.
    delta = as_utc(value) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def title_key(title: str) -> str:
    """The form titles are searched in: Unicode case folding, so 'ÄBC' finds 'äbc' and Korean matches as is."""
    return title.casefold()


def unknown_before(message_id: str) -> InvalidRequest:
    """What ``list_messages`` raises for a ``before`` that is not a message of the conversation."""
    return InvalidRequest(
        f"Message {message_id!r} is not in this conversation: set 'before' to the id of one of its messages "
        "(the first message of the page you have), or leave it out for the latest messages.",
        param="before",
    )


def merged(old: Mapping[str, Any] | None, new: Mapping[str, Any] | None) -> dict[str, Any]:
    """``old`` with the keys of ``new`` laid over it (a shallow merge, as ``update_*(meta=...)`` promise)."""
    out = dict(old or {})
    if new:
        out.update(new)
    return out
