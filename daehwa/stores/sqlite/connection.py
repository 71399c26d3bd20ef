"""The one SQLite connection of a store and the thread it lives on; every domain module runs its work through it.

A turn's small writes (its opening, its end, a streaming reply's progress) run on the event loop itself when the
connection's thread has nothing queued: a hop to the thread and back cost more CPU than the transaction (two
thread wake-ups and GIL hand-offs, ~0.1-0.2 ms each, against ~0.1 ms for the statements and the commit of a turn;
benchmarks/README.md, "HTTP gateway"). Everything else, and any write while the thread is busy, still goes to the
thread, in order, so no write ever overtakes one submitted before it. An inline write never waits for another
process's lock on the loop: it tries the lock once and, when the file is busy, goes to the thread, which waits
(``busy_timeout``). WAL checkpoints (every ``CHECKPOINT_EVERY`` writes) run on a connection and thread of their own,
never inside an inline commit, and no write waits behind their fsyncs.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

T = TypeVar("T")
log = logging.getLogger(__name__)

#: Writes between two passive WAL checkpoints (SQLite's own automatic checkpoint is off for the store's connection, so
#: that no inline commit does one: 300 small transactions are about SQLite's default of 1,000 pages).
CHECKPOINT_EVERY = 300


class SQLiteConnection:
    """``_read`` / ``_write`` run a plain function on the connection's thread: one hop, whatever it does."""

    _db: sqlite3.Connection | None = None
    _executor: ThreadPoolExecutor | None = None
    busy_timeout_ms: int = 10_000
    _queued = 0  # operations submitted to the thread and not finished yet
    _writes = 0  # writes since the last checkpoint
    _checkpointing: asyncio.Future[None] | None = None
    path: str = ""
    uri: bool = False

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
            self._checkpoint_soon()
        if small and self._queued == 0:
            done, result = _inline_transaction(db, work, self.busy_timeout_ms)
            if done:
                return result  # type: ignore[return-value]
        return await asyncio.shield(self._on_thread(executor, in_transaction, db, work))

    def _checkpoint_soon(self) -> None:
        """A passive WAL checkpoint on a connection of its own, in a thread of its own: the store's writes go on
        meanwhile (a checkpoint never blocks writers), none waits behind its fsyncs."""
        if self._checkpointing is not None and not self._checkpointing.done():
            return
        self._writes = 0
        self._checkpointing = asyncio.get_running_loop().run_in_executor(None, _checkpoint, self.path, self.uri)
        self._checkpointing.add_done_callback(_log_failure)

    def _on_thread(self, executor: ThreadPoolExecutor, fn: Callable[..., T], *args: Any) -> asyncio.Future[T]:
        future = asyncio.get_running_loop().run_in_executor(executor, fn, *args)
        self._queued += 1
        future.add_done_callback(self._finished)
        return future

    def _finished(self, future: asyncio.Future[Any]) -> None:
        self._queued -= 1


def in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    return _committed(db, work)


def _committed(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    """Run ``work`` in the transaction just begun: COMMIT after it, ROLLBACK if it raises."""
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
    return True, _committed(db, work)


def _checkpoint(path: str, uri: bool) -> None:
    db = sqlite3.connect(path, isolation_level=None, uri=uri)
    try:
        db.execute("PRAGMA busy_timeout = 1000")
        db.execute("PRAGMA wal_checkpoint(PASSIVE)")
    finally:
        db.close()


def _log_failure(future: asyncio.Future[None]) -> None:
    if not future.cancelled() and future.exception() is not None:
        log.warning("SQLite WAL checkpoint failed (the next one retries)", exc_info=future.exception())
