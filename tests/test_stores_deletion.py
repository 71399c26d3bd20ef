"""Account deletion on every store (SQLite, memory, Redis, Redis Cluster, PostgreSQL, each the real thing):
``delete_user`` leaves nothing of the user anywhere in the backend (every table, every key under the prefix), keeps
their usage records detached, and leaves another user's data as it was."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from daehwa.stores import (
    ConversationQuery,
    MessageChange,
    NewConversation,
    NewFormRecord,
    NewMessage,
    NewTurn,
    SessionRecord,
    Store,
    StreamChunk,
    StreamTimes,
    TurnResult,
)
from daehwa.stores.base import DELETED_USER_ID
from daehwa.types import ConversationSummary, MessageStatus, Outcome, Usage, UsageRecord

from .test_stores import StoreFactory, store, store_factory  # noqa: F401  (the parametrised store fixtures)

ALL_KINDS = ConversationQuery(kind=None, limit=100)


@dataclass
class Footprint:
    """Everything one user left in a store, and the strings that must not be found in it once they are deleted."""

    user_id: str
    name: str
    conversation_ids: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)  # unique strings stored only for this user

    def needles(self) -> list[str]:
        return [self.user_id, self.name, *self.conversation_ids, *self.secrets]


async def _fill(backend: Store, tag: str) -> Footprint:
    """A user with a bit of everything: conversations (one still streaming, with its log), vectors, a summary,
    a form record, interests, feedback, a settings row, two API keys, a session, a login link and usage."""
    user = await backend.create_user(f"{tag}-{uuid.uuid4().hex[:8]}", password_hash="argon2-not-really")
    fp = Footprint(user.id, user.name)
    word = f"{tag}word{uuid.uuid4().hex[:6]}"
    conv, question, reply = await backend.create_conversation_with_turn(
        user.id, NewConversation(title=f"{word} title"), NewTurn(user_content=f"{word} question", reply_model="m")
    )
    assert question is not None
    await backend.finish_turn(
        user.id,
        reply.id,
        TurnResult(
            f"{word} answer",
            MessageStatus.COMPLETE,
            usage=UsageRecord(
                user.id, "m", Usage(7, 5), Outcome.OK, 1.0, 2.0, conv.id, reply.id, request_id=f"{word}req"
            ),
        ),
    )
    await backend.save_vectors(user.id, conv.id, {question.id: b"\1\0\0\0"}, model="e")
    await backend.save_summary(user.id, ConversationSummary(conv.id, question.id, reply.id, 2, f"{word} summary", "m"))
    second = await backend.create_conversation(user.id, NewConversation(title="second"))
    _, streaming = await backend.begin_turn(user.id, second.id, NewTurn(user_content="more", reply_model="m"))
    await backend.append_stream(
        user.id, second.id, streaming.id, StreamChunk(0, f"{word} partial"), StreamTimes(30, 600)
    )
    await backend.update_message(user.id, streaming.id, MessageChange(meta={"note": word}))
    api = await backend.create_conversation(user.id, NewConversation(kind="api"))
    await backend.append_message(user.id, api.id, NewMessage("user", f"{word} api"))
    fp.conversation_ids += [conv.id, second.id, api.id]
    form = await backend.save_form_record(user.id, NewFormRecord(conv.id, "reservation", {"name": f"{word} form"}))
    assert form is not None
    await backend.add_interests(user.id, {f"{word}interest": 2.0})
    await backend.record_feedback(user.id, "guides", "py-perf", "dismiss")
    await backend.set_interests_enabled(user.id, False)
    await backend.create_api_key(user.id, name=f"{word}key", prefix=f"dh-{word[:8]}", key_hash=f"{word}keyhash")
    await backend.create_api_key(user.id, name="two", prefix="dh-two", key_hash=f"{word}keyhash2")
    expires = datetime.now(UTC) + timedelta(days=1)
    await backend.create_session(f"{word}session", SessionRecord(user.id, f"{word}csrf", expires))
    await backend.create_session(f"{word}link", SessionRecord(user.id, "", expires))
    await backend.record_usage(UsageRecord(user.id, "m2", Usage(3, 1), Outcome.OK, None, 2.0, source="openai"))
    fp.secrets += [word, form.id, question.id, reply.id, streaming.id]
    return fp


async def _everything(backend: Store) -> str:
    """Every value the backend holds (all rows of all tables, or every key under the prefix with its contents)."""
    inner = getattr(backend, "inner", backend)
    module = type(inner).__module__
    if module.startswith("daehwa.stores.redis"):
        return await _redis_dump(inner)
    if module.startswith("daehwa.stores.postgres"):
        return await _postgres_dump(inner)

    def dump(db: object) -> str:
        tables = [r[0] for r in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]  # type: ignore[attr-defined]
        return "\n".join(
            f"{t}: {tuple(row)!r}"
            for t in tables
            for row in db.execute(f'SELECT * FROM "{t}"')  # type: ignore[attr-defined]
        )

    return await inner._read(dump)  # type: ignore[attr-defined]


async def _postgres_dump(backend: object) -> str:
    pool = backend._p()  # type: ignore[attr-defined]
    tables = await pool.fetch("SELECT table_name FROM information_schema.tables WHERE table_schema = current_schema()")
    lines = []
    for t in tables:
        for row in await pool.fetch(f'SELECT * FROM "{t["table_name"]}"'):
            lines.append(f"{t['table_name']}: {tuple(row.values())!r}")
    return "\n".join(lines)


async def _redis_dump(backend: object) -> str:
    r = backend._r()  # type: ignore[attr-defined]
    lines = []
    async for key in r.scan_iter(match=f"{backend.prefix}:*", count=1000):  # type: ignore[attr-defined]
        kind = await r.type(key)
        if kind == "hash":
            value: object = await r.hgetall(key)
        elif kind == "zset":
            value = await r.zrange(key, 0, -1, withscores=True)
        elif kind == "set":
            value = await r.smembers(key)
        elif kind == "stream":
            value = await r.xrange(key)
        else:
            value = await r.get(key)
        lines.append(f"{key} ({kind}): {value!r}")
    return "\n".join(lines)


async def test_delete_user_leaves_nothing_of_them_and_keeps_the_other_user(store: Store) -> None:  # noqa: F811
    gone, kept = await _fill(store, "gone"), await _fill(store, "kept")
    before = await _everything(store)
    assert all(needle in before for needle in gone.needles() + kept.needles())  # the dump does see them

    deletion = await store.delete_user(gone.user_id)

    assert deletion is not None
    assert (deletion.conversations, deletion.form_records, deletion.api_keys) == (3, 1, 2)
    assert deletion.sessions == 2  # the browser session and the login link
    assert deletion.usage_detached == 2
    after = await _everything(store)
    left = [needle for needle in gone.needles() if needle in after]
    assert not left, f"left behind: {left}\n{after}"
    # Through the interface, too: nothing reads back.
    assert await store.get_user(gone.user_id) is None and await store.get_user_by_name(gone.name) is None
    assert gone.user_id not in {u.id for u in await store.list_users()}
    assert await store.list_conversations(gone.user_id, ALL_KINDS) == []
    assert await store.list_api_keys(gone.user_id) == []
    assert await store.list_form_records(gone.user_id) == []
    assert await store.list_interests(gone.user_id) == []
    assert await store.load_feedback(gone.user_id, "guides") == {}
    assert await store.interests_enabled(gone.user_id)  # the setting went with the profile: back to the default
    assert await store.tokens_used_since(gone.user_id, datetime(2000, 1, 1, tzinfo=UTC)) == 0

    # The usage stays, detached: the totals still add up, under DELETED_USER_ID, with no name.
    totals = {(t.user_id, t.model): t for t in await store.usage_totals()}
    assert totals[(DELETED_USER_ID, "m")].prompt_tokens == 7 and totals[(DELETED_USER_ID, "m2")].turns == 1
    assert totals[(DELETED_USER_ID, "m")].user_name is None
    assert (kept.user_id, "m") in totals and (kept.user_id, "m2") in totals

    # The other user is untouched: every needle of theirs is still there, and reads back.
    assert all(needle in after for needle in kept.needles())
    assert len(await store.list_conversations(kept.user_id, ALL_KINDS)) == 3
    assert len(await store.list_api_keys(kept.user_id)) == 2
    assert len(await store.list_form_records(kept.user_id)) == 1
    assert not await store.interests_enabled(kept.user_id)
    assert await store.tokens_used_since(kept.user_id, datetime(2000, 1, 1, tzinfo=UTC)) == 16


async def test_delete_user_twice_or_unknown_is_none(store: Store) -> None:  # noqa: F811
    user = await store.create_user(f"once-{uuid.uuid4().hex[:8]}", password_hash=None)
    assert await store.delete_user(user.id) is not None
    assert await store.delete_user(user.id) is None
    assert await store.delete_user("no-such-user") is None
    # The name is free again.
    again = await store.create_user(user.name, password_hash=None)
    assert again.id != user.id


async def test_interests_switch_is_per_user_and_survives_a_reopen(
    store: Store,  # noqa: F811
    store_factory: StoreFactory,  # noqa: F811
) -> None:
    assert await store.interests_enabled("alice")
    await store.set_interests_enabled("alice", False)
    assert not await store.interests_enabled("alice") and await store.interests_enabled("bob")
    again = store_factory()
    await again.open()
    try:
        assert not await again.interests_enabled("alice")
        await again.set_interests_enabled("alice", True)
        assert await again.interests_enabled("alice")
    finally:
        await again.close()
    await store.set_interests_enabled("bob", False)
    await store.delete_profile("bob")
    assert await store.interests_enabled("bob")


def test_detached_usage_documents_keep_the_numbers() -> None:
    from daehwa.stores.redis.deletion import _detached

    raw = json.dumps({"id": "x", "user_id": "u1", "conversation_id": "c", "message_id": "m", "request_id": "r",
                      "prompt_tokens": 3, "completion_tokens": 4, "cost": 0.5})  # fmt: skip
    doc = json.loads(_detached(raw))
    assert doc["user_id"] == DELETED_USER_ID
    assert doc["conversation_id"] is doc["message_id"] is doc["request_id"] is None
    assert (doc["id"], doc["prompt_tokens"], doc["completion_tokens"], doc["cost"]) == ("x", 3, 4, 0.5)
