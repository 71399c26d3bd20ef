"""The profile capability of every store (SQLite, Redis, PostgreSQL, each the real server): interests with
time-scaled scores and recommendation feedback, kept per user, surviving a reopen, gone with ``delete_profile``."""

from __future__ import annotations

from daehwa.stores import Store
from daehwa.stores.base import ProfileStore

from .test_stores import StoreFactory, store, store_factory  # noqa: F401  (the parametrised store fixtures)


async def test_interests_add_up_rank_and_stay_per_user(store: Store, store_factory: StoreFactory):  # noqa: F811
    assert isinstance(store, ProfileStore)
    await store.add_interests("alice", {"파이썬": 2.0, "커피": 1.0})
    await store.add_interests("alice", {"커피": 3.5, "여행": 0.5})
    await store.add_interests("bob", {"축구": 1.0})
    got = await store.list_interests("alice")
    assert [(i.term, i.score) for i in got] == [("커피", 4.5), ("파이썬", 2.0), ("여행", 0.5)]
    assert all(i.updated_at.utcoffset() is not None for i in got)
    assert [i.term for i in await store.list_interests("alice", limit=1)] == ["커피"]
    assert [i.term for i in await store.list_interests("bob")] == ["축구"]
    assert await store.list_interests("carol") == []
    again = store_factory()
    await again.open()
    try:
        assert [i.term for i in await again.list_interests("alice")] == ["커피", "파이썬", "여행"]
    finally:
        await again.close()


async def test_only_the_strongest_interests_are_kept(store: Store):  # noqa: F811
    store.MAX_INTERESTS = 3  # type: ignore[misc]
    await store.add_interests("alice", {"a": 1.0, "b": 2.0, "c": 3.0, "d": 4.0})
    await store.add_interests("alice", {"e": 2.5})
    assert [i.term for i in await store.list_interests("alice")] == ["d", "c", "e"]


async def test_deleting_one_or_all_interests(store: Store):  # noqa: F811
    await store.add_interests("alice", {"파이썬": 2.0, "커피": 1.0, "여행": 1.5})
    await store.add_interests("bob", {"커피": 1.0})
    assert await store.delete_interests("alice", "커피") == 1
    assert await store.delete_interests("alice", "없는말") == 0
    assert [i.term for i in await store.list_interests("alice")] == ["파이썬", "여행"]
    assert await store.delete_interests("alice") == 2
    assert await store.list_interests("alice") == []
    assert [i.term for i in await store.list_interests("bob")] == ["커피"]


async def test_feedback_counts_clicks_and_remembers_dismissals(store: Store):  # noqa: F811
    await store.record_feedback("alice", "guides", "py-perf", "click")
    await store.record_feedback("alice", "guides", "py-perf", "click")
    await store.record_feedback("alice", "guides", "redis-101", "dismiss")
    await store.record_feedback("alice", "guides", "redis-101", "click")
    await store.record_feedback("alice", "other", "py-perf", "dismiss")
    got = await store.load_feedback("alice", "guides")
    assert {k: (v.clicks, v.dismissed) for k, v in got.items()} == {"py-perf": (2, False), "redis-101": (1, True)}
    assert await store.load_feedback("bob", "guides") == {}
    assert (await store.load_feedback("alice", "other"))["py-perf"].dismissed


async def test_delete_profile_removes_everything_of_that_user_only(store: Store):  # noqa: F811
    await store.add_interests("alice", {"파이썬": 2.0})
    await store.record_feedback("alice", "guides", "py-perf", "click")
    await store.add_interests("bob", {"축구": 1.0})
    await store.record_feedback("bob", "guides", "py-perf", "dismiss")
    await store.delete_profile("alice")
    assert await store.list_interests("alice") == []
    assert await store.load_feedback("alice", "guides") == {}
    assert [i.term for i in await store.list_interests("bob")] == ["축구"]
    assert "py-perf" in await store.load_feedback("bob", "guides")
