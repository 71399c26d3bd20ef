"""The turn pipeline's hooks (daehwa/pipeline.py): contributors before the context is built, observers after."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from daehwa.chat import TurnRequest
from daehwa.config import Settings
from daehwa.context.engine import QueryEmbedding
from daehwa.context.policy import ContextPolicy
from daehwa.context.summary import Entry
from daehwa.pipeline import Turn, TurnFinished
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.stores import NewMessage
from daehwa.types import ChatMessage, GenerationParams, MessageStatus, User
from tests.api_helpers import auth
from tests.conftest import FakeProvider

pytest_plugins = ["tests.api_fixtures"]


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model="fake",
        stream_flush_seconds=0.05,
        filter_output_action="off",
        pipeline_hook_timeout_seconds=0.2,
        _env_file=None,  # type: ignore[call-arg]
    )


class Tone:
    name = "tone"

    def __init__(self) -> None:
        self.seen: list[Turn] = []

    async def contribute(self, turn: Turn) -> None:
        self.seen.append(turn)
        turn.system_parts.append("Answer warmly.")
        turn.user_meta["mood"] = "happy"
        turn.reply_meta["recommendations"] = ["tea"]


class Broken:
    name = "broken"

    async def contribute(self, turn: Turn) -> None:
        turn.system_parts.append("half-written part")
        turn.reply_meta["half"] = True
        raise RuntimeError("the mood model is missing")


class Slow:
    name = "slow"

    async def contribute(self, turn: Turn) -> None:
        turn.user_meta["slow"] = True
        await asyncio.sleep(30)


class Canned:
    name = "form"

    async def contribute(self, turn: Turn) -> None:
        turn.reply_override = "Which city do you live in?"


def failures(services: Services, hook: str) -> float:
    value = services.metrics.registry.get_sample_value("daehwa_pipeline_hook_failures_total", {"hook": hook})
    return value or 0.0


async def test_a_contributors_system_part_reaches_the_provider_and_its_meta_is_stored(
    services: Services, alice: User, fake_provider: FakeProvider
) -> None:
    tone = Tone()
    services.chat.contributors.append(tone)
    started, finished = await services.chat.run(TurnRequest(user=alice, content="hello there"))

    system = fake_provider.requests[-1].messages[0]
    assert system.role == "system" and system.content.endswith("\n\nAnswer warmly.")
    assert tone.seen[0].user_message is not None  # the user's message was stored before the contributor ran
    assert tone.seen[0].persona is not None and tone.seen[0].conversation is not None
    stored = await services.store.list_messages(alice.id, started.conversation.id) or []
    assert stored[0].meta["mood"] == "happy"
    assert stored[1].meta["recommendations"] == ["tea"] and "context" in stored[1].meta
    assert finished.user_meta == {"mood": "happy"} and finished.reply_meta == {"recommendations": ["tea"]}
    # the part is counted inside the token budget
    report = stored[1].meta["context"]
    assert report["system_tokens"] > 0


async def test_a_reply_override_skips_the_model(services: Services, alice: User, fake_provider: FakeProvider) -> None:
    services.chat.contributors.append(Canned())
    _, finished = await services.chat.run(TurnRequest(user=alice, content="fill in my form"))
    assert fake_provider.requests == []
    assert finished.message.content == "Which city do you live in?"
    assert finished.message.status is MessageStatus.COMPLETE and finished.message.model == "daehwa"
    assert finished.usage.total_tokens == 0


async def test_a_raising_contributor_is_logged_counted_and_ignored(
    services: Services, alice: User, fake_provider: FakeProvider, caplog: pytest.LogCaptureFixture
) -> None:
    services.chat.contributors.extend([Broken(), Tone()])
    with caplog.at_level(logging.WARNING, logger="daehwa.pipeline"):
        _, finished = await services.chat.run(TurnRequest(user=alice, content="hello"))
    assert finished.message.status is MessageStatus.COMPLETE
    assert failures(services, "broken") == 1
    assert any("broken" in r.getMessage() and "mood model is missing" in r.getMessage() for r in caplog.records)
    system = fake_provider.requests[-1].messages[0].content
    assert "half-written part" not in system and system.endswith("Answer warmly.")  # the later one still ran
    assert finished.reply_meta == {"recommendations": ["tea"]}


async def test_a_slow_contributor_counts_as_failed_and_the_turn_goes_on(
    services: Services, alice: User, fake_provider: FakeProvider
) -> None:
    services.chat.contributors.append(Slow())
    started, finished = await services.chat.run(TurnRequest(user=alice, content="hello"))
    assert finished.message.content == "echo: hello"
    assert failures(services, "slow") == 1
    stored = await services.store.list_messages(alice.id, started.conversation.id) or []
    assert "slow" not in stored[0].meta


async def test_an_observer_runs_after_the_reply_is_stored(services: Services, alice: User) -> None:
    seen: list[tuple[str, MessageStatus]] = []
    done = asyncio.Event()

    class Watcher:
        name = "watcher"

        async def finished(self, turn: Turn, finished: TurnFinished) -> None:
            assert turn.conversation is not None
            messages = await services.store.list_messages(turn.user.id, turn.conversation.id) or []
            seen.append((messages[-1].content, messages[-1].status))
            done.set()

    class Failing:
        name = "failing"

        async def finished(self, turn: Turn, finished: TurnFinished) -> None:
            raise RuntimeError("no")

    services.chat.observers.extend([Failing(), Watcher()])
    await services.chat.run(TurnRequest(user=alice, content="hi"))
    await asyncio.wait_for(done.wait(), 5)
    assert seen == [("echo: hi", MessageStatus.COMPLETE)]
    await services.chat.drain()
    assert failures(services, "failing") == 1


async def test_hooks_whose_applies_says_no_are_skipped(services: Services, alice: User) -> None:
    """``applies`` False: the contributor is not run (and not timed: a slow one counts no failure), the observer gets
    no background task; ``applies`` True and hooks without ``applies`` run as before."""
    ran: list[str] = []

    class Skipped(Slow):
        name = "skipped"

        def applies(self, turn: Turn) -> bool:
            return turn.content == "run me"

    class Runs:
        name = "runs"

        def applies(self, turn: Turn) -> bool:
            return True

        async def contribute(self, turn: Turn) -> None:
            ran.append("contributor")

    class Quiet:
        name = "quiet"

        def applies(self, turn: Turn, finished: TurnFinished) -> bool:
            return False

        async def finished(self, turn: Turn, finished: TurnFinished) -> None:
            ran.append("quiet observer")

    services.chat.contributors.extend([Skipped(), Runs()])
    services.chat.observers[:] = [Quiet()]
    tasks_before = len(asyncio.all_tasks())
    _, finished = await services.chat.run(TurnRequest(user=alice, content="hello"))
    assert len(asyncio.all_tasks()) == tasks_before  # no observer task was started
    await services.chat.drain()
    assert finished.message.content == "echo: hello"
    assert failures(services, "skipped") == 0 and ran == ["contributor"]


async def test_hook_meta_is_in_the_rest_and_v1_responses(
    app: FastAPI, client: httpx.AsyncClient, services: Services, alice_key: str
) -> None:
    services.chat.contributors.append(Tone())
    r = await client.post("/api/conversations", json={"persona": "assistant"}, headers=auth(alice_key))
    cid = r.json()["conversation"]["id"]
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hi"}, headers=auth(alice_key))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["user_meta"] == {"mood": "happy"} and body["reply_meta"] == {"recommendations": ["tea"]}

    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "hi"}]},
        headers=auth(alice_key),
    )
    assert r.status_code == 200, r.text
    assert r.json()["choices"][0]["message"]["meta"] == {"recommendations": ["tea"]}


# -- client-kept history goes through the same context step ------------------------------------------------------
@pytest.fixture
async def tight(tmp_path: Path, fake_provider: FakeProvider) -> AsyncIterator[Services]:
    """Services with a 256-token context budget and only the recent window (no summary, no recall, no count limit)."""
    small = Settings(
        data_dir=tmp_path / "tight",
        database_url=f"sqlite:///{tmp_path / 'tight.db'}",
        default_model="fake",
        filter_output_action="off",
        context_max_tokens=256,
        context_policy="recent",
        context_recent_messages=0,
        context_embedder="off",
        _env_file=None,  # type: ignore[call-arg]
    )
    svc = build_services(small, providers=ProviderRegistry([fake_provider]))
    await svc.start()
    try:
        yield svc
    finally:
        await svc.aclose()


def long_history(turns: int) -> list[ChatMessage]:
    history = []
    for i in range(turns):
        history.append(ChatMessage("user", f"question {i}: " + "tell me more about the river and the old bridge " * 2))
        history.append(ChatMessage("assistant", f"answer {i}: " + "the river runs under the old stone bridge " * 2))
    return history


async def test_a_client_history_over_the_budget_is_trimmed_like_a_stored_one(
    tight: Services, alice: User, fake_provider: FakeProvider
) -> None:
    system = "You are terse."
    history = long_history(12)
    last = "and the bridge?"

    conversation, _ = await tight.chat.start_conversation(alice, persona="assistant")
    for message in history:
        await tight.store.append_message(alice.id, conversation.id, NewMessage(message.role, message.content))
    _, stored_turn = await tight.chat.run(
        TurnRequest(user=alice, conversation_id=conversation.id, content=last, system=system)
    )
    assert stored_turn.message.meta["context"]["dropped"] > 0
    stored_prompt = list(fake_provider.requests[-1].messages)

    messages = [ChatMessage("system", system), *history, ChatMessage("user", last)]
    _, client_turn = await tight.chat.run(TurnRequest(user=alice, messages=messages, source="v1"))
    client_prompt = list(fake_provider.requests[-1].messages)

    assert client_prompt == stored_prompt  # the same messages reach the model either way
    assert client_prompt[0] == ChatMessage("system", system) and client_prompt[-1] == ChatMessage("user", last)
    assert len(client_prompt) < len(messages)  # the oldest turns were dropped...
    assert client_prompt[1].content.startswith("question ")  # ...whole: the window opens with a question
    report = client_turn.message.meta["context"]
    assert report["dropped"] == len(messages) - len(client_prompt) and report["dropped"] > 0
    assert report["tokens"] <= report["budget"]["tokens"]


async def test_a_client_history_within_the_budget_is_sent_as_it_came(
    tight: Services, alice: User, fake_provider: FakeProvider
) -> None:
    messages = [
        ChatMessage("system", "Rule one."),
        ChatMessage("system", "Rule two."),
        ChatMessage("user", "hi", name="kim"),
        ChatMessage("assistant", "hello"),
        ChatMessage("user", "bye"),
    ]
    _, finished = await tight.chat.run(TurnRequest(user=alice, messages=messages, source="v1"))
    assert list(fake_provider.requests[-1].messages) == messages
    assert finished.message.meta["context"]["dropped"] == 0


# -- the query vector: computed once, shared by hooks and recall -------------------------------------------------
class CountingEmbedder:
    name = "counting"
    dim = 4

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], str]] = []

    async def embed(self, texts: Sequence[str], *, kind: str = "passage") -> Any:
        import numpy as np

        self.calls.append((list(texts), kind))
        return np.ones((len(texts), self.dim), dtype=np.float32) / 2


async def test_the_query_vector_reaches_the_contributors_and_is_embedded_once(services: Services, alice: User) -> None:
    embedder = CountingEmbedder()
    services.chat.context.embedder = embedder
    vectors: list[Any] = []

    class Reader:
        name = "reader"

        async def contribute(self, turn: Turn) -> None:
            vectors.append(turn.query_vector)

    services.chat.contributors.append(Reader())
    await services.chat.run(TurnRequest(user=alice, content="where is the bridge?"))
    await services.chat.drain()
    assert [list(v) for v in vectors] == [[0.5] * 4]
    assert [c for c in embedder.calls if c[1] == "query"] == [(["where is the bridge?"], "query")]


async def test_recall_uses_the_given_query_vector_instead_of_embedding_again(services: Services, alice: User) -> None:
    embedder = CountingEmbedder()
    engine = services.chat.context
    engine.embedder = embedder
    history = [Entry(f"m{i}", "user" if i % 2 == 0 else "assistant", f"message {i}") for i in range(9)]
    policy = ContextPolicy.parse("recall+recent", recent_messages=2)
    common: dict[str, Any] = {
        "user_id": alice.id,
        "conversation_id": "c1",
        "history": history,
        "system": "Be brief.",
        "model": "fake",
        "params": GenerationParams(),
        "policy": policy,
    }
    built = await engine.build(**common, query=QueryEmbedding([0.5] * 4, 1.0))
    assert embedder.calls == [] and built.query_vector is not None and built.embed_ms == 1.0
    await engine.build(**common)
    assert embedder.calls == [(["message 8"], "query")]
    with_parts = await engine.build(**common, system_parts=["Answer warmly."])
    assert with_parts.messages[0].content == "Be brief.\n\nAnswer warmly."
    assert with_parts.report.system_tokens > built.report.system_tokens
