"""PostgreSQL completed forms: ``form_records`` (values as JSONB), kept when the conversation is deleted."""

from __future__ import annotations

from ..base import FormRecord, FormStore, NewFormRecord
from ..common import form_record_from_row, new_id, utcnow
from .connection import PostgresConnection


class PostgresForms(PostgresConnection, FormStore):
    async def save_form_record(self, user_id: str, record: NewFormRecord) -> FormRecord | None:
        rid, now = new_id(), utcnow()
        touched = await self._execute(
            """INSERT INTO form_records (id, user_id, conversation_id, form, record_values, delivery, created_at)
            SELECT $1, user_id, id, $4, $5, $6, $7 FROM conversations WHERE id = $3 AND user_id = $2""",
            rid,
            user_id,
            record.conversation_id,
            record.form,
            dict(record.values),
            record.delivery,
            now,
        )
        if touched == 0:
            return None
        return FormRecord(rid, user_id, record.conversation_id, record.form, dict(record.values), now, record.delivery)

    async def get_form_record(self, user_id: str, record_id: str) -> FormRecord | None:
        row = await self._p().fetchrow("SELECT * FROM form_records WHERE id = $1 AND user_id = $2", record_id, user_id)
        return form_record_from_row(dict(row)) if row else None

    async def list_form_records(self, user_id: str, *, conversation_id: str | None = None) -> list[FormRecord]:
        rows = await self._p().fetch(
            """SELECT * FROM form_records WHERE user_id = $1 AND ($2::text IS NULL OR conversation_id = $2)
            ORDER BY created_at, id""",
            user_id,
            conversation_id,
        )
        return [form_record_from_row(dict(r)) for r in rows]

    async def set_form_delivery(self, user_id: str, record_id: str, delivery: str) -> bool:
        touched = await self._execute(
            "UPDATE form_records SET delivery = $3 WHERE id = $1 AND user_id = $2", record_id, user_id, delivery
        )
        return touched > 0
