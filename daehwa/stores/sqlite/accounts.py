"""SQLite accounts: ``users``, ``api_keys`` (only the key's hash) and ``sessions`` (only the token's hash); and
``delete_user``, which removes a user's rows from every table in one transaction."""

from __future__ import annotations

import sqlite3

from ...errors import Conflict
from ...types import User
from ..base import DELETED_USER_ID, AccountStore, ApiKeyRecord, SessionRecord, UserDeletion, UserRecord
from ..common import API_KEY_COLUMNS, api_key_from_row, from_iso, iso, new_id, user_record_from_row, utcnow
from .connection import SQLiteConnection
from .profiles import delete_profile_rows


class SQLiteAccounts(SQLiteConnection, AccountStore):
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
        return user_record_from_row(dict(row)) if row else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        row = await self._read(lambda db: db.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone())
        return user_record_from_row(dict(row)) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._read(lambda db: db.execute("SELECT * FROM users ORDER BY created_at, id").fetchall())
        return [user_record_from_row(dict(row)).user for row in rows]

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
            row = db.execute(f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE key_hash = ?", (key_hash,)).fetchone()
            return api_key_from_row(dict(row)) if row else None

        return await self._write(work)

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        params: tuple[str, ...] = ()
        if user_id is None:
            sql = f"SELECT {API_KEY_COLUMNS} FROM api_keys ORDER BY created_at, id"
        else:
            sql = f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE user_id = ? ORDER BY created_at, id"
            params = (user_id,)
        rows = await self._read(lambda db: db.execute(sql, params).fetchall())
        return [api_key_from_row(dict(row)) for row in rows]

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

    async def delete_user(self, user_id: str) -> UserDeletion | None:
        def work(db: sqlite3.Connection) -> UserDeletion | None:
            now = iso(utcnow())
            live = db.execute(
                "SELECT count(*) FROM sessions WHERE user_id = ? AND expires_at > ?", (user_id, now)
            ).fetchone()[0]
            db.execute("DELETE FROM sessions WHERE user_id = ?", (user_id,))
            keys = db.execute("DELETE FROM api_keys WHERE user_id = ?", (user_id,)).rowcount
            # Messages, their vectors and the summaries go by ON DELETE CASCADE; stream chunks with their log.
            conversations = db.execute("DELETE FROM conversations WHERE user_id = ?", (user_id,)).rowcount
            db.execute("DELETE FROM reply_streams WHERE user_id = ?", (user_id,))
            forms = db.execute("DELETE FROM form_records WHERE user_id = ?", (user_id,)).rowcount
            delete_profile_rows(db, user_id)
            detached = db.execute(
                "UPDATE usage SET user_id = ?, conversation_id = NULL, message_id = NULL, request_id = NULL "
                "WHERE user_id = ?",
                (DELETED_USER_ID, user_id),
            ).rowcount
            if not db.execute("DELETE FROM users WHERE id = ?", (user_id,)).rowcount:
                return None
            return UserDeletion(conversations, forms, keys, live, detached)

        return await self._write(work)
