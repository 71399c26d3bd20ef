"""PostgreSQL accounts: ``users``, ``api_keys`` (only the key's hash) and ``sessions`` (only the token's hash); and
``delete_user``, which removes a user's rows from every table in one transaction."""

from __future__ import annotations

import asyncpg

from ...errors import Conflict
from ...types import User
from ..base import DELETED_USER_ID, AccountStore, ApiKeyRecord, SessionRecord, UserDeletion, UserRecord
from ..common import API_KEY_COLUMNS, api_key_from_row, as_utc, new_id, user_record_from_row, utcnow
from .connection import PostgresConnection, count, insert_sql

_INSERT_USER = insert_sql("users", "id, name, password_hash, is_admin, anonymous, created_at")
_INSERT_API_KEY = insert_sql("api_keys", "id, user_id, name, prefix, key_hash, created_at")


class PostgresAccounts(PostgresConnection, AccountStore):
    async def create_user(
        self, name: str, *, password_hash: str | None, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        user = User(id=new_id(), name=name, is_admin=is_admin, anonymous=anonymous, created_at=utcnow())
        try:
            await self._execute(_INSERT_USER, user.id, name, password_hash, is_admin, anonymous, user.created_at)
        except asyncpg.UniqueViolationError:
            raise Conflict(f"The user name {name!r} is taken: choose another name.") from None
        return user

    async def get_user(self, user_id: str) -> UserRecord | None:
        row = await self._p().fetchrow("SELECT * FROM users WHERE id = $1", user_id)
        return user_record_from_row(row) if row else None

    async def get_user_by_name(self, name: str) -> UserRecord | None:
        row = await self._p().fetchrow("SELECT * FROM users WHERE name = $1", name)
        return user_record_from_row(row) if row else None

    async def list_users(self) -> list[User]:
        rows = await self._p().fetch("SELECT * FROM users ORDER BY created_at, id")
        return [user_record_from_row(row).user for row in rows]

    async def set_password_hash(self, user_id: str, password_hash: str) -> bool:
        touched = await self._execute("UPDATE users SET password_hash = $2 WHERE id = $1", user_id, password_hash)
        return touched > 0

    async def create_api_key(self, user_id: str, *, name: str, prefix: str, key_hash: str) -> ApiKeyRecord:
        record = ApiKeyRecord(id=new_id(), user_id=user_id, name=name, prefix=prefix, created_at=utcnow())
        try:
            await self._execute(_INSERT_API_KEY, record.id, user_id, name, prefix, key_hash, record.created_at)
        except asyncpg.UniqueViolationError:
            raise Conflict("An API key with this hash exists already: generate a new key.") from None
        return record

    async def find_api_key(self, key_hash: str) -> ApiKeyRecord | None:
        row = await self._write(
            lambda: self._p().fetchrow(
                f"UPDATE api_keys SET last_used_at = $2 WHERE key_hash = $1 RETURNING {API_KEY_COLUMNS}",
                key_hash,
                utcnow(),
            )
        )
        return api_key_from_row(row) if row else None

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        rows = await self._p().fetch(
            f"SELECT {API_KEY_COLUMNS} FROM api_keys WHERE $1::text IS NULL OR user_id = $1 ORDER BY created_at, id",
            user_id,
        )
        return [api_key_from_row(row) for row in rows]

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        touched = await self._execute(
            "UPDATE api_keys SET revoked_at = COALESCE(revoked_at, $3) "
            "WHERE id = $1 AND ($2::text IS NULL OR user_id = $2)",
            key_id,
            user_id,
            utcnow(),
        )
        return touched > 0

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
        await self._execute("DELETE FROM sessions WHERE token_hash = $1", token_hash)

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

    async def delete_user(self, user_id: str) -> UserDeletion | None:
        async def work() -> UserDeletion | None:
            async with self._p().acquire() as conn, conn.transaction():
                live = await conn.fetchval(
                    "WITH gone AS (DELETE FROM sessions WHERE user_id = $1 RETURNING expires_at) "
                    "SELECT count(*) FROM gone WHERE expires_at > $2",
                    user_id,
                    utcnow(),
                )
                keys = count(await conn.execute("DELETE FROM api_keys WHERE user_id = $1", user_id))
                # Messages, their vectors and the summaries go by ON DELETE CASCADE; stream chunks with their log.
                conversations = count(await conn.execute("DELETE FROM conversations WHERE user_id = $1", user_id))
                await conn.execute("DELETE FROM reply_streams WHERE user_id = $1", user_id)
                forms = count(await conn.execute("DELETE FROM form_records WHERE user_id = $1", user_id))
                for table in ("user_interests", "recommendation_feedback", "profile_settings"):
                    await conn.execute(f"DELETE FROM {table} WHERE user_id = $1", user_id)
                detached = count(
                    await conn.execute(
                        "UPDATE usage SET user_id = $1, conversation_id = NULL, message_id = NULL, request_id = NULL "
                        "WHERE user_id = $2",
                        DELETED_USER_ID,
                        user_id,
                    )
                )
                if not count(await conn.execute("DELETE FROM users WHERE id = $1", user_id)):
                    return None
                return UserDeletion(conversations, forms, keys, int(live), detached)

        return await self._write(work)
