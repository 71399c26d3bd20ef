"""The whole service on the test session's Redis Cluster: turns stored, the conversation cache, quotas counted in
the cluster and stop signals, through ``build_services`` as a server builds them (the URL picks the cluster)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest

from daehwa.chat import TurnRequest
from daehwa.config import Settings
from daehwa.errors import RateLimited
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import build_services
from daehwa.stores.cache import CachedStore
from daehwa.stores.redis import RedisStore
from daehwa.stores.redis.connection import connect
from daehwa.types import MessageStatus

from .conftest import FakeProvider


@pytest.mark.redis
async def test_turns_quotas_and_the_cache_on_a_cluster(redis_cluster_url: str, tmp_path: Path) -> None:
    prefix = f"daehwa-test-{uuid.uuid4().hex}"
    settings = Settings(
        data_dir=tmp_path,
        database_url=redis_cluster_url,
        redis_key_prefix=prefix,
        default_model="fake",
        store_cache_conversations=10,
        rate_limit_requests_per_minute=3,
        filter_output_action="off",
        _env_file=None,  # type: ignore[call-arg]
    )
    services = build_services(settings, providers=ProviderRegistry([FakeProvider()]))
    await services.start()
    try:
        store = services.store
        assert isinstance(store, CachedStore) and isinstance(store.inner, RedisStore) and store.inner.cluster
        alice = await store.create_user("alice", password_hash=None)
        started, finished = await services.chat.run(TurnRequest(user=alice, content="one"))
        cid = started.conversation.id
        await services.chat.run(TurnRequest(user=alice, content="two", conversation_id=cid))
        messages = await store.list_messages(alice.id, cid) or []
        assert [m.content for m in messages] == ["one", "echo: one", "two", "echo: two"]
        assert all(m.status is MessageStatus.COMPLETE for m in messages)
        assert finished.message.content == "echo: one"
        assert store.hits >= 2  # the second turn read its conversation and history from the cache
        with pytest.raises(RateLimited):  # the third request this minute is the quota's (counted in the cluster)
            for content in ("three", "four"):
                await services.chat.run(TurnRequest(user=alice, content=content, conversation_id=cid))
    finally:
        await services.aclose()
        client = connect(redis_cluster_url)
        keys = [k async for k in client.scan_iter(match=f"{prefix}:*")]
        if keys:
            await client.delete(*keys)
        await client.aclose()
