"""The one SQLite connection of a store and the thread it lives on; every domain module runs its work through it."""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T = TypeVar("T")


class SQLiteConnection:
    """``_read`` / ``_write`` run a plain function on the connection's thread: one hop, whatever it does."""

    _db: sqlite3.Connection | None = None
    _executor: ThreadPoolExecutor | None = None

    def _worker(self) -> tuple[sqlite3.Connection, ThreadPoolExecutor]:
        if self._db is None or self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call 'await store.open()' first.")
        return self._db, self._executor

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (reads only) on the connection's thread."""
        db, executor = self._worker()
        return await asyncio.get_running_loop().run_in_executor(executor, work, db)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction on the connection's thread. Shielded: a caller that is cancelled (a
        client that left) neither cuts a transaction in half nor drops one still queued, so what it was storing, e.g.
        a partial reply, is stored."""
        db, executor = self._worker()
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, in_transaction, db, work))


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result
