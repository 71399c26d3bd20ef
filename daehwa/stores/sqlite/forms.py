"""SQLite completed forms: ``form_records`` (values as a JSON object), kept when the conversation is deleted."""

from __future__ import annotations

import sqlite3

from ..base import FormRecord, FormStore, NewFormRecord
from ..common import form_record_from_row, iso, new_id, to_json, utcnow
from .connection import SQLiteConnection


class SQLiteForms(SQLiteConnection, FormStore):
    async def save_form_record(self, user_id: str, record: NewFormRecord) -> FormRecord | None:
        rid, now = new_id(), utcnow()

        def work(db: sqlite3.Connection) -> FormRecord | None:
            owned = db.execute(
                "SELECT 1 FROM conversations WHERE id = ? AND user_id = ?", (record.conversation_id, user_id)
            ).fetchone()
            if owned is None:
                return None
            db.execute(
                """INSERT INTO form_records (id, user_id, conversation_id, form, record_values, delivery, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?)""",
                (rid, user_id, record.conversation_id, record.form, to_json(record.values), record.delivery, iso(now)),
            )
            return FormRecord(
                rid, user_id, record.conversation_id, record.form, dict(record.values), now, record.delivery
            )

        return await self._write(work)

    async def get_form_record(self, user_id: str, record_id: str) -> FormRecord | None:
        def work(db: sqlite3.Connection) -> FormRecord | None:
            row = db.execute("SELECT * FROM form_records WHERE id = ? AND user_id = ?", (record_id, user_id)).fetchone()
            return form_record_from_row(dict(row)) if row else None

        return await self._read(work)

    async def list_form_records(self, user_id: str, *, conversation_id: str | None = None) -> list[FormRecord]:
        def work(db: sqlite3.Connection) -> list[FormRecord]:
            sql, args = "SELECT * FROM form_records WHERE user_id = ?", [user_id]
            if conversation_id is not None:
                sql += " AND conversation_id = ?"
                args.append(conversation_id)
            rows = db.execute(sql + " ORDER BY created_at, id", args).fetchall()
            return [form_record_from_row(dict(r)) for r in rows]

        return await self._read(work)

    async def set_form_delivery(self, user_id: str, record_id: str, delivery: str) -> bool:
        def work(db: sqlite3.Connection) -> bool:
            return (
                db.execute(
                    "UPDATE form_records SET delivery = ? WHERE id = ? AND user_id = ?", (delivery, record_id, user_id)
                ).rowcount
                > 0
            )

        return await self._write(work)
