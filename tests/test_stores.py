"""One contract suite for every store: the same tests against SQLite, Redis and PostgreSQL, each the real thing.

Each test gets its own namespace (a temporary SQLite file, a Redis key prefix, a PostgreSQL schema) that is removed
afterwards. Without a Redis or PostgreSQL server those cases skip, except under CI=true, where they fail.
"""

from __future__ import annotations

import asyncio
import os
import re
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from daehwa.errors import ConfigError, Conflict, InvalidRequest, NotFound
from daehwa.stores import (
    AccountStore,
    ApiKeyRecord,
    ConversationQuery,
    ConversationStore,
    MessageChange,
    NewConversation,
    NewMessage,
    NewTurn,
    SessionRecord,
    Store,
    StreamChunk,
    StreamTimes,
    TurnResult,
    UsageStore,
    open_store,
)
from daehwa.stores.common import (
    USAGE_FIELDS,
    api_key_from_row,
    conversation_from_row,
    usage_row,
    user_record_from_row,
)
from daehwa.types import MessageStatus, Outcome, StoredMessage, Usage, UsageRecord

from .conftest import require

REDIS_URL = os.environ.get("DAEHWA_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
POSTGRES_URL = os.environ.get("DAEHWA_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test")

StoreFactory = Callable[[], Store]


@asynccontextmanager
async def _redis_namespace(url: str = REDIS_URL, **options: Any) -> AsyncIterator[StoreFactory]:
    from daehwa.stores.redis import RedisStore
    from daehwa.stores.redis.connection import connect

    client = connect(url)
    try:
        await client.ping()
    except Exception as exc:
        await client.aclose()
        require(False, f"Redis is not reachable at {url}: {exc!r}")
    prefix = f"daehwa-test-{uuid.uuid4().hex}"
    try:
        yield lambda: RedisStore(url, prefix=prefix, **options)
    finally:
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*", count=1000)]
        if keys:
            await client.delete(*keys)
        await client.aclose()


@asynccontextmanager
async def _postgres_namespace() -> AsyncIterator[StoreFactory]:
    import asyncpg

    from daehwa.stores.postgres import PostgresStore

    try:
        admin = await asyncpg.connect(POSTGRES_URL, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        require(False, f"PostgreSQL is not reachable at {POSTGRES_URL}: {exc!r}")
    schema = f"daehwa_test_{uuid.uuid4().hex}"
    try:
        yield lambda: PostgresStore(POSTGRES_URL, schema=schema, pool_size=4)
    finally:
        await admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')
        await admin.close()


@pytest.fixture(
    params=[
        pytest.param("sqlite", id="sqlite"),
        pytest.param("memory", id="memory"),
        pytest.param("redis", id="redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", id="redis-cluster", marks=pytest.mark.redis),
        pytest.param("postgres", id="postgres", marks=pytest.mark.postgres),
    ]
)
async def store_factory(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """Makes unopened stores that all share one fresh namespace (to test reopening)."""
    if request.param == "sqlite":
        from daehwa.stores.sqlite import SQLiteStore

        yield lambda: SQLiteStore(tmp_path / "data" / "daehwa.db")
    elif request.param == "memory":
        from daehwa.stores.memory import MemoryStore

        name = uuid.uuid4().hex
        yield lambda: MemoryStore(name)
    elif request.param == "redis":
        async with _redis_namespace() as factory:
            yield factory
    elif request.param == "redis-cluster":
        async with _redis_namespace(request.getfixturevalue("redis_cluster_url")) as factory:
            yield factory
    else:
        async with _postgres_namespace() as factory:
            yield factory


@pytest.fixture
async def store(store_factory: StoreFactory) -> AsyncIterator[Store]:
    s = store_factory()
    await s.open()
    try:
        yield s
    finally:
        await s.close()


def _usage(user_id: str, model: str, prompt: int, completion: int, **kw: object) -> UsageRecord:
    return UsageRecord(
        user_id=user_id,
        model=model,
        usage=Usage(prompt, completion),
        outcome=kw.pop("outcome", Outcome.OK),  # type: ignore[arg-type]
        ttft_ms=12.5,
        total_ms=80.0,
        **kw,  # type: ignore[arg-type]
    )


def _aware_utc(value: datetime | None) -> bool:
    return value is not None and value.utcoffset() == timedelta(0)


# -- interfaces and shared helpers -------------------------------------------------------------------------------
async def test_every_backend_is_the_three_interfaces(store: Store) -> None:
    assert isinstance(store, ConversationStore) and isinstance(store, AccountStore) and isinstance(store, UsageStore)
    # Each domain lives in its own module of the backend's package, so a new capability has an obvious home.
    backend = type(store).__module__
    if backend == "daehwa.stores.memory":  # the SQLite store on an in-memory database
        backend = "daehwa.stores.sqlite"
    owners = {name: getattr(type(store), name).__module__ for name in ("list_messages", "find_api_key", "record_usage")}
    assert owners == {
        "list_messages": f"{backend}.conversations",
        "find_api_key": f"{backend}.accounts",
        "record_usage": f"{backend}.usage",
    }


def test_usage_row_is_laid_out_as_the_usage_columns() -> None:
    row = usage_row(_usage("u1", "m", 3, 4, conversation_id="c", message_id="r", request_id="q", cost=0.5))
    assert tuple(row) == USAGE_FIELDS
    assert (row["prompt_tokens"], row["completion_tokens"], row["outcome"], row["cost"]) == (3, 4, "ok", 0.5)
    assert _aware_utc(row["created_at"])


def test_rows_map_alike_whatever_form_the_backend_returns() -> None:
    when = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    native = {"id": "c1", "user_id": "u1", "title": "제목", "persona": None, "model": "m", "kind": "api"}
    as_text = {**native, "created_at": when.isoformat(), "updated_at": when.isoformat(), "meta": '{"한": [1]}'}
    as_values = {**native, "created_at": when, "updated_at": when, "meta": {"한": [1]}}
    assert conversation_from_row(as_text) == conversation_from_row(as_values)
    assert conversation_from_row(as_text).meta == {"한": [1]}
    key = {"id": "k", "user_id": "u1", "name": "n", "prefix": "dh_", "created_at": when, "revoked_at": ""}
    assert api_key_from_row(key).revoked_at is None and api_key_from_row(key).last_used_at is None
    flags = {"id": "u1", "name": "n", "created_at": when.isoformat()}
    assert user_record_from_row({**flags, "is_admin": "1", "anonymous": "0"}).user.is_admin is True
    assert user_record_from_row({**flags, "is_admin": False, "anonymous": 1}).user.anonymous is True


# -- lifecycle ---------------------------------------------------------------------------------------------------
async def test_ping(store: Store) -> None:
    await store.ping()


async def test_open_is_idempotent_over_the_same_data(store: Store, store_factory: StoreFactory) -> None:
    conv = await store.create_conversation("u1", NewConversation(title="kept"))
    again = store_factory()
    await again.open()
    try:
        got = await again.get_conversation("u1", conv.id)
        assert got is not None and got.title == "kept"
    finally:
        await again.close()


async def test_recovery_turns_streaming_replies_of_a_dead_process_into_interrupted(
    store: Store, store_factory: StoreFactory
) -> None:
    conv = await store.create_conversation("u1")
    user_msg, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content="안녕", reply_model="local"))
    await store.update_message("u1", reply.id, MessageChange(content="partial ans"))
    done = await store.append_message("u1", conv.id, NewMessage(role="assistant", content="fine"))

    restarted = store_factory()
    await restarted.open()
    try:
        # Opening alone (a one-off CLI command while a server streams) leaves live replies alone.
        before = {m.id: m for m in await restarted.list_messages("u1", conv.id) or []}
        assert before[reply.id].status is MessageStatus.STREAMING
        await restarted.recover_interrupted()  # what a starting server does
        messages = await restarted.list_messages("u1", conv.id)
        assert messages is not None
        by_id = {m.id: m for m in messages}
        assert by_id[reply.id].status is MessageStatus.INTERRUPTED
        assert by_id[reply.id].content == "partial ans"  # the text generated so far is kept
        assert user_msg is not None and by_id[user_msg.id].status is MessageStatus.COMPLETE
        assert by_id[done.id].status is MessageStatus.COMPLETE
    finally:
        await restarted.close()


async def test_recovery_leaves_replies_that_live_processes_stream_alone(
    store: Store, store_factory: StoreFactory
) -> None:
    """A starting server relabels only replies whose writer is gone: not one whose chunk log's lease is alive (another
    process streams it), nor one begun after ``created_before`` (its writer may not have taken its lease yet)."""
    conv = await store.create_conversation("u1")
    _, leased = await store.begin_turn("u1", conv.id, NewTurn(user_content="a", reply_model="m"))
    _, lapsed = await store.begin_turn("u1", conv.id, NewTurn(user_content="b", reply_model="m"))
    _, unlogged = await store.begin_turn("u1", conv.id, NewTurn(user_content="c", reply_model="m"))
    await store.append_stream("u1", conv.id, leased.id, StreamChunk(0, "live"), StreamTimes(30, 60))
    await store.append_stream("u1", conv.id, lapsed.id, StreamChunk(0, "dead"), StreamTimes(0.05, 60))
    await asyncio.sleep(0.2)  # the second lease lapses
    restarted = store_factory()
    await restarted.open()
    try:
        await restarted.recover_interrupted(created_before=unlogged.created_at - timedelta(seconds=1))
        statuses = {m.id: m.status for m in await restarted.list_messages("u1", conv.id) or []}
        assert statuses[leased.id] is MessageStatus.STREAMING
        assert statuses[lapsed.id] is MessageStatus.INTERRUPTED  # a lapsed lease is a dead writer, whatever its age
        assert statuses[unlogged.id] is MessageStatus.STREAMING  # no log yet, and too young to tell
        await restarted.recover_interrupted(created_before=unlogged.created_at)  # the later sweep: old enough now
        statuses = {m.id: m.status for m in await restarted.list_messages("u1", conv.id) or []}
        assert statuses[leased.id] is MessageStatus.STREAMING
        assert statuses[unlogged.id] is MessageStatus.INTERRUPTED
        await store.end_stream("u1", conv.id, leased.id, expire_seconds=60)  # an ended log holds no lease
        await restarted.recover_interrupted()
        statuses = {m.id: m.status for m in await restarted.list_messages("u1", conv.id) or []}
        assert statuses[leased.id] is MessageStatus.INTERRUPTED
    finally:
        await restarted.close()


# -- conversations -----------------------------------------------------------------------------------------------
async def test_create_and_get_conversation(store: Store) -> None:
    before = datetime.now(UTC)
    conv = await store.create_conversation(
        "u1", NewConversation(title="제목", persona="tutor", model="local", meta={"vars": {"level": 3}})
    )
    assert re.fullmatch(r"[0-9a-f]{28}", conv.id)
    assert conv.user_id == "u1" and conv.kind == "chat"
    assert _aware_utc(conv.created_at) and conv.created_at >= before - timedelta(seconds=1)
    got = await store.get_conversation("u1", conv.id)
    assert got == conv
    assert dict(got.meta) == {"vars": {"level": 3}}
    assert got.created_at == got.updated_at


async def test_ids_sort_by_creation_time_and_do_not_repeat(store: Store) -> None:
    first = await store.create_conversation("u1")
    await asyncio.sleep(0.002)
    second = await store.create_conversation("u1")
    assert first.id < second.id
    ids = {(await store.create_conversation("u1")).id for _ in range(20)}
    assert len(ids) == 20


async def test_another_users_conversation_behaves_as_missing(store: Store) -> None:
    conv = await store.create_conversation("alice", NewConversation(title="secret"))
    msg = await store.append_message("alice", conv.id, NewMessage(role="user", content="hello"))
    assert await store.get_conversation("bob", conv.id) is None
    assert await store.get_conversation("bob", "nope") is None
    assert await store.list_messages("bob", conv.id) is None
    assert await store.list_messages("bob", "nope") is None
    assert await store.rename_conversation("bob", conv.id, "mine") is False
    assert await store.update_conversation("bob", conv.id, meta={"x": 1}) is False
    assert await store.delete_conversation("bob", conv.id) is False
    assert await store.update_message("bob", msg.id, MessageChange(content="changed")) is None
    assert await store.delete_messages_from("bob", conv.id, msg.id) == 0
    with pytest.raises(NotFound):
        await store.append_message("bob", conv.id, NewMessage(role="user", content="intrusion"))
    with pytest.raises(NotFound):
        await store.begin_turn("bob", conv.id, NewTurn(user_content="intrusion", reply_model=None))
    assert await store.list_conversations("bob") == []
    # ... and nothing of alice's changed.
    got = await store.get_conversation("alice", conv.id)
    assert got is not None and got.title == "secret" and dict(got.meta) == {}
    messages = await store.list_messages("alice", conv.id)
    assert messages is not None and [m.content for m in messages] == ["hello"]


async def test_list_conversations_newest_updated_first(store: Store) -> None:
    a = await store.create_conversation("u1", NewConversation(title="a"))
    b = await store.create_conversation("u1", NewConversation(title="b"))
    c = await store.create_conversation("u1", NewConversation(title="c"))
    await store.create_conversation("u2", NewConversation(title="other user's"))
    assert [x.id for x in await store.list_conversations("u1")] == [c.id, b.id, a.id]
    await store.append_message("u1", a.id, NewMessage(role="user", content="bump"))  # a message makes it the newest
    listed = await store.list_conversations("u1")
    assert [x.id for x in listed] == [a.id, c.id, b.id]
    assert listed[0].updated_at > listed[1].updated_at


async def test_list_conversations_kind_filter(store: Store) -> None:
    chat = await store.create_conversation("u1", NewConversation(title="chat"))
    api = await store.create_conversation("u1", NewConversation(title="api", kind="api"))
    assert [x.id for x in await store.list_conversations("u1")] == [chat.id]
    assert [x.id for x in await store.list_conversations("u1", ConversationQuery(kind="api"))] == [api.id]
    assert {x.id for x in await store.list_conversations("u1", ConversationQuery(kind=None))} == {chat.id, api.id}


async def test_list_conversations_title_search(store: Store) -> None:
    korean = await store.create_conversation("u1", NewConversation(title="파이썬 질문 모음"))
    english = await store.create_conversation("u1", NewConversation(title="Python Questions"))
    german = await store.create_conversation("u1", NewConversation(title="ÜBER straße"))
    percent = await store.create_conversation("u1", NewConversation(title="100% done"))
    await store.create_conversation("u2", NewConversation(title="python too, but not yours"))

    async def search(q: str) -> set[str]:
        return {x.id for x in await store.list_conversations("u1", ConversationQuery(title=q))}

    assert await search("질문") == {korean.id}
    assert await search("python") == {english.id}
    assert await search("QUESTIONS") == {english.id}
    assert await search("über") == {german.id}
    assert await search("%") == {percent.id}  # wildcards in a query are plain text
    assert await search("_") == set()
    assert await search("nothing like it") == set()


async def test_list_conversations_pages_by_before(store: Store) -> None:
    made = [await store.create_conversation("u1", NewConversation(title=f"c{i}")) for i in range(7)]
    newest_first = [c.id for c in reversed(made)]
    seen: list[str] = []
    before = None
    while True:
        page = await store.list_conversations("u1", ConversationQuery(limit=3, before=before))
        if not page:
            break
        assert len(page) <= 3
        seen.extend(c.id for c in page)
        before = page[-1].updated_at
    assert seen == newest_first
    assert len(await store.list_conversations("u1", ConversationQuery(limit=2))) == 2


async def test_rename_and_update_conversation(store: Store) -> None:
    conv = await store.create_conversation("u1", NewConversation(title="old", meta={"a": 1, "b": 2}))
    assert await store.rename_conversation("u1", conv.id, "새 제목") is True
    assert await store.update_conversation("u1", conv.id, meta={"b": 3, "summary": "요약"}) is True
    got = await store.get_conversation("u1", conv.id)
    assert got is not None
    assert got.title == "새 제목"
    assert dict(got.meta) == {"a": 1, "b": 3, "summary": "요약"}
    assert [c.id for c in await store.list_conversations("u1", ConversationQuery(title="새"))] == [conv.id]
    assert await store.rename_conversation("u1", "missing", "x") is False
    assert await store.update_conversation("u1", "missing", meta={"x": 1}) is False


async def test_delete_conversation_deletes_messages_but_keeps_usage(store: Store) -> None:
    conv = await store.create_conversation("u1")
    _, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content="hi", reply_model="m"))
    await store.finish_turn(
        "u1",
        reply.id,
        TurnResult(
            content="hello",
            status=MessageStatus.COMPLETE,
            model="m",
            meta=None,
            usage=_usage("u1", "m", 10, 5, conversation_id=conv.id, message_id=reply.id),
        ),
    )
    assert await store.delete_conversation("u1", conv.id) is True
    assert await store.get_conversation("u1", conv.id) is None
    assert await store.list_messages("u1", conv.id) is None
    assert await store.update_message("u1", reply.id, MessageChange(content="ghost")) is None
    assert await store.list_conversations("u1") == []
    assert await store.delete_conversation("u1", conv.id) is False
    totals = await store.usage_totals(user_id="u1")
    assert [(t.model, t.turns, t.total_tokens) for t in totals] == [("m", 1, 15)]


# -- messages ----------------------------------------------------------------------------------------------------
async def test_append_and_list_messages(store: Store) -> None:
    conv = await store.create_conversation("u1")
    system = await store.append_message("u1", conv.id, NewMessage(role="system", content="be brief"))
    user = await store.append_message("u1", conv.id, NewMessage(role="user", content="안녕하세요", meta={"ip": "x"}))
    reply = await store.append_message("u1", conv.id, NewMessage(role="assistant", content="네", model="local/qwen"))
    assert user.conversation_id == conv.id and user.role == "user" and user.status is MessageStatus.COMPLETE
    assert _aware_utc(user.created_at)
    assert reply.model == "local/qwen"
    messages = await store.list_messages("u1", conv.id)
    assert messages == [system, user, reply]
    assert dict(messages[1].meta) == {"ip": "x"}
    assert await store.list_messages("u1", conv.id, limit=2) == [user, reply]
    assert await store.list_messages("u1", conv.id, limit=10) == [system, user, reply]
    empty = await store.create_conversation("u1")
    assert await store.list_messages("u1", empty.id) == []
    with pytest.raises(NotFound):
        await store.append_message("u1", "missing", NewMessage(role="user", content="x"))


async def _numbered(
    store: Store, user_id: str, conversation_id: str, count: int, start: int = 0
) -> list[StoredMessage]:
    return [
        await store.append_message(
            user_id, conversation_id, NewMessage(role=("user", "assistant")[i % 2], content=f"m{i}")
        )
        for i in range(start, start + count)
    ]


async def test_message_pages_join_to_the_whole_history(store: Store) -> None:
    conv = await store.create_conversation("u1")
    written = await _numbered(store, "u1", conv.id, 23)  # appended within a few milliseconds: order is by sequence
    for size in (1, 2, 5, 7, 22, 23, 24, 500):
        pages: list[list[StoredMessage]] = []
        before: str | None = None
        while True:  # backwards from the latest, as the API and the web page read it
            page = await store.list_messages("u1", conv.id, limit=size, before=before)
            assert page is not None
            if not page:
                break
            pages.insert(0, page)
            before = page[0].id
        assert [m for page in pages for m in page] == written, size  # no gap, no repeat, oldest first
        assert [len(page) for page in pages[1:]] == [size] * (len(pages) - 1)  # only the oldest page is short


async def test_a_long_history_lists_whole_and_by_pages(store: Store) -> None:
    conv = await store.create_conversation("u1")
    written = await _numbered(store, "u1", conv.id, 1_234)
    assert await store.list_messages("u1", conv.id) == written
    assert await store.list_messages("u1", conv.id, limit=1_000) == written[-1_000:]
    assert await store.list_messages("u1", conv.id, limit=600, before=written[1_100].id) == written[500:1_100]
    assert await store.list_messages("u1", conv.id, before=written[1_001].id) == written[:1_001]


async def test_message_pages_by_cursor_and_limit(store: Store) -> None:
    conv = await store.create_conversation("u1")
    written = await _numbered(store, "u1", conv.id, 12)
    cursor = written[8].id
    assert await store.list_messages("u1", conv.id, before=cursor) == written[:8]  # no limit: everything older
    assert await store.list_messages("u1", conv.id, limit=3, before=cursor) == written[5:8]
    assert await store.list_messages("u1", conv.id, limit=1, before=cursor) == [written[7]]
    assert await store.list_messages("u1", conv.id, limit=8, before=cursor) == written[:8]
    assert await store.list_messages("u1", conv.id, limit=9, before=cursor) == written[:8]
    assert await store.list_messages("u1", conv.id, limit=0, before=cursor) == []
    assert await store.list_messages("u1", conv.id, limit=-4, before=cursor) == []
    assert await store.list_messages("u1", conv.id, limit=5, before=written[0].id) == []  # the start of the history
    assert await store.list_messages("u1", conv.id, before=written[0].id) == []
    assert await store.list_messages("u1", conv.id, limit=2, before=written[1].id) == [written[0]]
    assert await store.list_messages("u1", conv.id, limit=-1) == []

    # A cursor is a message, not an offset: new messages and a regenerated last reply move no page.
    latest = await store.list_messages("u1", conv.id, limit=4)
    assert latest == written[8:]
    more = await _numbered(store, "u1", conv.id, 3, start=12)
    await store.delete_messages_from("u1", conv.id, more[-1].id)
    assert await store.list_messages("u1", conv.id, limit=4, before=latest[0].id) == written[4:8]
    assert await store.list_messages("u1", conv.id, limit=4, before=more[0].id) == written[-4:]


async def test_message_pages_refuse_a_cursor_from_elsewhere(store: Store) -> None:
    conv = await store.create_conversation("u1")
    mine = await _numbered(store, "u1", conv.id, 3)
    sibling = await store.create_conversation("u1")
    [theirs] = await _numbered(store, "u1", sibling.id, 1)
    foreign = await store.create_conversation("u2")
    [bobs] = await _numbered(store, "u2", foreign.id, 1)
    await store.delete_messages_from("u1", conv.id, mine[2].id)
    # Unknown, in another conversation of the same user, in someone else's, deleted, empty: one error, naming the
    # parameter (an empty page would look like the start of the history).
    for before in ("nope", theirs.id, bobs.id, mine[2].id, ""):
        for limit in (None, 0, 5):
            with pytest.raises(InvalidRequest) as caught:
                await store.list_messages("u1", conv.id, limit=limit, before=before)
            assert caught.value.param == "before", (before, limit)
            assert caught.value.status == 400
    # Not the user's conversation: None whatever the cursor, exactly as without one.
    assert await store.list_messages("u2", conv.id, limit=5, before=mine[1].id) is None
    assert await store.list_messages("u2", conv.id, before="nope") is None
    assert await store.list_messages("u1", "missing", limit=5, before=mine[1].id) is None
    assert await store.list_messages("u1", foreign.id, before=bobs.id) is None
    assert await store.list_messages("u1", conv.id, limit=5, before=mine[1].id) == [mine[0]]


async def test_every_status_round_trips(store: Store) -> None:
    conv = await store.create_conversation("u1")
    for status in MessageStatus:
        await store.append_message("u1", conv.id, NewMessage(role="assistant", content=status.value, status=status))
    messages = await store.list_messages("u1", conv.id)
    assert messages is not None
    assert [(m.content, m.status) for m in messages] == [(s.value, s) for s in MessageStatus]
    assert all(isinstance(m.status, MessageStatus) for m in messages)


async def test_update_message(store: Store) -> None:
    conv = await store.create_conversation("u1")
    msg = await store.append_message(
        "u1", conv.id, NewMessage(role="assistant", content="", status=MessageStatus.STREAMING, meta={"a": 1})
    )
    updated = await store.update_message("u1", msg.id, MessageChange(content="partial"))
    assert updated is not None and updated.content == "partial" and updated.status is MessageStatus.STREAMING
    final = await store.update_message(
        "u1", msg.id, MessageChange(content="done", status=MessageStatus.COMPLETE, model="m", meta={"b": 2})
    )
    assert final is not None
    assert (final.content, final.status, final.model, dict(final.meta)) == (
        "done",
        MessageStatus.COMPLETE,
        "m",
        {
            "a": 1,
            "b": 2,
        },
    )
    assert final.id == msg.id and final.created_at == msg.created_at
    assert await store.list_messages("u1", conv.id) == [final]
    assert await store.update_message("u1", "missing", MessageChange(content="x")) is None


async def test_delete_messages_from(store: Store) -> None:
    conv = await store.create_conversation("u1")
    other = await store.create_conversation("u1")
    msgs = [await store.append_message("u1", conv.id, NewMessage(role="user", content=str(i))) for i in range(5)]
    foreign = await store.append_message("u1", other.id, NewMessage(role="user", content="elsewhere"))
    assert await store.delete_messages_from("u1", conv.id, foreign.id) == 0  # not in this conversation
    assert await store.delete_messages_from("u1", conv.id, "missing") == 0
    assert await store.delete_messages_from("u1", conv.id, msgs[2].id) == 3
    remaining = await store.list_messages("u1", conv.id)
    assert remaining is not None and [m.content for m in remaining] == ["0", "1"]
    again = await store.append_message("u1", conv.id, NewMessage(role="user", content="edited"))
    remaining = await store.list_messages("u1", conv.id)
    assert remaining is not None and [m.id for m in remaining] == [msgs[0].id, msgs[1].id, again.id]
    assert await store.list_messages("u1", other.id) == [foreign]


async def test_begin_and_finish_turn(store: Store) -> None:
    conv = await store.create_conversation("u1", NewConversation(title="t"))
    older = await store.create_conversation("u1", NewConversation(title="newer until the turn"))
    user_msg, reply = await store.begin_turn(
        "u1", conv.id, NewTurn(user_content="질문", user_meta={"lang": "ko"}, reply_model="local")
    )
    assert user_msg is not None
    assert (user_msg.role, user_msg.content, user_msg.status) == ("user", "질문", MessageStatus.COMPLETE)
    assert dict(user_msg.meta) == {"lang": "ko"}
    assert (reply.role, reply.content, reply.status, reply.model) == (
        "assistant",
        "",
        MessageStatus.STREAMING,
        "local",
    )
    assert [c.id for c in await store.list_conversations("u1")] == [conv.id, older.id]

    finished = await store.finish_turn(
        "u1",
        reply.id,
        TurnResult(
            content="답변",
            status=MessageStatus.COMPLETE,
            model="local/qwen",
            meta={"finish_reason": "stop"},
            usage=_usage("u1", "local/qwen", 7, 3, conversation_id=conv.id, message_id=reply.id),
        ),
    )
    assert finished is not None
    assert (finished.content, finished.status, finished.model) == ("답변", MessageStatus.COMPLETE, "local/qwen")
    assert dict(finished.meta) == {"finish_reason": "stop"}
    assert await store.list_messages("u1", conv.id) == [user_msg, finished]
    assert await store.tokens_used_since("u1", datetime.now(UTC) - timedelta(minutes=1)) == 10


async def test_begin_turn_without_user_message_and_blocked_user_message(store: Store) -> None:
    conv = await store.create_conversation("u1")
    none_msg, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content=None, reply_model=None))
    assert none_msg is None and reply.model is None
    blocked, _ = await store.begin_turn(
        "u1", conv.id, NewTurn(user_content="bad", user_status=MessageStatus.BLOCKED, reply_model="m")
    )
    assert blocked is not None and blocked.status is MessageStatus.BLOCKED
    messages = await store.list_messages("u1", conv.id)
    assert messages is not None
    assert [(m.role, m.status) for m in messages] == [
        ("assistant", MessageStatus.STREAMING),
        ("user", MessageStatus.BLOCKED),
        ("assistant", MessageStatus.STREAMING),
    ]


async def test_begin_turn_on_a_missing_conversation_stores_nothing(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.begin_turn("u1", "missing", NewTurn(user_content="x", reply_model="m"))
    assert await store.list_conversations("u1", ConversationQuery(kind=None)) == []


async def test_create_conversation_with_turn(store: Store) -> None:
    older = await store.create_conversation("u1", NewConversation(title="older"))
    conv, user_msg, reply = await store.create_conversation_with_turn(
        "u1",
        NewConversation(
            title="첫 질문", persona="tutor", model="local", meta={"variables": {"level": 2}, "auto_title": True}
        ),
        NewTurn(user_content="첫 질문입니다", user_meta={"lang": "ko"}, reply_model="local/qwen"),
    )
    assert re.fullmatch(r"[0-9a-f]{28}", conv.id) and _aware_utc(conv.created_at)
    assert (conv.user_id, conv.title, conv.persona, conv.model, conv.kind) == (
        "u1",
        "첫 질문",
        "tutor",
        "local",
        "chat",
    )
    assert await store.get_conversation("u1", conv.id) == conv
    assert await store.get_conversation("u2", conv.id) is None
    assert user_msg is not None and user_msg.conversation_id == conv.id == reply.conversation_id
    assert (user_msg.role, user_msg.content, user_msg.status) == ("user", "첫 질문입니다", MessageStatus.COMPLETE)
    assert dict(user_msg.meta) == {"lang": "ko"}
    assert (reply.role, reply.content, reply.status, reply.model) == (
        "assistant",
        "",
        MessageStatus.STREAMING,
        "local/qwen",
    )
    assert await store.list_messages("u1", conv.id) == [user_msg, reply]
    assert [c.id for c in await store.list_conversations("u1")] == [conv.id, older.id]

    # The rest of the turn and the next ones go on as in any conversation.
    finished = await store.finish_turn(
        "u1",
        reply.id,
        TurnResult(
            content="답",
            status=MessageStatus.COMPLETE,
            model="local/qwen",
            meta={"finish_reason": "stop"},
            usage=_usage("u1", "local/qwen", 5, 1, conversation_id=conv.id, message_id=reply.id),
        ),
    )
    assert finished is not None and finished.status is MessageStatus.COMPLETE
    second, second_reply = await store.begin_turn("u1", conv.id, NewTurn(user_content="또", reply_model="local"))
    messages = await store.list_messages("u1", conv.id)
    assert messages == [user_msg, finished, second, second_reply]
    assert await store.tokens_used_since("u1", datetime.now(UTC) - timedelta(minutes=1)) == 6


async def test_create_conversation_with_turn_api_log_without_or_with_blocked_input(store: Store) -> None:
    api, none_msg, reply = await store.create_conversation_with_turn(
        "u1", NewConversation(title="v1", model="m", kind="api"), NewTurn(user_content=None, reply_model="m")
    )
    assert none_msg is None and api.kind == "api" and dict(api.meta) == {}
    assert await store.list_messages("u1", api.id) == [reply]
    assert [c.id for c in await store.list_conversations("u1", ConversationQuery(kind="api"))] == [api.id]
    assert await store.list_conversations("u1") == []  # kind "chat" only

    _, blocked, _ = await store.create_conversation_with_turn(
        "u1", NewConversation(), NewTurn(user_content="bad", user_status=MessageStatus.BLOCKED, reply_model="m")
    )
    assert blocked is not None and blocked.status is MessageStatus.BLOCKED


async def test_create_conversation_with_turn_is_all_or_nothing(store: Store) -> None:
    with pytest.raises(TypeError):  # meta that cannot be stored fails the turn after the conversation was built
        await store.create_conversation_with_turn(
            "u1",
            NewConversation(title="never"),
            NewTurn(user_content="x", user_meta={"bad": object()}, reply_model="m"),
        )
    assert await store.list_conversations("u1", ConversationQuery(kind=None)) == []


async def test_reply_of_a_new_conversation_is_repaired_after_a_crash(store: Store, store_factory: StoreFactory) -> None:
    conv, _, reply = await store.create_conversation_with_turn(
        "u1", NewConversation(), NewTurn(user_content="q", reply_model="m")
    )
    await store.update_message("u1", reply.id, MessageChange(content="half"))
    restarted = store_factory()
    await restarted.open()
    try:
        await restarted.recover_interrupted()
        messages = await restarted.list_messages("u1", conv.id)
    finally:
        await restarted.close()
    assert messages is not None and [(m.content, m.status) for m in messages] == [
        ("q", MessageStatus.COMPLETE),
        ("half", MessageStatus.INTERRUPTED),
    ]


async def test_concurrent_new_conversations_each_get_their_own_turn(store: Store) -> None:
    async def start(i: int) -> tuple[str, str, str]:
        conv, _, reply = await store.create_conversation_with_turn(
            "u1", NewConversation(title=f"t{i}", kind="api"), NewTurn(user_content=f"q{i}", reply_model="m")
        )
        return conv.id, f"q{i}", reply.id

    started = await asyncio.gather(*(start(i) for i in range(20)))
    assert len({conv_id for conv_id, _, _ in started}) == 20
    for conv_id, question, reply_id in started:
        messages = await store.list_messages("u1", conv_id)
        assert messages is not None
        assert [(m.role, m.content) for m in messages] == [("user", question), ("assistant", "")]
        assert messages[1].id == reply_id


async def test_the_default_create_conversation_with_turn_composes_the_primitives(store: Store) -> None:
    # What a third-party backend gets without overriding it: the same results, in two steps.
    conv, user_msg, reply = await Store.create_conversation_with_turn(
        store, "u1", NewConversation(title="plugin", kind="api"), NewTurn(user_content="q", reply_model="m")
    )
    got = await store.get_conversation("u1", conv.id)
    assert got is not None and (got.title, got.kind, got.created_at) == ("plugin", "api", conv.created_at)
    assert await store.list_messages("u1", conv.id) == [user_msg, reply]
    assert reply.status is MessageStatus.STREAMING


async def test_finish_turn_records_usage_even_when_the_reply_is_gone(store: Store) -> None:
    conv = await store.create_conversation("u1")
    _, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content="x", reply_model="m"))
    await store.delete_conversation("u1", conv.id)  # deleted while the reply streamed
    result = await store.finish_turn(
        "u1",
        reply.id,
        TurnResult(
            content="late",
            status=MessageStatus.INTERRUPTED,
            model="m",
            meta=None,
            usage=_usage("u1", "m", 4, 4, outcome=Outcome.INTERRUPTED),
        ),
    )
    assert result is None
    assert await store.tokens_used_since("u1", datetime.now(UTC) - timedelta(minutes=1)) == 8


async def test_finish_turn_merges_user_meta_into_the_users_message(store: Store) -> None:
    """A turn's contributors' meta (e.g. its mood) reaches the user's message in the finish write, with or without
    usage."""
    conv = await store.create_conversation("u1")
    new = NewTurn(user_content="x", reply_model="m", user_meta={"lang": "ko"})
    user_msg, reply = await store.begin_turn("u1", conv.id, new)
    assert user_msg is not None
    mood = {"label": "positive", "confidence": 0.9}
    done = await store.finish_turn(
        "u1",
        reply.id,
        TurnResult(
            content="y",
            status=MessageStatus.COMPLETE,
            usage=_usage("u1", "m", 1, 1, conversation_id=conv.id, message_id=reply.id),
            user_message_id=user_msg.id,
            user_meta={"mood": mood},
        ),
    )
    assert done is not None and done.content == "y"
    stored = await store.list_messages("u1", conv.id) or []
    assert [dict(m.meta) for m in stored] == [{"lang": "ko", "mood": mood}, {}]
    assert await store.tokens_used_since("u1", datetime.now(UTC) - timedelta(minutes=1)) == 2

    user2, reply2 = await store.begin_turn("u1", conv.id, NewTurn(user_content="z", reply_model="m"))
    assert user2 is not None
    await store.finish_turn(
        "u1",
        reply2.id,
        TurnResult(content="w", status=MessageStatus.COMPLETE, user_message_id=user2.id, user_meta={"mood": "n"}),
    )
    stored = await store.list_messages("u1", conv.id) or []
    assert stored[2].meta == {"mood": "n"} and stored[3].content == "w"


async def test_finish_turn_without_usage(store: Store) -> None:
    conv = await store.create_conversation("u1")
    _, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content="x", reply_model="m"))
    done = await store.finish_turn(
        "u1", reply.id, TurnResult(content="blocked", status=MessageStatus.BLOCKED, model=None, meta=None, usage=None)
    )
    assert done is not None and done.status is MessageStatus.BLOCKED and done.model == "m"
    assert await store.usage_totals() == []


async def test_concurrent_appends_lose_nothing_and_keep_order(store: Store) -> None:
    conv = await store.create_conversation("u1")
    writers, per_writer = 8, 15

    async def writer(w: int) -> None:
        for i in range(per_writer):
            await store.append_message("u1", conv.id, NewMessage(role="user", content=f"{w}:{i}"))

    await asyncio.gather(*(writer(w) for w in range(writers)))
    messages = await store.list_messages("u1", conv.id)
    assert messages is not None
    assert len(messages) == writers * per_writer
    assert len({m.id for m in messages}) == writers * per_writer
    for w in range(writers):  # each writer's messages appear in the order it wrote them
        mine = [int(m.content.split(":")[1]) for m in messages if m.content.startswith(f"{w}:")]
        assert mine == list(range(per_writer))


async def test_concurrent_turns_stay_paired(store: Store) -> None:
    conv = await store.create_conversation("u1")

    async def turn(i: int) -> None:
        _, reply = await store.begin_turn("u1", conv.id, NewTurn(user_content=f"q{i}", reply_model="m"))
        await store.finish_turn(
            "u1",
            reply.id,
            TurnResult(
                content=f"a{i}", status=MessageStatus.COMPLETE, model="m", meta=None, usage=_usage("u1", "m", 1, 1)
            ),
        )

    await asyncio.gather(*(turn(i) for i in range(20)))
    messages = await store.list_messages("u1", conv.id)
    assert messages is not None and len(messages) == 40
    # begin_turn is atomic: each question is directly followed by its own reply.
    pairs = [(messages[k].content, messages[k + 1].content) for k in range(0, 40, 2)]
    assert sorted(pairs) == sorted((f"q{i}", f"a{i}") for i in range(20))
    assert await store.tokens_used_since("u1", datetime.now(UTC) - timedelta(minutes=1)) == 40


# -- accounts ----------------------------------------------------------------------------------------------------
async def test_users(store: Store) -> None:
    admin = await store.create_user("admin", password_hash="$argon2$x", is_admin=True)
    guest = await store.create_user("손님-1", password_hash=None, anonymous=True)
    assert admin.is_admin and not admin.anonymous and _aware_utc(admin.created_at)
    assert guest.anonymous and not guest.is_admin
    with pytest.raises(Conflict):
        await store.create_user("admin", password_hash=None)

    record = await store.get_user(admin.id)
    assert record is not None and record.user == admin and record.password_hash == "$argon2$x"
    by_name = await store.get_user_by_name("손님-1")
    assert by_name is not None and by_name.user == guest and by_name.password_hash is None
    assert await store.get_user("missing") is None
    assert await store.get_user_by_name("nobody") is None
    assert await store.list_users() == [admin, guest]

    assert await store.set_password_hash(guest.id, "$argon2$y") is True
    updated = await store.get_user(guest.id)
    assert updated is not None and updated.password_hash == "$argon2$y"
    assert await store.set_password_hash("missing", "h") is False


async def test_api_keys(store: Store) -> None:
    alice = await store.create_user("alice", password_hash=None)
    bob = await store.create_user("bob", password_hash=None)
    key = await store.create_api_key(alice.id, name="laptop", prefix="dh-abc", key_hash="h1")
    other = await store.create_api_key(bob.id, name="ci", prefix="dh-def", key_hash="h2")
    assert isinstance(key, ApiKeyRecord) and key.last_used_at is None and key.revoked_at is None
    assert _aware_utc(key.created_at)
    with pytest.raises(Conflict):
        await store.create_api_key(bob.id, name="dup", prefix="dh-xyz", key_hash="h1")

    found = await store.find_api_key("h1")
    assert found is not None and (found.id, found.user_id, found.name, found.prefix) == (
        key.id,
        alice.id,
        "laptop",
        "dh-abc",
    )
    assert _aware_utc(found.last_used_at)
    listed = await store.list_api_keys(alice.id)
    assert [k.id for k in listed] == [key.id] and listed[0].last_used_at == found.last_used_at
    assert await store.find_api_key("unknown") is None
    assert [k.id for k in await store.list_api_keys()] == [key.id, other.id]

    assert await store.revoke_api_key(key.id, user_id=bob.id) is False  # not bob's key
    assert (await store.find_api_key("h1")).revoked_at is None  # type: ignore[union-attr]
    assert await store.revoke_api_key(key.id, user_id=alice.id) is True
    revoked = await store.find_api_key("h1")
    assert revoked is not None and _aware_utc(revoked.revoked_at)  # still found: the caller decides
    assert await store.revoke_api_key(other.id) is True  # an admin revokes without naming the user
    assert await store.revoke_api_key("missing") is False
    assert all(k.revoked_at is not None for k in await store.list_api_keys())


async def test_sessions(store: Store) -> None:
    expires = datetime.now(UTC) + timedelta(hours=1)
    await store.create_session("tok-hash", SessionRecord(user_id="u1", csrf_token="csrf", expires_at=expires))
    got = await store.get_session("tok-hash")
    assert got is not None and (got.user_id, got.csrf_token) == ("u1", "csrf")
    assert got.expires_at == expires and _aware_utc(got.expires_at)
    assert await store.get_session("other") is None
    await store.delete_session("tok-hash")
    assert await store.get_session("tok-hash") is None
    await store.delete_session("tok-hash")  # deleting twice is fine


async def test_expired_sessions_are_not_returned(store: Store) -> None:
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.create_session("old", SessionRecord(user_id="u1", csrf_token="c", expires_at=past))
    assert await store.get_session("old") is None
    soon = datetime.now(UTC) + timedelta(milliseconds=300)
    await store.create_session("soon", SessionRecord(user_id="u1", csrf_token="c", expires_at=soon))
    assert await store.get_session("soon") is not None
    await asyncio.sleep(0.4)
    assert await store.get_session("soon") is None


async def test_delete_user_sessions_ends_all_of_a_users_sessions_but_the_kept_one(store: Store) -> None:
    later = datetime.now(UTC) + timedelta(hours=1)
    await store.create_session("a1", SessionRecord(user_id="alice", csrf_token="c1", expires_at=later))
    await store.create_session("a2", SessionRecord(user_id="alice", csrf_token="c2", expires_at=later))
    await store.create_session("link", SessionRecord(user_id="alice", csrf_token="", expires_at=later))  # login link
    await store.create_session("b1", SessionRecord(user_id="bob", csrf_token="c", expires_at=later))
    await store.create_session("gone", SessionRecord(user_id="alice", csrf_token="c", expires_at=later))
    await store.delete_session("gone")
    past = datetime.now(UTC) - timedelta(seconds=1)
    await store.create_session("expired", SessionRecord(user_id="alice", csrf_token="c", expires_at=past))

    assert await store.delete_user_sessions("alice", keep="a1") == 2  # a2 and the link; not the deleted or expired
    assert await store.get_session("a1") is not None
    assert await store.get_session("a2") is None and await store.get_session("link") is None
    assert await store.get_session("b1") is not None  # another user's session is untouched

    # Sessions made afterwards are reached as well; without ``keep`` none stays.
    await store.create_session("a3", SessionRecord(user_id="alice", csrf_token="c3", expires_at=later))
    assert await store.delete_user_sessions("alice") == 2
    assert await store.get_session("a1") is None and await store.get_session("a3") is None
    assert await store.delete_user_sessions("alice") == 0
    assert await store.delete_user_sessions("nobody") == 0
    assert await store.get_session("b1") is not None
    await store.create_session("a4", SessionRecord(user_id="alice", csrf_token="c4", expires_at=later))
    assert await store.get_session("a4") is not None  # and alice can log in again


# -- usage -------------------------------------------------------------------------------------------------------
async def test_usage_totals_per_user_and_model(store: Store) -> None:
    alice = await store.create_user("alice", password_hash=None)
    now = datetime.now(UTC)
    day_ago = now - timedelta(days=1)
    await store.record_usage(_usage(alice.id, "local", 10, 20, cost=0.5, created_at=day_ago))
    await store.record_usage(_usage(alice.id, "local", 1, 2, cost=None, created_at=now))
    await store.record_usage(_usage(alice.id, "openai/gpt-4o-mini", 100, 50, cost=0.25, created_at=now))
    await store.record_usage(_usage("ghost", "local", 5, 5, source="v1", created_at=now))  # no such user

    totals = {(t.user_id, t.model): t for t in await store.usage_totals()}
    assert set(totals) == {(alice.id, "local"), (alice.id, "openai/gpt-4o-mini"), ("ghost", "local")}
    local = totals[(alice.id, "local")]
    assert (local.user_name, local.turns, local.prompt_tokens, local.completion_tokens) == ("alice", 2, 11, 22)
    assert local.cost == pytest.approx(0.5) and local.total_tokens == 33
    assert totals[("ghost", "local")].user_name is None

    recent = {(t.user_id, t.model): t for t in await store.usage_totals(since=now - timedelta(hours=1))}
    assert recent[(alice.id, "local")].turns == 1 and recent[(alice.id, "local")].total_tokens == 3
    assert recent[(alice.id, "local")].cost == 0.0
    only_alice = await store.usage_totals(user_id=alice.id, since=now - timedelta(hours=1))
    assert {t.model for t in only_alice} == {"local", "openai/gpt-4o-mini"}
    assert await store.usage_totals(since=now + timedelta(hours=1)) == []


async def test_since_is_inclusive(store: Store) -> None:
    at = datetime(2030, 1, 2, 3, 4, 5, 678901, tzinfo=UTC)
    await store.record_usage(_usage("u1", "m", 1, 1, created_at=at))
    assert await store.tokens_used_since("u1", at) == 2
    assert await store.tokens_used_since("u1", at + timedelta(microseconds=1)) == 0
    assert len(await store.usage_totals(since=at)) == 1


async def test_tokens_used_since(store: Store) -> None:
    now = datetime.now(UTC)
    await store.record_usage(_usage("u1", "a", 100, 100, created_at=now - timedelta(days=2)))
    await store.record_usage(_usage("u1", "a", 3, 4, created_at=now - timedelta(hours=2)))
    await store.record_usage(_usage("u1", "b", 5, 6, created_at=now))
    await store.record_usage(_usage("u2", "a", 1000, 1000, created_at=now))
    midnight = now - timedelta(hours=12)
    assert await store.tokens_used_since("u1", midnight) == 18
    assert await store.tokens_used_since("u1", now - timedelta(days=3)) == 218
    assert await store.tokens_used_since("nobody", midnight) == 0


# -- the factory -------------------------------------------------------------------------------------------------
def test_open_store_picks_the_backend_from_the_url(tmp_path: Path) -> None:
    from daehwa.stores.sqlite import SQLiteStore

    absolute = open_store(f"sqlite:///{tmp_path}/a.db")
    assert isinstance(absolute, SQLiteStore) and absolute.path == f"{tmp_path}/a.db"
    relative = open_store("sqlite:///rel/b.db")
    assert isinstance(relative, SQLiteStore) and relative.path == "rel/b.db"
    from daehwa.stores.memory import MemoryStore
    from daehwa.stores.redis import RedisStore

    assert isinstance(open_store("memory://"), MemoryStore)
    assert open_store("memory://").name != open_store("memory://").name  # a fresh database each
    assert open_store("memory://t1").name == "t1"
    cluster = open_store("redis+cluster://127.0.0.1:7000")
    assert isinstance(cluster, RedisStore) and cluster.cluster
    assert not open_store("redis://127.0.0.1:6379/0").cluster  # type: ignore[attr-defined]


async def test_memory_stores_are_apart_and_forget_when_the_last_one_closes() -> None:
    from daehwa.stores.memory import MemoryStore

    first, other = MemoryStore("forget-test"), MemoryStore()
    await first.open()
    await other.open()
    conv = await first.create_conversation("u1", NewConversation(title="t"))
    assert await other.get_conversation("u1", conv.id) is None  # another name, another database
    await other.close()
    await first.close()
    again = MemoryStore("forget-test")
    await again.open()
    try:
        assert await again.get_conversation("u1", conv.id) is None  # nothing survives the last close
    finally:
        await again.close()


def test_memory_and_cluster_urls_are_checked() -> None:
    from daehwa.stores.redis.connection import connect

    with pytest.raises(ConfigError, match="memory store name"):
        open_store("memory://no spaces")
    with pytest.raises(ConfigError, match="database 0"):
        connect("redis+cluster://127.0.0.1:7000/2")


@pytest.mark.parametrize("url", ["", "daehwa.db", "mysql://localhost/db", "sqlite:///", "http://x"])
def test_open_store_rejects_bad_urls(url: str) -> None:
    with pytest.raises(ConfigError, match="DAEHWA_DATABASE_URL"):
        open_store(url)


def test_bad_url_error_does_not_show_the_password() -> None:
    with pytest.raises(ConfigError) as info:
        open_store("mysql://admin:hunter2@db.example/chat")
    assert "hunter2" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "driver", "extra"),
    [("redis://localhost:6379/0", "redis", "redis"), ("postgresql://u@localhost/db", "asyncpg", "postgres")],
)
def test_missing_driver_names_the_extra(monkeypatch: pytest.MonkeyPatch, url: str, driver: str, extra: str) -> None:
    import sys

    module = "daehwa.stores.redis" if extra == "redis" else "daehwa.stores.postgres"
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in list(sys.modules):
        if name == driver or name.startswith(driver + "."):
            monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, driver, None)  # what an uninstalled package looks like to import
    with pytest.raises(ConfigError, match=re.escape(f"pip install 'daehwa[{extra}]'")):
        open_store(url)


def test_plugins_register_by_entry_point(monkeypatch: pytest.MonkeyPatch) -> None:
    from importlib.metadata import EntryPoint

    import daehwa.stores as stores

    plugin = EntryPoint(name="memo", value="daehwa.stores.sqlite:SQLiteStore", group=stores.ENTRY_POINT_GROUP)
    monkeypatch.setattr(stores, "entry_points", lambda group: [plugin] if group == stores.ENTRY_POINT_GROUP else [])
    assert "memo" in stores.store_backends()
    assert "sqlite" in stores.store_backends()


# -- Redis only: what expires and what does not -------------------------------------------------------------------
@pytest.fixture(params=["redis", "redis-cluster"])
def redis_url(request: pytest.FixtureRequest) -> str:
    """One Redis, then the test session's Redis Cluster."""
    return REDIS_URL if request.param == "redis" else str(request.getfixturevalue("redis_cluster_url"))


@pytest.fixture
async def short_lived_redis(redis_url: str) -> AsyncIterator[Any]:
    async with _redis_namespace(redis_url, ttl_seconds=60) as factory:
        store = factory()
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.mark.redis
async def test_redis_conversation_data_expires_and_writes_renew_it(short_lived_redis: Any) -> None:
    store, r = short_lived_redis, short_lived_redis._r()
    conv = await store.create_conversation("u1", NewConversation(title="t"))
    await store.append_message("u1", conv.id, NewMessage(role="user", content="x"))
    conv_keys = [store._conv_key(conv.id), *(store._conv_key(conv.id, part) for part in ("msgs", "order"))]
    conv_keys.append(store._k("user", "u1", "convs"))
    for key in conv_keys:
        assert 55_000 < await r.pttl(key) <= 60_000, key
        await r.pexpire(key, 5_000)
    await store.append_message("u1", conv.id, NewMessage(role="assistant", content="y"))  # a write restarts the clock
    for key in conv_keys:
        assert await r.pttl(key) > 55_000, key


@pytest.mark.redis
async def test_redis_accounts_keys_and_usage_never_expire(short_lived_redis: Any) -> None:
    store, r = short_lived_redis, short_lived_redis._r()
    user = await store.create_user("alice", password_hash="h")
    key = await store.create_api_key(user.id, name="k", prefix="p", key_hash="kh")
    await store.find_api_key("kh")
    await store.record_usage(_usage(user.id, "m", 1, 1))
    persistent = [
        store._acct_key("user", user.id),
        store._acct_key("users"),
        store._acct_key("user_names"),
        store._acct_key("apikey", key.id),
        store._acct_key("apikey_hashes"),
        store._acct_key("apikeys"),
        store._k("usage"),
        store._k("user", user.id, "usage"),
    ]
    for k in persistent:
        assert await r.pttl(k) == -1, k  # -1: exists, no expiry


@pytest.mark.redis
async def test_redis_expired_conversations_vanish_everywhere(redis_url: str) -> None:
    async with _redis_namespace(redis_url, ttl_seconds=0.3) as factory:
        store = factory()
        await store.open()
        try:
            gone = await store.create_conversation("u1", NewConversation(title="old"))
            await store.append_message("u1", gone.id, NewMessage(role="user", content="x"))
            await asyncio.sleep(0.5)
            kept = await store.create_conversation("u1", NewConversation(title="new"))
            assert await store.get_conversation("u1", gone.id) is None
            assert await store.list_messages("u1", gone.id) is None
            assert [c.id for c in await store.list_conversations("u1")] == [kept.id]
        finally:
            await store.close()


@pytest.mark.redis
async def test_redis_sessions_expire_in_redis_too(short_lived_redis: Any) -> None:
    store, r = short_lived_redis, short_lived_redis._r()
    expires = datetime.now(UTC) + timedelta(minutes=10)
    await store.create_session("t", SessionRecord(user_id="u1", csrf_token="c", expires_at=expires))
    assert 590_000 < await r.pttl(store._acct_key("session", "t")) <= 600_000


@pytest.mark.redis
async def test_redis_session_index_follows_its_sessions(short_lived_redis: Any) -> None:
    store, r = short_lived_redis, short_lived_redis._r()
    index = store._acct_key("user", "u1", "sessions")
    now = datetime.now(UTC)

    def lasting(minutes: int, user_id: str = "u1") -> SessionRecord:
        return SessionRecord(user_id=user_id, csrf_token="c", expires_at=now + timedelta(minutes=minutes))

    await store.create_session("long", lasting(20))
    await store.create_session("short", lasting(5))
    assert set(await r.zrange(index, 0, -1)) == {"long", "short"}
    assert 1_190_000 < await r.pttl(index) <= 1_200_000  # the index lasts as long as its longest-lived session
    await store.delete_session("long")
    assert await r.zrange(index, 0, -1) == ["short"]  # a logout leaves the index too
    await r.zadd(index, {"lapsed": 1})  # the entry of a session that expired long ago
    await store.create_session("new", lasting(9))
    assert set(await r.zrange(index, 0, -1)) == {"short", "new"}  # expired entries leave as sessions come
    # A hash in the index whose key now holds another user's session is not that session's to end.
    await r.zadd(index, {"bobs": (now + timedelta(minutes=9)).timestamp() * 1000})
    await store.create_session("bobs", lasting(9, user_id="bob"))
    assert await store.delete_user_sessions("u1") == 2
    assert await store.get_session("bobs") is not None
    assert await r.exists(index) == 0


async def _as_format_2(store: Any) -> None:
    """Give every key of ``store`` its format 2 name (no hash tags), as a daehwa before format 3 left them."""
    r, prefix = store._r(), store.prefix
    async for key in r.scan_iter(match=re.sub(r"([*?\[\]\\])", r"\\\1", prefix) + ":*"):
        rest = key[len(prefix) + 1 :]
        old = rest.removeprefix("{accounts}:")
        if old.startswith("conv:{"):
            cid, _, tail = old[len("conv:{") :].partition("}")
            old = f"conv:{cid}{tail}"
        if old != rest:  # DUMP/RESTORE: also across the slots of a cluster
            dumped, ttl = await r.dump(key), await r.pttl(key)
            await r.restore(f"{prefix}:{old}", max(ttl, 0), dumped)
            await r.delete(key)
    await r.set(store._k("schema"), 2)


@pytest.mark.redis
async def test_redis_format_2_data_is_renamed_on_first_open(redis_url: str) -> None:
    """Format 2 -> 3 (hash tags): open() renames every key, keeping TTLs; two processes starting at once agree."""
    async with _redis_namespace(redis_url) as factory:
        old = factory()
        await old.open()
        try:
            user = await old.create_user("alice", password_hash="h")
            await old.create_api_key(user.id, name="k", prefix="p", key_hash="kh")
            later = datetime.now(UTC) + timedelta(hours=1)
            await old.create_session("s1", SessionRecord(user_id=user.id, csrf_token="c", expires_at=later))
            conv, _, reply = await old.create_conversation_with_turn(
                user.id, NewConversation(title="old"), NewTurn("hi", "m")
            )
            await old.save_vectors(user.id, conv.id, {reply.id: b"\0\0\0\0"}, model="e")
            await old.finish_turn(user.id, reply.id, TurnResult("hello", MessageStatus.COMPLETE, usage=_usage(
                user.id, "m", 1, 2)))  # fmt: skip
            await _as_format_2(old)
            r = old._r()
            assert await r.exists(f"{old.prefix}:conv:{conv.id}:msgs", f"{old.prefix}:users") == 2
        finally:
            await old.close()
        first, second = factory(), factory()
        await asyncio.gather(first.open(), second.open())
        try:
            r = first._r()
            assert await r.get(first._k("schema")) == "3"
            assert await r.exists(f"{first.prefix}:conv:{conv.id}", f"{first.prefix}:users") == 0
            assert await r.pttl(first._conv_key(conv.id, "msgs")) > 0  # the TTL came along
            for s in (first, second):
                assert [c.id for c in await s.list_conversations(user.id)] == [conv.id]
                assert [m.content for m in await s.list_messages(user.id, conv.id) or []] == ["hi", "hello"]
                assert await s.load_vectors(user.id, conv.id, model="e") == {reply.id: b"\0\0\0\0"}
                assert (await s.get_user_by_name("alice")) is not None
                assert (await s.find_api_key("kh")) is not None
                assert (await s.get_session("s1")) is not None
                assert await s.tokens_used_since(user.id, datetime.now(UTC) - timedelta(hours=1)) == 3
            assert await r.get(first._k("upgrading")) is None
        finally:
            await first.close()
            await second.close()


def test_format_3_names() -> None:
    from daehwa.stores.redis import format3_name

    assert format3_name("P", "P:conv:c1") == "P:conv:{c1}"
    assert format3_name("P", "P:conv:c1:summary") == "P:conv:{c1}:summary"
    assert format3_name("P", "P:conv:{c1}:msgs") is None  # already renamed
    assert format3_name("P", "P:user:u1") == "P:{accounts}:user:u1"
    assert format3_name("P", "P:user:u1:sessions") == "P:{accounts}:user:u1:sessions"
    assert format3_name("P", "P:user:u1:convs") is None  # single-key use: keeps its name
    assert format3_name("P", "P:user:u1:usage") is None
    assert format3_name("P", "P:session:abc") == "P:{accounts}:session:abc"
    assert format3_name("P", "P:apikey_hashes") == "P:{accounts}:apikey_hashes"
    for kept in ("P:usage", "P:streaming", "P:schema", "P:quota:rpm:u1", "P:{accounts}:users"):
        assert format3_name("P", kept) is None


def test_braces_in_the_prefix_are_refused() -> None:
    from daehwa.stores.redis import RedisStore

    with pytest.raises(ConfigError, match="braces"):
        RedisStore(REDIS_URL, prefix="a{b}")


@pytest.mark.redis
async def test_redis_sessions_written_before_the_index_are_indexed_on_open() -> None:
    """Schema 1 (no per-user index) -> 3: open() indexes the sessions already there, so a password change ends them."""
    async with _redis_namespace() as factory:
        from daehwa.stores.redis import RedisStore

        # Glob characters in the prefix are matched literally: the sibling prefix's session is not picked up.
        prefix = f"{factory().prefix}:g*"  # type: ignore[attr-defined]
        later = datetime.now(UTC) + timedelta(hours=1)
        old = RedisStore(REDIS_URL, prefix=prefix)
        await old.open()
        sibling = RedisStore(REDIS_URL, prefix=prefix.replace("*", "X"))
        await sibling.open()
        try:
            await old.create_session("s1", SessionRecord(user_id="u1", csrf_token="c", expires_at=later))
            await old.create_session("link", SessionRecord(user_id="u1", csrf_token="", expires_at=later))
            await sibling.create_session("other", SessionRecord(user_id="u1", csrf_token="c", expires_at=later))
            r = old._r()
            await r.delete(old._acct_key("user", "u1", "sessions"))  # what a version 1 daehwa left: no index
            await _as_format_2(old)
            await r.set(old._k("schema"), 1)
        finally:
            await old.close()
        upgraded = RedisStore(REDIS_URL, prefix=prefix)
        await upgraded.open()
        try:
            r = upgraded._r()
            assert await r.get(upgraded._k("schema")) == "3"
            assert set(await r.zrange(upgraded._acct_key("user", "u1", "sessions"), 0, -1)) == {"s1", "link"}
            assert await upgraded.delete_user_sessions("u1") == 2
            assert await upgraded.get_session("s1") is None and await upgraded.get_session("link") is None
            assert await sibling.get_session("other") is not None
        finally:
            await upgraded.close()
            await sibling.close()


# -- PostgreSQL only: its migrations and native types ------------------------------------------------------------
@pytest.mark.postgres
async def test_postgres_migrations_recorded_once_and_meta_is_jsonb() -> None:
    import asyncpg

    from daehwa.stores.migrations import MIGRATIONS_TABLE, postgres_migrations

    async with _postgres_namespace() as factory:
        first, second = factory(), factory()
        await asyncio.gather(first.open(), second.open())  # two processes starting at once
        try:
            applied = sorted([first.applied_migrations, second.applied_migrations], key=len)  # type: ignore[attr-defined]
            assert applied == [[], postgres_migrations.names]
            conv = await first.create_conversation("u1", NewConversation(meta={"n": 1, "deep": {"한": "글"}}))
            again = factory()
            await again.open()
            assert again.applied_migrations == []  # type: ignore[attr-defined]
            await again.close()

            conn = await asyncpg.connect(POSTGRES_URL, server_settings={"search_path": first.schema})  # type: ignore[attr-defined]
            try:
                names = [r["name"] for r in await conn.fetch(f"SELECT name FROM {MIGRATIONS_TABLE} ORDER BY name")]
                assert names == postgres_migrations.names
                kind = await conn.fetchval(
                    "SELECT jsonb_typeof(meta -> 'deep') FROM conversations WHERE id = $1", conv.id
                )
                assert kind == "object"
            finally:
                await conn.close()
        finally:
            await first.close()
            await second.close()


@pytest.mark.postgres
async def test_postgres_unreachable_server_names_the_setting() -> None:
    from daehwa.stores.postgres import PostgresStore

    store = PostgresStore("postgresql://nobody:s3cret@127.0.0.1:1/none")
    with pytest.raises(ConfigError, match="DAEHWA_DATABASE_URL") as info:
        await store.open()
    assert "s3cret" not in str(info.value) and "s3cret" not in repr(store)


# -- completed forms (FormStore) ---------------------------------------------------------------------------------
async def test_form_records_are_the_owners_and_survive_reopen_and_conversation_delete(
    store: Store, store_factory: StoreFactory
) -> None:
    from daehwa.stores import NewFormRecord

    alice = await store.create_user(f"alice-{uuid.uuid4().hex[:6]}", password_hash=None)
    bob = await store.create_user(f"bob-{uuid.uuid4().hex[:6]}", password_hash=None)
    conv = await store.create_conversation(alice.id)
    other = await store.create_conversation(alice.id)
    values = {"date": "2026-12-24", "party": 2, "name": "김민수"}
    # Bob cannot file a record in Alice's conversation.
    assert await store.save_form_record(bob.id, NewFormRecord(conv.id, "reservation", values)) is None
    first = await store.save_form_record(alice.id, NewFormRecord(conv.id, "reservation", values, delivery="pending"))
    assert first is not None and first.values == values and first.delivery == "pending"
    second = await store.save_form_record(alice.id, NewFormRecord(other.id, "reservation", {"party": 4}))
    assert second is not None and second.delivery is None
    assert [r.id for r in await store.list_form_records(alice.id)] == [first.id, second.id]
    assert [r.id for r in await store.list_form_records(alice.id, conversation_id=conv.id)] == [first.id]
    assert await store.list_form_records(bob.id) == []
    assert await store.get_form_record(bob.id, first.id) is None
    assert not await store.set_form_delivery(bob.id, first.id, "delivered")
    assert await store.set_form_delivery(alice.id, first.id, "delivered")
    await store.delete_conversation(alice.id, conv.id)
    again = store_factory()
    await again.open()
    try:
        got = await again.get_form_record(alice.id, first.id)
        assert got is not None
        assert (got.values, got.delivery, got.form, got.conversation_id) == (
            values,
            "delivered",
            "reservation",
            conv.id,
        )
        assert abs((got.created_at - first.created_at).total_seconds()) < 0.01
    finally:
        await again.close()


# -- stream chunk logs (resume a reply from any process) ---------------------------------------------------------
_TIMES = StreamTimes(lease_seconds=30, expire_seconds=60)


async def _streaming_reply(store: Store) -> tuple[str, str, str]:
    user = await store.create_user(f"s-{uuid.uuid4().hex[:8]}", password_hash=None)
    conv, _, reply = await store.create_conversation_with_turn(
        user.id, NewConversation(title="t"), NewTurn(user_content="hi", reply_model="m")
    )
    return user.id, conv.id, reply.id


async def test_stream_log_replays_from_any_offset_and_survives_a_reopen(
    store: Store, store_factory: StoreFactory
) -> None:
    uid, cid, mid = await _streaming_reply(store)
    assert await store.read_stream(uid, cid, mid) is None  # nothing written yet
    offset = 0
    for text in ("안녕", "하세요, ", "", "world"):
        chunk = StreamChunk(offset, text)
        await store.append_stream(uid, cid, mid, chunk, _TIMES)
        offset = chunk.end
    read = await store.read_stream(uid, cid, mid)
    assert read is not None and read.alive and not read.ended
    assert "".join(c.text for c in read.chunks) == "안녕하세요, world"
    assert [c.start for c in read.chunks] == [0, 2, 7]
    # From inside a chunk: the first one is cut there, nothing before it repeats.
    middle = await store.read_stream(uid, cid, mid, after=3)
    assert middle is not None and [(c.start, c.text) for c in middle.chunks] == [(3, "세요, "), (7, "world")]
    at_end = await store.read_stream(uid, cid, mid, after=12)
    assert at_end is not None and at_end.chunks == []
    # A chunk sent twice (a retried write) is kept once.
    await store.append_stream(uid, cid, mid, StreamChunk(7, "world"), _TIMES)
    await store.end_stream(uid, cid, mid, expire_seconds=60)
    again = store_factory()
    await again.open()
    try:
        ended = await again.read_stream(uid, cid, mid, after=0)
        assert ended is not None and ended.ended and not ended.alive
        assert "".join(c.text for c in ended.chunks) == "안녕하세요, world"
    finally:
        await again.close()


async def test_stream_log_reads_a_chunk_sent_again_with_more_text_once(store: Store) -> None:
    uid, cid, mid = await _streaming_reply(store)
    await store.append_stream(uid, cid, mid, StreamChunk(0, "하나 "), _TIMES)
    # Stored, but the writer saw an error: it sends the same start again, with what arrived meanwhile.
    await store.append_stream(uid, cid, mid, StreamChunk(3, "둘 "), _TIMES)
    await store.append_stream(uid, cid, mid, StreamChunk(3, "둘 셋 "), _TIMES)
    await store.append_stream(uid, cid, mid, StreamChunk(7, "넷"), _TIMES)
    for after in (0, 2, 4, 6, 8):
        read = await store.read_stream(uid, cid, mid, after=after)
        assert read is not None
        assert "".join(c.text for c in read.chunks) == "하나 둘 셋 넷"[after:]
        assert all(a.end == b.start for a, b in zip(read.chunks, read.chunks[1:], strict=False))


async def test_stream_log_of_another_user_or_conversation_reads_as_missing(store: Store) -> None:
    uid, cid, mid = await _streaming_reply(store)
    other, other_cid, _ = await _streaming_reply(store)
    await store.append_stream(uid, cid, mid, StreamChunk(0, "secret"), _TIMES)
    assert await store.read_stream(other, cid, mid) is None
    assert await store.read_stream(uid, other_cid, mid) is None
    # Another user cannot write into it or end it either.
    await store.append_stream(other, cid, mid, StreamChunk(6, " more"), _TIMES)
    await store.end_stream(other, cid, mid, expire_seconds=60)
    read = await store.read_stream(uid, cid, mid)
    assert read is not None and not read.ended and [c.text for c in read.chunks] == ["secret"]


async def test_stream_log_lease_lapses_and_the_log_expires(store: Store) -> None:
    uid, cid, mid = await _streaming_reply(store)
    await store.append_stream(uid, cid, mid, StreamChunk(0, "part"), StreamTimes(lease_seconds=0.2, expire_seconds=60))
    await asyncio.sleep(0.4)
    lapsed = await store.read_stream(uid, cid, mid)
    assert lapsed is not None and not lapsed.alive and not lapsed.ended  # the writer is gone, its text is kept
    await store.end_stream(uid, cid, mid, expire_seconds=0.2)
    await asyncio.sleep(0.5)
    assert await store.read_stream(uid, cid, mid) is None
