"""The default store: one SQLite file, driven from one worker thread.

One connection per store, in WAL mode so readers never block the writer and several processes can share the file.
The connection lives on a dedicated thread (a one-worker executor) and every store method is one plain function
run there: all its statements and its commit cost a single hop between the event loop and the thread, instead of
one hop per statement. The single worker also serialises the store's operations, so the coroutines of one event
loop never interleave inside a transaction. Every write is a ``BEGIN IMMEDIATE`` transaction: taking the write lock
up front means a busy file makes us wait (``busy_timeout``) instead of failing with "database is locked" halfway
through.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigError, Conflict, NotFound
from ..types import Conversation, MessageStatus, Outcome, Role, StoredMessage, UsageRecord, UsageTotal, User
from .base import ApiKeyRecord, SessionRecord, Store, UserRecord
from .common import from_iso, iso, merged, new_id, title_key, unknown_before, utcnow
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
        self._db: sqlite3.Connection | None = None
        self._executor: ThreadPoolExecutor | None = None
        self.applied_migrations: list[str] = []  # what the last open() applied, for tests and logs

    @classmethod
    def from_url(cls, url: str, settings: Settings | None = None) -> SQLiteStore:
        return cls(path_from_url(url))

    def __repr__(self) -> str:
        return f"SQLiteStore({self.path!r})"

    # -- lifecycle ---------------------------------------------------------------------------------------------
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
        if self.path != ":memory:":
            Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: we issue BEGIN/COMMIT ourselves, sqlite3 must not open transactions behind our back.
        db = sqlite3.connect(self.path, isolation_level=None)
        db.row_factory = sqlite3.Row
        try:
            # busy_timeout first: switching to WAL itself waits for the lock when another process is writing.
            db.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout_ms)}")
            db.execute("PRAGMA journal_mode = WAL")
            db.execute("PRAGMA synchronous = NORMAL")  # durable at each checkpoint; safe with WAL
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

    def _worker(self) -> tuple[sqlite3.Connection, ThreadPoolExecutor]:
        if self._db is None or self._executor is None:
            raise RuntimeError("SQLiteStore is not open: call 'await store.open()' first.")
        return self._db, self._executor

    async def recover_interrupted(self) -> None:
        await self._write(_repair_streaming)

    async def _read(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` (reads only) on the connection's thread: one hop, whatever it does."""
        db, executor = self._worker()
        return await asyncio.get_running_loop().run_in_executor(executor, work, db)

    async def _write(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` in one write transaction on the connection's thread. Shielded: a caller that is cancelled (a
        client that left) neither cuts a transaction in half nor drops one still queued, so what it was storing, e.g.
        a partial reply, is stored."""
        db, executor = self._worker()
        return await asyncio.shield(asyncio.get_running_loop().run_in_executor(executor, _in_transaction, db, work))

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
        conv = _new_conversation(user_id, title, persona, model, kind, meta)
        await self._write(lambda db: _insert_conversation(db, conv))
        return conv

    async def get_conversation(self, user_id: str, conversation_id: str) -> Conversation | None:
        row = await self._read(
            lambda db: db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE id = ? AND user_id = ?",
                (conversation_id, user_id),
            ).fetchone()
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
        rows = await self._read(
            lambda db: db.execute(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE {' AND '.join(where)} "
                "ORDER BY updated_at DESC, id DESC LIMIT ?",
                (*params, max(limit, 0)),
            ).fetchall()
        )
        return [_conversation(row) for row in rows]

    async def rename_conversation(self, user_id: str, conversation_id: str, title: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute(
                "UPDATE conversations SET title = ?, title_key = ?, updated_at = ? WHERE id = ? AND user_id = ?",
                (title, title_key(title), iso(utcnow()), conversation_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    async def update_conversation(self, user_id: str, conversation_id: str, *, meta: Mapping[str, Any]) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            row = db.execute(
                "SELECT meta FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            ).fetchone()
            if row is None:
                return False
            db.execute(
                "UPDATE conversations SET meta = ? WHERE id = ?",
                (_json(merged(json.loads(row["meta"]), meta)), conversation_id),
            )
            return True

        return await self._write(work)

    async def delete_conversation(self, user_id: str, conversation_id: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            # Messages go by ON DELETE CASCADE; usage rows have no foreign key and stay.
            cursor = db.execute("DELETE FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id))
            return cursor.rowcount > 0

        return await self._write(work)

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
        def work(db: sqlite3.Connection) -> StoredMessage:
            _require_conversation(db, user_id, conversation_id)
            return _insert_message(db, conversation_id, role, content, MessageStatus(status), model, meta)

        return await self._write(work)

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
        return await self._write(lambda db: _update_message(db, user_id, message_id, content, status, model, meta))

    async def delete_messages_from(self, user_id: str, conversation_id: str, message_id: str) -> int:
        def work(db: sqlite3.Connection) -> int:
            cursor = db.execute(
                """DELETE FROM messages WHERE conversation_id = ? AND seq >= (
                       SELECT m.seq FROM messages m JOIN conversations c ON c.id = m.conversation_id
                       WHERE m.id = ? AND m.conversation_id = ? AND c.user_id = ?)""",
                (conversation_id, message_id, conversation_id, user_id),
            )
            return cursor.rowcount

        return await self._write(work)

    async def list_messages(
        self, user_id: str, conversation_id: str, *, limit: int | None = None, before: str | None = None
    ) -> list[StoredMessage] | None:
        def work(db: sqlite3.Connection) -> list[sqlite3.Row] | None:
            # Both reads in one hop and one implicit read transaction: the check and the list see the same data.
            owned = db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (conversation_id, user_id)
            ).fetchone()
            if owned is None:
                return None
            where = "m.conversation_id = ?"
            params: list[str | int] = [conversation_id]
            if before is not None:
                bound = db.execute(
                    "SELECT seq FROM messages WHERE id = ? AND conversation_id = ?", (before, conversation_id)
                ).fetchone()
                if bound is None:
                    raise unknown_before(before)
                where += " AND m.seq < ?"  # a range of the (conversation_id, seq) index: no scan of later messages
                params.append(bound[0])
            if limit is None:
                return db.execute(
                    f"SELECT {_MESSAGE_COLUMNS} FROM messages m WHERE {where} ORDER BY m.seq", params
                ).fetchall()
            return db.execute(
                f"SELECT * FROM (SELECT m.seq, {_MESSAGE_COLUMNS} FROM messages m WHERE {where} "
                "ORDER BY m.seq DESC LIMIT ?) ORDER BY seq",
                (*params, max(limit, 0)),
            ).fetchall()

        rows = await self._read(work)
        return None if rows is None else [_message(row) for row in rows]

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
        def work(db: sqlite3.Connection) -> tuple[StoredMessage | None, StoredMessage]:
            _require_conversation(db, user_id, conversation_id)
            return _insert_turn(db, conversation_id, user_content, user_status, user_meta, reply_model)

        return await self._write(work)

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
        conv = _new_conversation(user_id, title, persona, model, kind, meta)

        def work(db: sqlite3.Connection) -> tuple[StoredMessage | None, StoredMessage]:
            _insert_conversation(db, conv)
            return _insert_turn(db, conv.id, user_content, user_status, user_meta, reply_model)

        user_msg, reply = await self._write(work)
        return conv, user_msg, reply

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
        def work(db: sqlite3.Connection) -> StoredMessage | None:
            message = _update_message(db, user_id, message_id, content, status, model, meta)
            if usage is not None:
                _insert_usage(db, usage)
            return message

        return await self._write(work)

    # -- accounts ----------------------------------------------------------------------------------------------
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        now = utcnow()
        user = User(id=new_id(), name=name, is_admin=is_admin, anonymous=anonymous, created_at=now)

        def work(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO users (id, name, password_hash, is_admin, anonymous, created_at) "
                    "VALUES (?, ?, ?, ?, ?, ?)",
                    (user.id, name, password_hash, is_admin, anonymous, iso(now)),
                )
            except sqlite3.IntegrityError:
                raise Conflict(f"The user name {name!r} is taken: choose another name.") from None

        await self._write(work)
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._read(lambda db: db.execute("SELECT * FROM users WHERE id = ?", (user_id,)).fetchone())
        return _user_record(row) if row else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        row = await self._read(lambda db: db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone())
        return _user_record(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._read(lambda db: db.execute("SELECT * FROM users ORDER BY created_at, id").fetchall())
        return [_user_record(row).user for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            cursor = db.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
            return cursor.rowcount > 0

        return await self._write(work)

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())

        def work(db: sqlite3.Connection) -> None:
            try:
                db.execute(
                    "INSERT INTO api_keys (id, user_id, name, prefix, key_hash, created_at) VALUES (?, ?, ?, ?, ?, ?)",
                    (record.id, user_id, name, prefix, key_hash, iso(record.created_at)),
                )
            except sqlite3.IntegrityError:
                raise Conflict("An API key with this hash exists already: generate a new key.") from None

        await self._write(work)
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        def work(db: sqlite3.Connection) -> ApiKeyRecord | None:
            db.execute("UPDATE api_keys SET last_used_at = ? WHERE key_hash = ?", (iso(utcnow()), key_hash))
            row = db.execute(f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            return _api_key(row) if row else None

        return await self._write(work)

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        params: tuple[str, ...] = ()
        if user_id is None:
            sql = f"SELECT {_API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        else:
            sql = f"SELECT {_API_KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at, id"
            params = (user_id,)
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [_api_key(row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            # COALESCE keeps the first revocation time when a key is revoked twice.
            cursor = db.execute(
                "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, ?) WHERE id = ? AND (? IS NULL OR user_id = ?)",
                (iso(utcnow()), key_id, user_id, user_id),
            )
            return cursor.rowcount > 0

        return await self._write(work)

    async def create_session(self, token_hash: str, record: SessionRecord) -> None:
        def work(db: sqlite3.Connection) -> None:
            now = iso(utcnow())
            db.execute("DELETE FROM sessions WHERE expires_at <= ?", (now,))  # sweep as we go: no cron needed
            db.execute(
                "INSERT OR REPLACE INTO sessions (token_hash, user_id, csrf_token, expires_at) VALUES (?, ?, ?, ?)",
                (token_hash, record.user_id, record.csrf_token, iso(record.expires_at)),
            )

        await self._write(work)

    async def get_session(self, token_hash: str) -> SessionRecord | None:
        row = await self._read(
            lambda db: db.execute(
                "SELECT user_id, csrf_token, expires_at FROM sessions WHERE token_hash = ? AND expires_at > ?",
                (token_hash, iso(utcnow())),
            ).fetchone()
        )
        if row is None:
            return None
        return SessionRecord(
            user_id=row["user_id"], csrf_token=row["csrf_token"], expires_at=from_iso(row["expires_at"])
        )

    async def delete_session(self, token_hash: str) -> None:
        await self._write(lambda db: db.execute("DELETE FROM sessions WHERE token_hash = ?", (token_hash,)))

    async def delete_user_sessions(self, user_id: str, *, keep: str | None = None) -> int:
        def work(db: sqlite3.Connection) -> int:
            db.execute("DELETE FROM sessions WHERE user_id = ? AND expires_at <= ?", (user_id, iso(utcnow())))
            # ``IS NOT NULL`` when nothing is kept: every row goes.
            cursor = db.execute("DELETE FROM sessions WHERE user_id = ? AND token_hash IS NOT ?", (user_id, keep))
            return cursor.rowcount

        return await self._write(work)

    # -- usage -------------------------------------------------------------------------------------------------
    async def record_usage(self, record: UsageRecord) -> None:
        await self._write(lambda db: _insert_usage(db, record))

    async def usage_totals(self, *, user_id: str | None = None, since: datetime | None = None) -> list[UsageTotal]:
        where, params = [], []
        if user_id is not None:
            where.append("u.user_id = ?")
            params.append(user_id)
        if since is not None:
            where.append("u.created_at >= ?")
            params.append(iso(since))
        sql = (
            "SELECT u.user_id, users.name AS user_name, u.model, count(*) AS turns, "
            "sum(u.prompt_tokens) AS prompt_tokens, sum(u.completion_tokens) AS completion_tokens, "
            "coalesce(sum(u.cost), 0.0) AS cost FROM usage u LEFT JOIN users ON users.id = u.user_id "
            f"{'WHERE ' + ' AND '.join(where) if where else ''} "
            "GROUP BY u.user_id, u.model ORDER BY u.user_id, u.model"
        )
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
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
        row = await self._read(
            lambda db: db.execute(
                "SELECT coalesce(sum(prompt_tokens + completion_tokens), 0) FROM usage "
                "WHERE user_id = ? AND created_at >= ?",
                (user_id, iso(since)),
            ).fetchone()
        )
        return int(row[0]) if row else 0


# -- helpers run on the worker thread ----------------------------------------------------------------------------
def _in_transaction(db: sqlite3.Connection, work: Callable[[sqlite3.Connection], T]) -> T:
    db.execute("BEGIN IMMEDIATE")
    try:
        result = work(db)
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")
    return result


def _repair_streaming(db: sqlite3.Connection) -> None:
    db.execute("UPDATE messages SET status = ? WHERE status = ?", (MessageStatus.INTERRUPTED, MessageStatus.STREAMING))


def _new_conversation(
    user_id: str, title: str, persona: str | None, model: str | None, kind: str, meta: Mapping[str, Any] | None
) -> Conversation:
    now = utcnow()
    return Conversation(
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


def _insert_conversation(db: sqlite3.Connection, c: Conversation) -> None:
    db.execute(
        "INSERT INTO conversations (id, user_id, title, title_key, persona, model, kind, meta, created_at, "
        "updated_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (
            c.id,
            c.user_id,
            c.title,
            title_key(c.title),
            c.persona,
            c.model,
            c.kind,
            _json(c.meta),
            iso(c.created_at),
            iso(c.updated_at),
        ),
    )


def _require_conversation(db: sqlite3.Connection, user_id: str, conversation_id: str) -> None:
    """Bump the conversation's ``updated_at`` (a new message makes it the newest), or raise ``NotFound``."""
    cursor = db.execute(
        "UPDATE conversations SET updated_at = ? WHERE id = ? AND user_id = ?",
        (iso(utcnow()), conversation_id, user_id),
    )
    if cursor.rowcount == 0:
        raise NotFound(f"Conversation {conversation_id!r} does not exist: list your conversations to find its id.")


def _insert_turn(
    db: sqlite3.Connection,
    conversation_id: str,
    user_content: str | None,
    user_status: MessageStatus,
    user_meta: Mapping[str, Any] | None,
    reply_model: str | None,
) -> tuple[StoredMessage | None, StoredMessage]:
    user_msg = None
    if user_content is not None:
        user_msg = _insert_message(
            db, conversation_id, "user", user_content, MessageStatus(user_status), None, user_meta
        )
    reply = _insert_message(db, conversation_id, "assistant", "", MessageStatus.STREAMING, reply_model, None)
    return user_msg, reply


def _insert_message(
    db: sqlite3.Connection,
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
    db.execute(
        "INSERT INTO messages (id, conversation_id, role, content, status, model, meta, created_at) "
        "VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
        (message.id, conversation_id, role, content, status.value, model, _json(message.meta), iso(message.created_at)),
    )
    return message


def _update_message(
    db: sqlite3.Connection,
    user_id: str,
    message_id: str,
    content: str | None,
    status: MessageStatus | None,
    model: str | None,
    meta: Mapping[str, Any] | None,
) -> StoredMessage | None:
    row = db.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages m JOIN conversations c ON c.id = m.conversation_id "
        "WHERE m.id = ? AND c.user_id = ?",
        (message_id, user_id),
    ).fetchone()
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
    db.execute(
        "UPDATE messages SET content = ?, status = ?, model = ?, meta = ? WHERE id = ?",
        (new.content, new.status.value, new.model, _json(new.meta), message_id),
    )
    return new


def _insert_usage(db: sqlite3.Connection, r: UsageRecord) -> None:
    db.execute(
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
