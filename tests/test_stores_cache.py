"""The in-process cache of hot conversations (``stores/cache.py``): two stores on one Redis namespace (or one
PostgreSQL schema) stand for two server processes, each with its own cache. A write in one is never missed by a read
in the other, and a read with nothing changed is served from the cache."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.errors import ConfigError, InvalidRequest
from daehwa.services import build_services
from daehwa.stores import MessageChange, NewConversation, NewMessage, NewTurn, TurnResult
from daehwa.stores.cache import CachedStore
from daehwa.stores.sqlite import SQLiteStore
from daehwa.types import MessageStatus

from .test_stores import REDIS_URL, _postgres_namespace, _redis_namespace


@pytest.fixture(params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("redis-cluster",
                marks=pytest.mark.redis), pytest.param("postgres", marks=pytest.mark.postgres)])  # fmt: skip
async def two_processes(request: pytest.FixtureRequest) -> AsyncIterator[tuple[CachedStore, CachedStore]]:
    if request.param == "postgres":
        namespace = _postgres_namespace()
    else:
        url = REDIS_URL if request.param == "redis" else str(request.getfixturevalue("redis_cluster_url"))
        namespace = _redis_namespace(url)
    async with namespace as factory:
        a, b = CachedStore(factory(), 100), CachedStore(factory(), 100)
        await a.open()
        await b.open()
        try:
            yield a, b
        finally:
            await a.close()
            await b.close()


async def _seen(store: CachedStore, user: str, cid: str) -> tuple[str | None, list[tuple[str, str]]]:
    conv = await store.get_conversation(user, cid)
    messages = await store.list_messages(user, cid)
    return (conv.title if conv else None), [(m.content, m.status.value) for m in messages or []]


async def test_a_write_in_one_process_is_read_at_once_in_the_other(two_processes: tuple[CachedStore, CachedStore]):
    a, b = two_processes
    conv = await b.create_conversation("u1", NewConversation(title="t"))
    first = await b.append_message("u1", conv.id, NewMessage(role="user", content="q1"))
    assert await _seen(a, "u1", conv.id) == ("t", [("q1", "complete")])
    hits = a.hits
    assert await _seen(a, "u1", conv.id) == ("t", [("q1", "complete")])
    assert a.hits == hits + 2  # nothing changed: both reads came from the cache

    # Every kind of write in B is seen by the very next read in A.
    _, reply = await b.begin_turn("u1", conv.id, NewTurn(user_content="q2", reply_model="m"))
    assert (await _seen(a, "u1", conv.id))[1][-1] == ("", "streaming")
    await b.update_message("u1", reply.id, MessageChange(content="part"))
    assert (await _seen(a, "u1", conv.id))[1][-1] == ("part", "streaming")
    await b.finish_turn("u1", reply.id, TurnResult("done", MessageStatus.COMPLETE))
    assert (await _seen(a, "u1", conv.id))[1][-1] == ("done", "complete")
    await b.rename_conversation("u1", conv.id, "renamed")
    assert (await _seen(a, "u1", conv.id))[0] == "renamed"
    await b.update_conversation("u1", conv.id, meta={"k": 1})
    got = await a.get_conversation("u1", conv.id)
    assert got is not None and got.meta["k"] == 1
    await b.delete_messages_from("u1", conv.id, reply.id)
    assert [c for c, _ in (await _seen(a, "u1", conv.id))[1]] == ["q1", "q2"]
    await b.inner.recover_interrupted()  # a restarted process relabels replies: a write like the others
    await b.delete_conversation("u1", conv.id)
    assert await _seen(a, "u1", conv.id) == (None, [])
    assert await a.list_messages("u1", conv.id) is None
    assert first.id  # (used)


async def test_pages_served_from_the_cache_match_the_store(two_processes: tuple[CachedStore, CachedStore]):
    a, _ = two_processes
    conv = await a.create_conversation("u1", NewConversation(title="p"))
    ids = [(await a.append_message("u1", conv.id, NewMessage(role="user", content=f"m{i}"))).id for i in range(6)]
    await a.list_messages("u1", conv.id)  # cached whole
    for limit in (None, 0, 2, 10):
        for before in (None, ids[0], ids[3], ids[5]):
            hits = a.hits
            cached = await a.list_messages("u1", conv.id, limit=limit, before=before)
            assert a.hits == hits + 1
            direct = await a.inner.list_messages("u1", conv.id, limit=limit, before=before)
            assert cached == direct, (limit, before)
    with pytest.raises(InvalidRequest):
        await a.list_messages("u1", conv.id, before="nope")
    assert await a.get_conversation("u2", conv.id) is None  # another user's read is not served from u1's copy
    assert await a.list_messages("u2", conv.id) is None


def test_the_cache_refuses_a_store_without_versions(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="DAEHWA_STORE_CACHE_CONVERSATIONS"):
        CachedStore(SQLiteStore(tmp_path / "x.db"), 10)
    settings = Settings(data_dir=tmp_path, store_cache_conversations=10, _env_file=None)  # type: ignore[call-arg]
    with pytest.raises(ConfigError, match="keeps conversation versions"):
        build_services(settings)


async def test_a_process_keeps_its_own_writes_in_its_cache(two_processes: tuple[CachedStore, CachedStore]):
    a, b = two_processes
    conv = await a.create_conversation("u1", NewConversation(title="w"))
    await a.append_message("u1", conv.id, NewMessage(role="user", content="q1"))
    await a.list_messages("u1", conv.id)  # cached
    user_msg, reply = await a.begin_turn("u1", conv.id, NewTurn(user_content="q2", reply_model="m"))
    assert user_msg is not None
    await a.update_message("u1", reply.id, MessageChange(content="pa", meta={"x": 1}))
    await a.finish_turn(
        "u1",
        reply.id,
        TurnResult("pa rt", MessageStatus.COMPLETE, meta={"y": 2}, user_message_id=user_msg.id, user_meta={"m": 1}),
    )
    await a.append_message("u1", conv.id, NewMessage(role="user", content="q3"))
    hits = a.hits
    cached = await a.list_messages("u1", conv.id)
    assert a.hits == hits + 1  # its own writes moved the copy along: still a hit
    assert cached == await a.inner.list_messages("u1", conv.id)  # and it is exactly what the store holds
    assert [m.content for m in cached or []] == ["q1", "q2", "pa rt", "q3"]
    assert (cached or [])[1].meta == {"m": 1}  # the user's message got the turn's user meta in the finish write

    # A write from the other process in between: the next own write cannot move the copy along, so it is dropped.
    await b.append_message("u1", conv.id, NewMessage(role="user", content="from b"))
    await a.append_message("u1", conv.id, NewMessage(role="user", content="q4"))
    misses = a.misses
    assert [m.content for m in await a.list_messages("u1", conv.id) or []][-2:] == ["from b", "q4"]
    assert a.misses == misses + 1


async def test_a_reply_another_process_recovers_is_read_as_interrupted(
    two_processes: tuple[CachedStore, CachedStore],
) -> None:
    a, b = two_processes
    conv = await a.create_conversation("u1", NewConversation(title="r"))
    _, reply = await a.begin_turn("u1", conv.id, NewTurn(user_content="q", reply_model="m"))
    await a.update_message("u1", reply.id, MessageChange(content="half"))
    assert (await _seen(a, "u1", conv.id))[1][-1] == ("half", "streaming")  # cached in A
    await b.inner.recover_interrupted()  # B starts (no lease on this reply: its writer is gone)
    assert (await _seen(a, "u1", conv.id))[1][-1] == ("half", "interrupted")


async def test_concurrent_writers_each_move_the_version(two_processes: tuple[CachedStore, CachedStore]) -> None:
    """Every write makes a new version, also when two processes write the same conversation at once."""
    a, b = two_processes
    conv = await a.create_conversation("u1", NewConversation(title="c"))
    await a.list_messages("u1", conv.id)
    versions = []
    for store in (a, b):
        for i in range(3):
            stored = await store.append_message("u1", conv.id, NewMessage(role="user", content=f"x{i}"))
            assert stored.id
            versions.append(await store.inner.conversation_version(conv.id))  # type: ignore[attr-defined]
    assert len(set(versions)) == 6
    await asyncio.gather(
        *(s.append_message("u1", conv.id, NewMessage(role="user", content=f"y{i}")) for i in range(5) for s in (a, b))
    )
    cached = [m.content for m in await a.list_messages("u1", conv.id) or []]
    assert sorted(cached) == sorted([f"x{i}" for i in range(3)] * 2 + [f"y{i}" for i in range(5)] * 2)
    assert cached == [m.content for m in await a.inner.list_messages("u1", conv.id) or []]


async def test_deleting_a_user_in_one_process_empties_both_caches(two_processes: tuple[CachedStore, CachedStore]):
    a, b = two_processes
    user = await a.create_user("cached-gone", password_hash=None)
    conv = await a.create_conversation(user.id, NewConversation(title="t"))
    await a.append_message(user.id, conv.id, NewMessage(role="user", content="secret"))
    assert await _seen(a, user.id, conv.id) == ("t", [("secret", "complete")])
    assert await _seen(b, user.id, conv.id) == ("t", [("secret", "complete")])
    deletion = await a.delete_user(user.id)
    assert deletion is not None and deletion.conversations == 1
    assert not [k for k in a._entries if k[0] == user.id]  # this process dropped its copy at once
    assert await _seen(b, user.id, conv.id) == (None, [])  # the other one's version read misses it
    assert not [k for k in b._entries if k[0] == user.id]
