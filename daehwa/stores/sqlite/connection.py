"""The one SQLite connection of a store and the thread it lives on; every domain module runs its work through it.

A turn's small writes (its opening, its end, a streaming reply's progress) run on the event loop itself when the
connection's thread has nothing queued: a hop to the thread and back cost more CPU than the transaction (two
thread wake-ups and GIL hand-offs, ~0.1-0.2 ms each, against ~0.1 ms for the statements and the commit of a turn;
benchmarks/README.md, "HTTP gateway"). Everything else, and any write while the thread is busy, still goes to the
thread, in order, so no write ever overtakes one submitted before it. An inline write never waits for another
process's lock on the loop: it tries the lock once and, when the file is busy, goes to the thread, which waits
(``busy_timeout``). WAL checkpoints run on the thread too (every ``CHECKPOINT_EVERY`` writes), never inside an
inline commit.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")

#: Writes between two WAL checkpoints (run on the thread; SQLite's own automatic checkpoint is off for the connection,
#: so that no inline commit does one: 100 small transactions are a few hundred pages, SQLite's default is 1,000).
CHECKPOINT_EVERY = 100


class SQLiteConnection:
    """``_read`` / ``_write`` run a plain function on the connection's thread: one hop, whatever it does."""

    _db: sqlite3.Connection | None = None
    _executor: ThreadPoolExecutor | None = None
    busy_timeout_ms: int = 10_000
    _queued = 0  # operations submitted to the thread and not finished yet
    _writes = 0  # writes since the last checkpoint

    def _worker(self) -> tuple[sqlite3.Connection, ThreadPoolExecutor]:
        if self._db is None or self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call 'await store.open()' first.")
        return self._db, self._executor

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (reads only) on the connection's thread."""
        db, executor = self._worker()
        return await self._on_thread(executor, work, db)

    async def _write(self, work: Callable[[sqlite3.Connection], T], *, small: bool = False) -> T:
        """Run ``work`` in one write transaction on the connection's thread. Shielded: a caller that is cancelled (a
        client that left) neither cuts a transaction in half nor drops one still queued, so what it was storing, e.g.
        a partial reply, is stored.

        ``small`` (a few rows by key: a turn's writes) runs it on the event loop when the thread is idle and the file's
        write lock is free at once; an inline write cannot be cancelled half-way either."""
        db, executor = self._worker()
        self._writes += 1
        if self._writes >= CHECKPOINT_EVERY:
            self._writes = 0
            self._on_thread(executor, _checkpoint, db)  # queued first: this write goes after it, on the thread
        elif small and self._queued == 0:
            done, result = _inline_transaction(db, work, self.busy_timeout_ms)
            if done:
                return result  # type: ignore[return-value]
        return await asyncio.shield(self._on_thread(executor, in_transaction, db, work))

    def _on_thread(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        self._queued += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self._queued -= 1
        if not future.cancelled():
            future.exception()  # a checkpoint nobody awaits must not log "exception was never retrieved"


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _inline_transaction(
    db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T], busy_timeout_ms: int
) -> tuple[bool, T | None]:
    """``in_transaction`` if the write lock is free now: (True, result); (False, None) when another connection holds
    it (nothing was done)."""
    db.execute("PRAGMA busy_timeout = 0")
    try:
        db.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        if exc.sqlite_errorcode != sqlite3.SQLITE_BUSY:
            raise
        return False, None
    finally:
        db.execute(f"PRAGMA busy_timeout = {int(busy_timeout_ms)}")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return True, result


def _checkpoint(db: sqlite3.Connection) -> None:
    db.execute("PRAGMA wal_checkpoint(PASSIVE)")
