"""The default store: one SQLite file through aiosqlite.

One connection per store, in WAL mode so readers never block the writer and several processes can share the file.
Every write is a ``BEGIN IMMEDIATE`` transaction: taking the write lock up front means a busy file makes us wait
(``busy_timeout``) instead of failing with "database is locked" halfway through. Writes of one store are serialised
by an asyncio lock, because the coroutines of one event loop share the single connection and its transaction.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import aiosqlite

from ..errors import ConfigError, Conflict, NotFound
from ..types import Conversation, MessageStatus, Outcome, Role, StoredMessage, UsageRecord, UsageTotal, User
from .base import ApiKeyRecord, SessionRecord, Store, UserRecord
from .common import from_iso, iso, merged, new_id, title_key, utcnow
from .migrations import apply_sqlite

if TYPE_CHECKING:
    from ..config import Settings

T = TypeVar("T")

_CONVERSATION_COLUMNS = "id, user_id, title, persona, model, kind, meta, created_at, updated_at"
_MESSAGE_COLUMNS = "m.id, m.conversation_id, m.role, m.content, m.status, m.model, m.meta, m.created_at"
_API_KEY_COLUMNS = "id, user_id, name, prefix, created_at, last_used_at, revoked_at"


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


class SQLiteStore(Store):
    """Conversations, accounts and usage in one SQLite file (created, with its directory, on ``open()``)."""

    def __init__(self, path: str | Path, *, busy_timeout_ms: int = 10_000) -> None:
        self.path = path if path == ":memory:" else str(Path(path).expanduser())
        self.busy_timeout_ms = busy_timeout_ms
        self._db: aiosqlite.Connection | None = None
        self._write_lock = asyncio.Lock()
        self.applied_migrations: list[str] = []  # what the last open() applied, for tests and logs

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> SQLiteStore:
        return cls(path_from_url(url))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------------------------
    async def open(self) -> None:
        if self.path != ":memory:":
            await asyncio.to_thread(_make_parent_dir, self.path)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 must not open transactions behind our back.
        db = await aiosqlite.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            # busy_timeout first: switching to WAL itself waits for the lock when another process is writing.
            await db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            await db.execute("PRAGMA journal_mode = WAL")
            await db.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; safe with WAL
            await db.execute("PRAGMA foreign_keys = ON")
            self.applied_migrations = await apply_sqlite(db)
            self._db = db
            await self._transaction(self._repair_streaming)
        except BaseException:
            self._db = None
            await db.close()
            raise

    async def _repair_streaming(self, db: aiosqlite.Connection) -> None:
        await db.execute(
            "UPDATE messages SET status = ? WHERE status = ?", (MessageStatus.INTERRUPTED, MessageStatus.STREAMING)
        )

    async def close(self) -> None:
        if self._db is not None:
            db, self._db = self._db, None
            await db.close()

    async def ping(self) -> None:
        await self._fetchone("SELECT 1")

    def _conn(self) -> aiosqlite.Connection:
        if self._db is None:
            raise RuntimeError("SQLiteStore is not open: call 'await store.open()' first.")
        return self._db

    async def _transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        """Run ``work`` in one write transaction. Shielded: a caller that is cancelled (a client that left) does not
        cut a transaction in half, and what it was storing, e.g. a partial reply, is stored."""
        return await asyncio.shield(self._run_transaction(work))

    async def _run_transaction(self, work: Callable[[aiosqlite.Connection], Awaitable[T]]) -> T:
        db = self._conn()
        async with self._write_lock:
            await db.execute("BEGIN IMMEDIATE")
            try:
                result = await work(db)
            except BaseException:
                await db.execute("ROLLBACK")
                raise
            await db.execute("COMMIT")
            return result

    async def _fetchone(self, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
        return await _fetchone(self._conn(), sql, params)

    async def _fetchall(self, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
        return await _fetchall(self._conn(), sql, params)

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

        async def work(db: aiosqlite.Connection) -> None:
            await db.execute(
                "INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, "
                "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (conv.id, user_id, title, title_key(title), persona, model, kind, _json(conv.meta), iso(now), iso(now)),
            )

        await self._transaction(work)
        return conv

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        row = await self._fetchone(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?",
            (conversation_id, user_id),
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
        where, params = ["user_id = ?"], [user_id]
        if kind is not None:
            where.append("kind = ?")
            params.append(kind)
        if query:
            where.append("instr(title_key, ?) > 0")  # instr, not LIKE: '%' and '_' in a query are plain text
            params.append(title_key(query))
        if before is not None:
            where.append("updated_at < ?")
            params.append(iso(before))
        rows = await self._fetchall(
            f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
            "ORDER BY updated_at DESC, id DESC LIMIT ?",
            (*params, max(limit, 0)),
        )
        return [_conversation(row) for row in rows]

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            cursor = await db.execute(
                "UPDATE conversations SET title = ?, title_key = ?, updated_at = ? WHERE id = ? AND user_id = ?",
                (title, title_key(title), iso(utcnow()), conversation_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._transaction(work)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            row = await _fetchone(
                db, "SELECT meta FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            )
            if row is None:
                return False
            await db.execute(
                "UPDATE conversations SET meta = ? WHERE id = ?",
                (_json(merged(json.loads(row["meta"]), meta)), conversation_id),
            )
            return True

        return await self._transaction(work)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            # Messages go by ON DELETE CASCADE; usage rows have no foreign key and stay.
            cursor = await db.execute(
                "DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            )
            return cursor.rowcount > 0

        return await self._transaction(work)

    # -- messages ----------------------------------------------------------------------------------------------
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
        async def work(db: aiosqlite.Connection) -> StoredMessage:
            await _require_conversation(db, user_id, conversation_id)
            return await _insert_message(db, conversation_id, role, content, MessageStatus(status), model, meta)

        return await self._transaction(work)

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
        async def work(db: aiosqlite.Connection) -> StoredMessage | None:
            return await _update_message(db, user_id, message_id, content, status, model, meta)

        return await self._transaction(work)

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        async def work(db: aiosqlite.Connection) -> int:
            cursor = await db.execute(
                """DELETE FROM messages WHERE conversation_id = ? AND seq >= (
                       SELECT m.seq FROM messages m JOIN conversations c ON c.id = m.conversation_id
                       WHERE m.id = ? AND m.conversation_id = ? AND c.user_id = ?)""",
                (conversation_id, message_id, conversation_id, user_id),
            )
            return cursor.rowcount

        return await self._transaction(work)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None
    ) -> list[StoredMessage] | None:
        if (
            await self._fetchone("SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id))
            is None
        ):
            return None
        if limit is None:
            rows = await self._fetchall(
                f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ? ORDER BY m.seq",
                (conversation_id,),
            )
        else:
            rows = await self._fetchall(
                f"SELECT * FROM (SELECT m.seq, {_MESSAGE_COLUMNS} FROM messages m WHERE m.conversation_id = ? "
                "ORDER BY m.seq DESC LIMIT ?) ORDER BY seq",
                (conversation_id, max(limit, 0)),
            )
        return [_message(row) for row in rows]

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
        async def work(db: aiosqlite.Connection) -> tuple[StoredMessage | None, StoredMessage]:
            await _require_conversation(db, user_id, conversation_id)
            user_msg = None
            if user_content is not None:
                user_msg = await _insert_message(
                    db, conversation_id, "user", user_content, MessageStatus(user_status), None, user_meta
                )
            reply = await _insert_message(
                db, conversation_id, "assistant", "", MessageStatus.STREAMING, reply_model, None
            )
            return user_msg, reply

        return await self._transaction(work)

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
        async def work(db: aiosqlite.Connection) -> StoredMessage | None:
            message = await _update_message(db, user_id, message_id, content, status, model, meta)
            if usage is not None:
                await _insert_usage(db, usage)
            return message

        return await self._transaction(work)

    # -- accounts ----------------------------------------------------------------------------------------------
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        now = utcnow()
        user = User(id=new_id(), name=name, is_admin=is_admin, anonymous=anonymous, created_at=now)

        async def work(db: aiosqlite.Connection) -> None:
            try:
                await db.execute(
                    "INSERT INTO users (id, name, password_hash, is_admin, anonymous, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (user.id, name, password_hash, is_admin, anonymous, iso(now)),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"The user name {name!r} is taken: choose another name.") from None

        await self._transaction(work)
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._fetchone("SELECT * FROM users WHERE id = ?", (user_id,))
        return _user_record(row) if row else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        row = await self._fetchone("SELECT * FROM users WHERE name = ?", (name,))
        return _user_record(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._fetchall("SELECT * FROM users ORDER BY created_at, id")
        return [_user_record(row).user for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            cursor = await db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            return cursor.rowcount > 0

        return await self._transaction(work)

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())

        async def work(db: aiosqlite.Connection) -> None:
            try:
                await db.execute(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (record.id, user_id, name, prefix, key_hash, iso(record.created_at)),
                )
            except sqlite3.IntegrityError:
                raise Conflict("An API key with this hash exists already: generate a new key.") from None

        await self._transaction(work)
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        async def work(db: aiosqlite.Connection) -> ApiKeyRecord | None:
            await db.execute("UPDATE api_keys SET last_used_at = ? WHERE key_hash = ?", (iso(utcnow()), key_hash))
            row = await _fetchone(db, f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,))
            return _api_key(row) if row else None

        return await self._transaction(work)

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        if user_id is None:
            rows = await self._fetchall(f"SELECT {_API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id")
        else:
            rows = await self._fetchall(
                f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at, id", (user_id,)
            )
        return [_api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        async def work(db: aiosqlite.Connection) -> bool:
            # COALESCE keeps the first revocation time when a key is revoked twice.
            cursor = await db.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND (? IS NULL OR user_id = ?)",
                (iso(utcnow()), key_id, user_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._transaction(work)

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            now = iso(utcnow())
            await db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))  # sweep as we go: no cron needed
            await db.execute(
                "INSERT OR REPLACE INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, record.user_id, record.csrf_token, iso(record.expires_at)),
            )

        await self._transaction(work)

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        row = await self._fetchone(
            "SELECT user_id, csrf_token, expires_at FROM sessions WHERE token_hash = ? AND expires_at > ?",
            (token_hash, iso(utcnow())),
        )
        if row is None:
            return None
        return SessionRecord(
            user_id=row["user_id"], csrf_token=row["csrf_token"], expires_at=from_iso(row["expires_at"])
        )

    async def delete_session(self, token_hash: str) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,))

        await self._transaction(work)

    # -- usage -------------------------------------------------------------------------------------------------
    async def record_usage(self, record: UsageRecord) -> None:
        async def work(db: aiosqlite.Connection) -> None:
            await _insert_usage(db, record)

        await self._transaction(work)

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        where, params = [], []
        if user_id is not None:
            where.append("u.user_id = ?")
            params.append(user_id)
        if since is not None:
            where.append("u.created_at >= ?")
            params.append(iso(since))
        rows = await self._fetchall(
            "SELECT u.user_id, users.name AS user_name, u.model, count(*) AS turns, "
            "sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens, "
            "coalesce(sum(u.cost), 0.0) AS cost FROM usage u LEFT JOIN users ON users.id = u.user_id "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} "
            "GROUP BY u.user_id, u.model ORDER BY u.user_id, u.model",
            params,
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
        row = await self._fetchone(
            "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
            "WHERE user_id = ? AND created_at >= ?",
            (user_id, iso(since)),
        )
        return int(row[0]) if row else 0


def _make_parent_dir(path: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)


# -- helpers run inside a transaction ----------------------------------------------------------------------------
async def _fetchone(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> sqlite3.Row | None:
    async with db.execute(sql, params) as cursor:
        return await cursor.fetchone()


async def _fetchall(db: aiosqlite.Connection, sql: str, params: Sequence[Any] = ()) -> list[sqlite3.Row]:
    async with db.execute(sql, params) as cursor:
        return list(await cursor.fetchall())


async def _require_conversation(db: aiosqlite.Connection, user_id: str, conversation_id: str) -> None:
    """Bump the conversation's ``updated_at`` (a new message makes it the newest), or raise ``NotFound``."""
    cursor = await db.execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ? AND user_id = ?",
        (iso(utcnow()), conversation_id, user_id),
    )
    if cursor.rowcount == 0:
        raise NotFound(f"Conversation {conversation_id!r} does not exist: list your conversations to find its id.")


async def _insert_message(
    db: aiosqlite.Connection,
    conversation_id: str,
    role: Role,
    content: str,
    status: MessageStatus,
    model: str | None,
    meta: Mapping[str, Any] | None,
) -> StoredMessage:
    message = StoredMessage(
        id=new_id(),
        conversation_id=conversation_id,
        role=role,
        content=content,
        status=status,
        created_at=utcnow(),
        model=model,
        meta=dict(meta or {}),
    )
    await db.execute(
        "INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (message.id, conversation_id, role, content, status.value, model, _json(message.meta), iso(message.created_at)),
    )
    return message


async def _update_message(
    db: aiosqlite.Connection,
    user_id: str,
    message_id: str,
    content: str | None,
    status: MessageStatus | None,
    model: str | None,
    meta: Mapping[str, Any] | None,
) -> StoredMessage | None:
    row = await _fetchone(
        db,
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.id = ? AND c.user_id = ?",
        (message_id, user_id),
    )
    if row is None:
        return None
    old = _message(row)
    new = StoredMessage(
        id=old.id,
        conversation_id=old.conversation_id,
        role=old.role,
        content=old.content if content is None else content,
        status=old.status if status is None else MessageStatus(status),
        created_at=old.created_at,
        model=old.model if model is None else model,
        meta=merged(old.meta, meta),
    )
    await db.execute(
        "UPDATE messages SET content = ?, status = ?, model = ?, meta = ? WHERE id = ?",
        (new.content, new.status.value, new.model, _json(new.meta), message_id),
    )
    return new


async def _insert_usage(db: aiosqlite.Connection, r: UsageRecord) -> None:
    await db.execute(
        "INSERT INTO usage (user_id, model, prompt_tokens, completion_tokens, outcome, ttft_ms, total_ms, cost, "
        "source, conversation_id, message_id, request_id, created_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
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
            iso(r.created_at or utcnow()),
        ),
    )


# -- rows -> types -----------------------------------------------------------------------------------------------
def _json(value: Mapping[str, Any]) -> str:
    return json.dumps(dict(value), ensure_ascii=False, separators=(",", ":"))


def _conversation(row: sqlite3.Row) -> Conversation:
    return Conversation(
        id=row["id"],
        user_id=row["user_id"],
        title=row["title"],
        persona=row["persona"],
        model=row["model"],
        created_at=from_iso(row["created_at"]),
        updated_at=from_iso(row["updated_at"]),
        kind=row["kind"],
        meta=json.loads(row["meta"]),
    )


def _message(row: sqlite3.Row) -> StoredMessage:
    return StoredMessage(
        id=row["id"],
        conversation_id=row["conversation_id"],
        role=row["role"],
        content=row["content"],
        status=MessageStatus(row["status"]),
        created_at=from_iso(row["created_at"]),
        model=row["model"],
        meta=json.loads(row["meta"]),
    )


def _user_record(row: sqlite3.Row) -> UserRecord:
    user = User(
        id=row["id"],
        name=row["name"],
        is_admin=bool(row["is_admin"]),
        anonymous=bool(row["anonymous"]),
        created_at=from_iso(row["created_at"]),
    )
    return UserRecord(user=user, password_hash=row["password_hash"])


def _api_key(row: sqlite3.Row) -> ApiKeyRecord:
    return ApiKeyRecord(
        id=row["id"],
        user_id=row["user_id"],
        name=row["name"],
        prefix=row["prefix"],
        created_at=from_iso(row["created_at"]),
        last_used_at=from_iso(row["last_used_at"]) if row["last_used_at"] else None,
        revoked_at=from_iso(row["revoked_at"]) if row["revoked_at"] else None,
    )
