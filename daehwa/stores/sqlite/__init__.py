"""The default store: one SQLite file, driven from one worker thread.

One connection per store, in WAL mode so readers never block the writer and several processes can share the file.
The connection lives on a dedicated thread (a one-worker executor) and every store method is one plain function
run there: all its statements and its commit cost a single hop between the event loop and the thread, instead of
one hop per statement. The single worker also serialises the store's operations, so the coroutines of one event
loop never interleave inside a transaction. Every write is a ``BEGIN IMMEDIATE`` transaction: taking the write lock
up front means a busy file makes us wait (``busy_timeout``) instead of failing with "database is locked" halfway
through.

Each interface of ``base`` has its module here (``conversations``, ``accounts``, ``usage``); this one adds the
lifecycle. The schema is ``migrations.sqlite_migrations``.
"""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

from ...errors import ConfigError
from ..base import Store
from ..migrations import apply_sqlite
from .accounts import SQLiteAccounts
from .context import SQLiteContext
from .conversations import SQLiteConversations, repair_streaming
from .forms import SQLiteForms
from .profiles import SQLiteProfiles
from .streams import SQLiteStreams
from .usage import SQLiteUsage

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["SQLiteStore", "path_from_url"]


def path_from_url(url: str) -> str:
    """``sqlite:///rel.db`` -> ``rel.db``; ``sqlite:////abs/x.db`` -> ``/abs/x.db``; ``sqlite:///:memory:`` too."""
    prefix = "sqlite:///"
    path = url[len(prefix) :].split("?", 1)[0] if url.startswith(prefix) else ""
    if not path:
        raise ConfigError(
            f"DAEHWA_DATABASE_URL {url!r} names no SQLite file: use sqlite:///relative/path.db or "
            "sqlite:////absolute/path.db."
        )
    return path


class SQLiteStore(
    SQLiteConversations, SQLiteAccounts, SQLiteUsage, SQLiteContext, SQLiteProfiles, SQLiteForms, SQLiteStreams, Store
):
    """Conversations, accounts and usage in one SQLite file (created, with its directory, on ``open()``)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path if path == ":memory:" else str(Path(path).expanduser())
        self.uri = False  # self.path is a file: URI (the memory store's)
        self.busy_timeout_ms = busy_timeout_ms
        self._db = None
        self._executor = None
        self.applied_migrations: list[str] = []  # what the last open() applied, for tests and logs

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> SQLiteStore:
        return cls(path_from_url(url))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    async def open(self) -> None:
        executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="daehwa-sqlite")
        try:
            self._db, self.applied_migrations = await asyncio.get_running_loop().run_in_executor(
                executor, self._connect
            )
        except BaseException:
            executor.shutdown(wait=False)
            raise
        self._executor = executor

    def _connect(self) -> tuple[sqlite3.Connection, list[str]]:
        """On the worker thread, which owns the connection from now on."""
        if self.path != ":memory:" and not self.uri:
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 must not open transactions behind our back.
        # check_same_thread off: a turn's small writes run on the event loop while the thread is idle (connection.py).
        db = sqlite3.connect(self.path, isolation_level=None, uri=self.uri, check_same_thread=False)
        db.row_factory = sqlite3.Row
        try:
            # busy_timeout first: switching to WAL itself waits for the lock when another process is writing.
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; safe with WAL
            db.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints run on this thread, never in an inline commit
            db.execute("PRAGMA foreign_keys = ON")
            applied = apply_sqlite(db)
        except BaseException:
            db.close()
            raise
        return db, applied

    async def close(self) -> None:
        if self._db is not None and self._executor is not None:
            db, executor = self._db, self._executor
            self._db = self._executor = None
            # Queued behind every operation already submitted (one worker, first in first out), so those finish.
            await asyncio.get_running_loop().run_in_executor(executor, db.close)
            executor.shutdown(wait=True)

    async def ping(self) -> None:
        await self._read(lambda db: db.execute("SELECT 1").fetchone())

    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        await self._write(lambda db: repair_streaming(db, created_before))
