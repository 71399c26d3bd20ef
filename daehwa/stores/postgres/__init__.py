"""The PostgreSQL store (asyncpg, a connection pool): the SQLite schema with native types and JSONB metadata.

Each interface of ``base`` has its module here (``conversations``, ``accounts``, ``usage``); this one adds the
lifecycle. The schema is ``migrations.postgres_migrations``. Tables live in the connection's schema; ``schema=``
puts them in another one (created if missing), which is how the tests isolate themselves.
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import TYPE_CHECKING

import asyncpg

from ...errors import ConfigError
from ...types import MessageStatus
from ..base import Store
from ..breakers import BreakerBoard, PostgresBreakerBoard
from ..common import redact
from ..migrations import apply_postgres
from ..signals import PostgresSignals, StopSignals
from .accounts import PostgresAccounts
from .connection import init_connection
from .context import PostgresContext
from .conversations import PostgresConversations
from .forms import PostgresForms
from .profiles import PostgresProfiles
from .streams import PostgresStreams
from .usage import PostgresUsage

if TYPE_CHECKING:
    from ...config import Settings

__all__ = ["PostgresStore"]

_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

# Streaming replies ($2) whose chunk log's lease lapsed, or that have no log and were created by $3 (NULL: any),
# become $1; their conversations' versions first (rows locked in the order every other write takes them:
# conversation, then messages).
_RECOVER = """
WITH stale AS (
    SELECT m.id, m.conversation_id FROM messages m LEFT JOIN reply_streams s ON s.message_id = m.id
    WHERE m.status = $2 AND (s.message_id IS NULL OR s.lease_until < now())
    AND ($3::timestamptz IS NULL OR m.created_at <= $3 OR s.message_id IS NOT NULL)
), bumped AS (
    UPDATE conversations SET version = version + 1 WHERE id IN (SELECT conversation_id FROM stale) RETURNING id
)
UPDATE messages SET status = $1
WHERE id IN (SELECT id FROM stale) AND status = $2 AND conversation_id IN (SELECT id FROM bumped)
"""


class PostgresStore(
    PostgresConversations,
    PostgresAccounts,
    PostgresUsage,
    PostgresContext,
    PostgresProfiles,
    PostgresForms,
    PostgresStreams,
    Store,
):
    """Conversations, accounts and usage in PostgreSQL (tables in ``schema``, or the connection's default)."""

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(f"PostgreSQL schema name {schema!r} must be a plain identifier (letters, digits, _).")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self._pool = None
        self.applied_migrations: list[str] = []  # what the last open() applied, for tests and logs

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> PostgresStore:
        return cls(url, pool_size=settings.postgres_pool_size if settings else 10)

    def __repr__(self) -> str:
        return f"PostgresStore({redact(self.dsn)!r}, schema={self.schema!r})"

    async def open(self) -> None:
        server_settings = {"search_path": self.schema} if self.schema else None
        try:
            if self.schema:
                conn = await asyncpg.connect(self.dsn)
                try:
                    await conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.schema}"')
                except asyncpg.UniqueViolationError:
                    pass  # IF NOT EXISTS is not atomic: another process created it between check and create
                finally:
                    await conn.close()
            pool = await asyncpg.create_pool(
                self.dsn,
                min_size=1,
                max_size=self.pool_size,
                server_settings=server_settings,
                init=init_connection,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(
                f"Cannot open PostgreSQL at {redact(self.dsn)} ({exc}): start the server, create the database, "
                "or fix DAEHWA_DATABASE_URL."
            ) from None
        try:
            async with pool.acquire() as conn:
                self.applied_migrations = await apply_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def recover_interrupted(self, *, created_before: datetime | None = None) -> None:
        async with self._p().acquire() as conn, conn.transaction():
            # Processes starting at once take turns: each would lock the same conversations in its own order.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.daehwa_recover'))")
            await conn.execute(_RECOVER, MessageStatus.INTERRUPTED.value, MessageStatus.STREAMING.value, created_before)

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        await self._p().fetchval("SELECT 1")

    def stop_signals(self) -> StopSignals:
        return PostgresSignals(self.dsn, self.schema)

    def breaker_board(self) -> BreakerBoard:
        return PostgresBreakerBoard(self._p)
