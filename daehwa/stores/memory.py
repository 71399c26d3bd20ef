"""``memory://``: a whole store in the process's memory, for tests and small single-process deployments.

It is the SQLite store on an in-memory database (SQLite's ``memdb`` VFS), so it keeps the same contract as every
other backend (``tests/test_stores.py`` runs the suite on it) with no file: conversations, accounts, usage, context
memory, and stop signals delivered in place (one process). Everything is lost when the process ends, and nothing is
shared with another process: run one server process on it, never ``--workers`` or several machines.

``memory://`` alone is a fresh database per store; ``memory://<name>`` names one that every store of that name in the
process shares while at least one of them is open (tests reopen a "restarted" store that way).
"""

from __future__ import annotations

import re
import uuid
from typing import TYPE_CHECKING

from ..errors import ConfigError
from .sqlite import SQLiteStore

if TYPE_CHECKING:
    from ..config import Settings

__all__ = ["MemoryStore"]


class MemoryStore(SQLiteStore):
    """The SQLite store on an in-memory database named ``name`` (shared by the stores of that name in the process)."""

    def __init__(self, name: str | None = None) -> None:
        name = name or uuid.uuid4().hex
        if not re.fullmatch(r"[A-Za-z0-9_.-]{1,100}", name):
            raise ConfigError(
                f"memory://{name} is not a memory store name: use letters, digits, '.', '_' and '-' (or memory://)."
            )
        super().__init__(":memory:")
        self.name = name
        self.path = f"file:/daehwa-{name}?vfs=memdb"
        self.uri = True

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> MemoryStore:
        return cls(url.partition("://")[2].strip("/") or None)

    def __repr__(self) -> str:
        return f"MemoryStore({self.name!r})"
