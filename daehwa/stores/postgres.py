"""The PostgreSQL store (asyncpg, a connection pool): the SQLite schema with native types and JSONB metadata.

The hot-path writes are single statements: ``begin_turn`` bumps the conversation and inserts both messages in one
``WITH ... INSERT`` (``create_conversation_with_turn`` inserts the conversation too), ``finish_turn`` updates the
reply and inserts its usage in one statement, so each is one round trip and atomic without an explicit transaction.
Tables live in the connection's schema; ``schema=`` puts them in another one (created if missing), which is how the
tests isolate themselves.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Awaitable, Callable, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

import asyncpg

from ..errors import ConfigError, Conflict, NotFound
from ..types import Conversation, MessageStatus, Outcome, Role, StoredMessage, UsageRecord, UsageTotal, User
from .base import ApiKeyRecord, SessionRecord, Store, UserRecord
from .common import as_utc, new_id, title_key, unknown_before, utcnow
from .migrations import apply_postgres
from .signals import PostgresSignals, StopSignals

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")

_CONVERSATION_COLUMNS = "id, user_id, title, persona, model, kind, meta, created_at, updated_at"
_MESSAGE_COLUMNS = "seq, id, conversation_id, role, content, status, model, meta, created_at"
_API_KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"
_SCHEMA_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,62}")

_INSERT_MESSAGES = """
WITH conv AS (
    UPDATE conversations SET updated_at = $3 WHERE id = $1 AND user_id = $2 RETURNING id
), new AS (
    SELECT * FROM unnest($4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::text[])
        WITH ORDINALITY AS r (id, role, content, status, model, meta, n)
)
INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at)
SELECT new.id, conv.id, new.role, new.content, new.status, new.model, new.meta::jsonb, $3
FROM conv, new ORDER BY new.n
RETURNING id
"""

# A new conversation and its first messages in one statement; the messages' foreign key is checked at its end.
# $1-$8 the conversation (id, user_id, title, title_key, persona, model, kind, meta), $9 created_at, then the
# messages as arrays like _INSERT_MESSAGES's $4-$9.
_INSERT_CONVERSATION_WITH_MESSAGES = """
WITH conv AS (
    INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, updated_at)
    VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
    RETURNING id
), new AS (
    SELECT * FROM unnest($10::text[], $11::text[], $12::text[], $13::text[], $14::text[], $15::text[])
        WITH ORDINALITY AS r (id, role, content, status, model, meta, n)
)
INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at)
SELECT new.id, conv.id, new.role, new.content, new.status, new.model, new.meta::jsonb, $9
FROM conv, new ORDER BY new.n
RETURNING id
"""

# $1 message id, $2 user id, $3 content, $4 status, $5 model, $6 meta to merge (jsonb, shallow like dict.update)
_UPDATE_MESSAGE = """
UPDATE messages m SET
    content = COALESCE($3, m.content),
    status = COALESCE($4, m.status),
    model = COALESCE($5, m.model),
    meta = m.meta || $6::jsonb
FROM conversations c
WHERE m.id = $1 AND c.id = m.conversation_id AND c.user_id = $2
RETURNING m.id, m.conversation_id, m.role, m.content, m.status, m.model, m.meta, m.created_at
"""

_USAGE_COLUMNS = (
    "user_id, model, prompt_tokens, completion_tokens, outcome, ttft_ms, total_ms, cost, source, conversation_id, "
    "message_id, request_id, created_at"
)


def _usage_values(first: int) -> str:
    return ", ".join(f"${i}" for i in range(first, first + 13))


def _usage_args(r: UsageRecord) -> list[Any]:
    return [
        r.user_id,
        r.model,
        r.usage.prompt_tokens,
        r.usage.completion_tokens,
        Outcome(r.outcome).value,
        r.ttft_ms,
        r.total_ms,
        r.cost,
        r.source,
        r.conversation_id,
        r.message_id,
        r.request_id,
        as_utc(r.created_at) if r.created_at else utcnow(),
    ]


class PostgresStore(Store):
    """Conversations, accounts and usage in PostgreSQL (tables in ``schema``, or the connection's default)."""

    def __init__(self, dsn: str, *, schema: str | None = None, pool_size: int = 10) -> None:
        if schema is not None and not _SCHEMA_NAME.fullmatch(schema):
            raise ConfigError(f"PostgreSQL schema name {schema!r} must be a plain identifier (letters, digits, _).")
        self.dsn = dsn
        self.schema = schema
        self.pool_size = pool_size
        self._pool: asyncpg.Pool | None = None
        self.applied_migrations: list[str] = []  # what the last open() applied, for tests and logs

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> PostgresStore:
        return cls(url, pool_size=settings.postgres_pool_size if settings else 10)

    def __repr__(self) -> str:
        return f"PostgresStore({_redact(self.dsn)!r}, schema={self.schema!r})"

    # -- lifecycle ---------------------------------------------------------------------------------------------
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
                init=_init_connection,
            )
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            raise ConfigError(
                f"Cannot open PostgreSQL at {_redact(self.dsn)} ({exc}): start the server, create the database, "
                "or fix DAEHWA_DATABASE_URL."
            ) from None
        try:
            async with pool.acquire() as conn:
                self.applied_migrations = await apply_postgres(conn)
        except BaseException:
            await pool.close()
            raise
        self._pool = pool

    async def recover_interrupted(self) -> None:
        await self._p().execute(
            "UPDATE messages SET status = $1 WHERE status = $2",
            MessageStatus.INTERRUPTED.value,
            MessageStatus.STREAMING.value,
        )

    async def close(self) -> None:
        if self._pool is not None:
            pool, self._pool = self._pool, None
            await pool.close()

    async def ping(self) -> None:
        await self._p().fetchval("SELECT 1")

    def stop_signals(self) -> StopSignals:
        return PostgresSignals(self.dsn, self.schema)

    def _p(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("PostgresStore is not open: call 'await store.open()' first.")
        return self._pool

    async def _write(self, work: Callable[[], Awaitable[T]]) -> T:
        """Shield a write from the caller's cancellation, so a client that leaves does not lose what was stored."""
        return await asyncio.shield(work())

    # -- conversations -----------------------------------------------------------------------------------------
    async def create_conversation(
        self,
        user_id: str,
        *,
        title: str = "",
        persona: str | None = None,
        model: str | None = None,
        kind: str = "chat",
        meta: Mapping[str, Any] | None = None,
    ) -> Conversation:
        now = utcnow()
        conv = Conversation(
            id=new_id(),
            user_id=user_id,
            title=title,
            persona=persona,
            model=model,
            created_at=now,
            updated_at=now,
            kind=kind,
            meta=dict(meta or {}),
        )
        await self._write(
            lambda: self._p().execute(
                "INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, "
                "updated_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)",
                conv.id,
                user_id,
                title,
                title_key(title),
                persona,
                model,
                kind,
                dict(conv.meta),
                now,
            )
        )
        return conv

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        row = await self._p().fetchrow(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = $1 AND user_id = $2",
            conversation_id,
            user_id,
        )
        return _conversation(row) if row else None

    async def list_conversations(
        self,
        user_id: str,
        *,
        kind: str | None = "chat",
        query: str | None = None,
        limit: int = 50,
        before: datetime | None = None,
    ) -> list[Conversation]:
        rows = await self._p().fetch(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE user_id = $1 "
            "AND ($2::text IS NULL OR kind = $2) "
            "AND ($3::text IS NULL OR strpos(title_key, $3) > 0) "
            "AND ($4::timestamptz IS NULL OR updated_at < $4) "
            "ORDER BY updated_at DESC, id DESC LIMIT $5",
            user_id,
            kind,
            title_key(query) if query else None,
            as_utc(before) if before is not None else None,
            max(limit, 0),
        )
        return [_conversation(row) for row in rows]

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        status = await self._write(
            lambda: self._p().execute(
                "UPDATE conversations SET title = $3, title_key = $4, updated_at = $5 WHERE id = $1 AND user_id = $2",
                conversation_id,
                user_id,
                title,
                title_key(title),
                utcnow(),
            )
        )
        return _count(status) > 0

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        status = await self._write(
            lambda: self._p().execute(
                "UPDATE conversations SET meta = meta || $3::jsonb WHERE id = $1 AND user_id = $2",
                conversation_id,
                user_id,
                dict(meta),
            )
        )
        return _count(status) > 0

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        status = await self._write(
            lambda: self._p().execute(
                "DELETE FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
            )
        )
        return _count(status) > 0

    # -- messages ----------------------------------------------------------------------------------------------
    async def _insert(self, user_id: str, conversation_id: str, messages: list[StoredMessage]) -> None:
        created = await self._write(
            lambda: self._p().fetch(
                _INSERT_MESSAGES, conversation_id, user_id, messages[0].created_at, *_message_arrays(messages)
            )
        )
        if not created:
            raise NotFound(f"Conversation {conversation_id!r} does not exist: list your conversations to find its id.")

    async def append_message(
        self,
        user_id: str,
        conversation_id: str,
        *,
        role: Role,
        content: str,
        status: MessageStatus = MessageStatus.COMPLETE,
        model: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StoredMessage:
        message = _new_message(conversation_id, role, content, status, model, meta, utcnow())
        await self._insert(user_id, conversation_id, [message])
        return message

    async def begin_turn(
        self,
        user_id: str,
        conversation_id: str,
        *,
        user_content: str | None,
        user_status: MessageStatus = MessageStatus.COMPLETE,
        user_meta: Mapping[str, Any] | None = None,
        reply_model: str | None,
    ) -> tuple[StoredMessage | None, StoredMessage]:
        now = utcnow()
        user_msg = None
        if user_content is not None:
            user_msg = _new_message(conversation_id, "user", user_content, user_status, None, user_meta, now)
        reply = _new_message(conversation_id, "assistant", "", MessageStatus.STREAMING, reply_model, None, now)
        await self._insert(user_id, conversation_id, [m for m in (user_msg, reply) if m is not None])
        return user_msg, reply

    async def create_conversation_with_turn(
        self,
        user_id: str,
        *,
        title: str = "",
        persona: str | None = None,
        model: str | None = None,
        kind: str = "chat",
        meta: Mapping[str, Any] | None = None,
        user_content: str | None,
        user_status: MessageStatus = MessageStatus.COMPLETE,
        user_meta: Mapping[str, Any] | None = None,
        reply_model: str | None,
    ) -> tuple[Conversation, StoredMessage | None, StoredMessage]:
        now = utcnow()
        conv = Conversation(
            id=new_id(),
            user_id=user_id,
            title=title,
            persona=persona,
            model=model,
            created_at=now,
            updated_at=now,
            kind=kind,
            meta=dict(meta or {}),
        )
        user_msg = None
        if user_content is not None:
            user_msg = _new_message(conv.id, "user", user_content, user_status, None, user_meta, now)
        reply = _new_message(conv.id, "assistant", "", MessageStatus.STREAMING, reply_model, None, now)
        messages = [m for m in (user_msg, reply) if m is not None]
        await self._write(
            lambda: self._p().fetch(
                _INSERT_CONVERSATION_WITH_MESSAGES,
                conv.id,
                user_id,
                title,
                title_key(title),
                persona,
                model,
                kind,
                dict(conv.meta),
                now,
                *_message_arrays(messages),
            )
        )
        return conv, user_msg, reply

    async def update_message(
        self,
        user_id: str,
        message_id: str,
        *,
        content: str | None = None,
        status: MessageStatus | None = None,
        model: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> StoredMessage | None:
        row = await self._write(
            lambda: self._p().fetchrow(
                _UPDATE_MESSAGE,
                message_id,
                user_id,
                content,
                MessageStatus(status).value if status is not None else None,
                model,
                dict(meta or {}),
            )
        )
        return _message(row) if row else None

    async def finish_turn(
        self,
        user_id: str,
        message_id: str,
        *,
        content: str,
        status: MessageStatus,
        model: str | None,
        meta: Mapping[str, Any] | None,
        usage: UsageRecord | None,
    ) -> StoredMessage | None:
        if usage is None:
            return await self.update_message(
                user_id, message_id, content=content, status=status, model=model, meta=meta
            )
        # One statement: the reply's final state and its usage are stored together (data-modifying CTEs always run,
        # so the usage row is written even when the reply is gone).
        sql = (
            f"WITH updated AS ({_UPDATE_MESSAGE}), "
            f"accounted AS (INSERT INTO usage ({_USAGE_COLUMNS}) VALUES ({_usage_values(7)})) "
            "SELECT * FROM updated"
        )
        row = await self._write(
            lambda: self._p().fetchrow(
                sql,
                message_id,
                user_id,
                content,
                MessageStatus(status).value,
                model,
                dict(meta or {}),
                *_usage_args(usage),
            )
        )
        return _message(row) if row else None

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        status = await self._write(
            lambda: self._p().execute(
                """DELETE FROM messages WHERE conversation_id = $1 AND seq >= (
                       SELECT m.seq FROM messages m JOIN conversations c ON c.id = m.conversation_id
                       WHERE m.id = $2 AND m.conversation_id = $1 AND c.user_id = $3)""",
                conversation_id,
                message_id,
                user_id,
            )
        )
        return _count(status)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        count = None if limit is None else max(limit, 0)  # LIMIT NULL is no limit
        async with self._p().acquire() as conn, conn.transaction(readonly=True, isolation="repeatable_read"):
            if before is None:
                owned = await conn.fetchval(
                    "SELECT 1 FROM conversations WHERE id = $1 AND user_id = $2", conversation_id, user_id
                )
                if owned is None:
                    return None
                rows = await conn.fetch(
                    f"SELECT * FROM (SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 "
                    "ORDER BY seq DESC LIMIT $2) last ORDER BY seq",
                    conversation_id,
                    count,
                )
                return [_message(row) for row in rows]
            # One round trip for the ownership check and the cursor: no row means not the user's conversation,
            # a NULL bound means ``before`` is not one of its messages.
            found = await conn.fetchrow(
                "SELECT (SELECT seq FROM messages WHERE id = $3 AND conversation_id = $1) AS bound "
                "FROM conversations WHERE id = $1 AND user_id = $2",
                conversation_id,
                user_id,
                before,
            )
            if found is None:
                return None
            if found["bound"] is None:
                raise unknown_before(before)
            # Separate statements (not "$3 IS NULL OR seq < $3"): a cached generic plan keeps this an index range.
            rows = await conn.fetch(
                f"SELECT * FROM (SELECT {_MESSAGE_COLUMNS} FROM messages WHERE conversation_id = $1 AND seq < $3 "
                "ORDER BY seq DESC LIMIT $2) page ORDER BY seq",
                conversation_id,
                count,
                found["bound"],
            )
        return [_message(row) for row in rows]

    # -- accounts ----------------------------------------------------------------------------------------------
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        user = User(id=new_id(), name=name, is_admin=is_admin, anonymous=anonymous, created_at=utcnow())
        try:
            await self._write(
                lambda: self._p().execute(
                    "INSERT INTO users (id, name, password_hash, is_admin, anonymous, created_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    user.id,
                    name,
                    password_hash,
                    is_admin,
                    anonymous,
                    user.created_at,
                )
            )
        except asyncpg.UniqueViolationError:
            raise Conflict(f"The user name {name!r} is taken: choose another name.") from None
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._p().fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        return _user_record(row) if row else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        row = await self._p().fetchrow("SELECT * FROM users WHERE name = $1", name)
        return _user_record(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._p().fetch("SELECT * FROM users ORDER BY created_at, id")
        return [_user_record(row).user for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        status = await self._write(
            lambda: self._p().execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
        )
        return _count(status) > 0

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())
        try:
            await self._write(
                lambda: self._p().execute(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) "
                    "VALUES ($1, $2, $3, $4, $5, $6)",
                    record.id,
                    user_id,
                    name,
                    prefix,
                    key_hash,
                    record.created_at,
                )
            )
        except asyncpg.UniqueViolationError:
            raise Conflict("An API key with this hash exists already: generate a new key.") from None
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._write(
            lambda: self._p().fetchrow(
                f"UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1 RETURNING {_API_KEY_COLUMNS}",
                key_hash,
                utcnow(),
            )
        )
        return _api_key(row) if row else None

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        rows = await self._p().fetch(
            f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [_api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        status = await self._write(
            lambda: self._p().execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) "
                "WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)",
                key_id,
                user_id,
                utcnow(),
            )
        )
        return _count(status) > 0

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        async def work() -> None:
            async with self._p().acquire() as conn, conn.transaction():
                await conn.execute("DELETE FROM sessions WHERE expires_at <= now()")  # sweep as we go
                await conn.execute(
                    "INSERT INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES ($1, $2, $3, $4) "
                    "ON CONFLICT (token_hash) DO UPDATE SET user_id = EXCLUDED.user_id, "
                    "csrf_token = EXCLUDED.csrf_token, expires_at = EXCLUDED.expires_at",
                    token_hash,
                    record.user_id,
                    record.csrf_token,
                    as_utc(record.expires_at),
                )

        await self._write(work)

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        row = await self._p().fetchrow(
            "SELECT user_id, csrf_token, expires_at FROM sessions WHERE token_hash = $1 AND expires_at > $2",
            token_hash,
            utcnow(),
        )
        if row is None:
            return None
        return SessionRecord(user_id=row["user_id"], csrf_token=row["csrf_token"], expires_at=row["expires_at"])

    async def delete_session(self, token_hash: str) -> None:
        await self._write(lambda: self._p().execute("DELETE FROM sessions WHERE token_hash = $1", token_hash))

    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        ended = await self._write(
            lambda: self._p().fetchval(
                "WITH gone AS (DELETE FROM sessions WHERE user_id = $1 AND token_hash IS DISTINCT FROM $2 "
                "RETURNING expires_at) SELECT count(*) FROM gone WHERE expires_at > $3",
                user_id,
                keep,
                utcnow(),
            )
        )
        return int(ended)

    # -- usage -------------------------------------------------------------------------------------------------
    async def record_usage(self, record: UsageRecord) -> None:
        await self._write(
            lambda: self._p().execute(
                f"INSERT INTO usage ({_USAGE_COLUMNS}) VALUES ({_usage_values(1)})", *_usage_args(record)
            )
        )

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        rows = await self._p().fetch(
            "SELECT u.user_id, users.name AS user_name, u.model, count(*) AS turns, "
            "sum(u.prompt_tokens)::bigint AS prompt_tokens, sum(u.completion_tokens)::bigint AS completion_tokens, "
            "coalesce(sum(u.cost), 0)::float8 AS cost FROM usage u LEFT JOIN users ON users.id = u.user_id "
            "WHERE ($1::text IS NULL OR u.user_id = $1) AND ($2::timestamptz IS NULL OR u.created_at >= $2) "
            "GROUP BY u.user_id, users.name, u.model ORDER BY u.user_id, u.model",
            user_id,
            as_utc(since) if since is not None else None,
        )
        return [
            UsageTotal(
                user_id=row["user_id"],
                user_name=row["user_name"],
                model=row["model"],
                turns=row["turns"],
                prompt_tokens=row["prompt_tokens"],
                completion_tokens=row["completion_tokens"],
                cost=float(row["cost"]),
            )
            for row in rows
        ]

    async def tokens_used_since(self, user_id: str, since: datetime) -> int:
        total = await self._p().fetchval(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0)::bigint FROM usage "
            "WHERE user_id = $1 AND created_at >= $2",
            user_id,
            as_utc(since),
        )
        return int(total)


async def _init_connection(conn: asyncpg.Connection) -> None:
    # JSONB in and out as Python dicts.
    await conn.set_type_codec(
        "jsonb",
        encoder=lambda value: json.dumps(value, ensure_ascii=False),
        decoder=json.loads,
        schema="pg_catalog",
    )


def _redact(dsn: str) -> str:
    scheme, sep, rest = dsn.partition("://")
    if "@" not in rest:
        return dsn
    return f"{scheme}{sep}***@{rest.rsplit('@', 1)[1]}"


def _count(status: str) -> int:
    """Rows touched, from a command status such as ``UPDATE 1`` or ``DELETE 3``."""
    return int(status.rsplit(" ", 1)[-1])


def _message_arrays(messages: list[StoredMessage]) -> list[list[Any]]:
    """The columns of ``messages`` as arrays, for the ``unnest`` of the insert statements."""
    return [
        [m.id for m in messages],
        [m.role for m in messages],
        [m.content for m in messages],
        [m.status.value for m in messages],
        [m.model for m in messages],
        [json.dumps(dict(m.meta), ensure_ascii=False) for m in messages],
    ]


def _new_message(
    conversation_id: str,
    role: Role,
    content: str,
    status: MessageStatus,
    model: str | None,
    meta: Mapping[str, Any] | None,
    now: datetime,
) -> StoredMessage:
    return StoredMessage(
        id=new_id(),
        conversation_id=conversation_id,
        role=role,
        content=content,
        status=MessageStatus(status),
        created_at=now,
        model=model,
        meta=dict(meta or {}),
    )


def _conversation(row: asyncpg.Record) -> Conversation:
    return Conversation(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        persona=row["persona"],
        model=row["model"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
        kind=row["kind"],
        meta=row["meta"],
    )


def _message(row: asyncpg.Record) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        status=MessageStatus(row["status"]),
        created_at=row["created_at"],
        model=row["model"],
        meta=row["meta"],
    )


def _user_record(row: asyncpg.Record) -> UserRecord:
    user = User(
        id=row["id"],
        name=row["name"],
        is_admin=row["is_admin"],
        anonymous=row["anonymous"],
        created_at=row["created_at"],
    )
    return UserRecord(user=user, password_hash=row["password_hash"])


def _api_key(row: asyncpg.Record) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=row["created_at"],
        last_used_at=row["last_used_at"],
        revoked_at=row["revoked_at"],
    )
