"""The conversation API over plain REST, the stateless /api/chat, catalog and health routes, and bad input."""

from __future__ import annotations

import httpx
import pytest

from daehwa.api.app import create_app
from daehwa.config import Settings
from daehwa.errors import ProviderError, RateLimited
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.stores import ConversationQuery, NewConversation, NewMessage
from daehwa.types import MessageStatus, User
from tests.api_helpers import auth
from tests.conftest import FakeProvider, Script
from tests.test_stores import _postgres_namespace

pytest_plugins = ["tests.api_fixtures"]


async def create(client: httpx.AsyncClient, key: str, **body: object) -> dict:
    r = await client.post("/api/conversations", json=body, headers=auth(key))
    assert r.status_code == 201, r.text
    return r.json()


async def test_conversation_lifecycle(client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider) -> None:
    created = await create(client, alice_key, persona="assistant")
    cid = created["conversation"]["id"]
    assert created["conversation"]["persona"] == "assistant"
    assert created["messages"] == []

    fake_provider.enqueue(Script(chunks=["Hel", "lo!"]))
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hi there"}, headers=auth(alice_key))
    assert r.status_code == 200, r.text
    result = r.json()
    assert result["conversation_id"] == cid
    assert result["message"]["content"] == "Hello!"
    assert result["message"]["status"] == "complete"
    assert result["user_message"]["content"] == "hi there"
    assert result["outcome"] == "ok" and result["finish_reason"] == "stop"
    assert result["usage"]["total_tokens"] == result["usage"]["prompt_tokens"] + result["usage"]["completion_tokens"]

    r = await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))
    body = r.json()
    assert [m["role"] for m in body["messages"]] == ["user", "assistant"]
    assert body["has_more"] is False and body["next_before"] is None
    assert body["conversation"]["title"] == "hi there"  # auto title from the first message

    r = await client.patch(f"/api/conversations/{cid}", json={"title": "Renamed"}, headers=auth(alice_key))
    assert r.status_code == 200 and r.json()["title"] == "Renamed"

    r = await client.get("/api/conversations", headers=auth(alice_key))
    assert [c["id"] for c in r.json()["data"]] == [cid]
    assert r.json()["data"][0]["title"] == "Renamed"

    r = await client.delete(f"/api/conversations/{cid}", headers=auth(alice_key))
    assert r.status_code == 204
    r = await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))
    assert r.status_code == 404 and r.json()["error"]["code"] == "not_found"


async def _history(services: Services, user: User, count: int) -> tuple[str, list[str]]:
    """A conversation of ``count`` messages m0, m1, ...; its id and their ids, oldest first."""
    conversation = await services.store.create_conversation(user.id, NewConversation(title="long"))
    ids = []
    for i in range(count):
        role = ("user", "assistant")[i % 2]
        ids.append(
            (await services.store.append_message(user.id, conversation.id, NewMessage(role=role, content=f"m{i}"))).id
        )
    return conversation.id, ids


async def test_conversation_messages_come_in_pages(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services
) -> None:
    cid, ids = await _history(services, alice, 250)
    url = f"/api/conversations/{cid}"
    body = (await client.get(url, headers=auth(alice_key))).json()  # no parameters: the latest 200
    assert [m["content"] for m in body["messages"]] == [f"m{i}" for i in range(50, 250)]
    assert body["has_more"] is True and body["next_before"] == ids[50]
    assert body["conversation"]["id"] == cid

    pages: list[list[str]] = []
    before = None
    while True:  # backwards to the start, as the web page scrolls up
        params: dict[str, str | int] = {"limit": 60} if before is None else {"limit": 60, "before": before}
        r = await client.get(url, params=params, headers=auth(alice_key))
        assert r.status_code == 200, r.text
        page = r.json()
        pages.insert(0, [m["id"] for m in page["messages"]])
        if not page["has_more"]:
            assert page["next_before"] is None
            break
        assert page["next_before"] == page["messages"][0]["id"]
        before = page["next_before"]
    assert [len(p) for p in pages] == [10, 60, 60, 60, 60]
    assert [i for p in pages for i in p] == ids  # joined: no gap, no repeat, oldest first

    exact = (await client.get(url, params={"limit": 250}, headers=auth(alice_key))).json()
    assert len(exact["messages"]) == 250 and exact["has_more"] is False and exact["next_before"] is None
    short = (await client.get(url, params={"limit": 249}, headers=auth(alice_key))).json()
    assert short["has_more"] is True and short["next_before"] == ids[1]
    first = (await client.get(url, params={"limit": 1, "before": ids[1]}, headers=auth(alice_key))).json()
    assert [m["id"] for m in first["messages"]] == [ids[0]] and first["has_more"] is False
    start = (await client.get(url, params={"before": ids[0]}, headers=auth(alice_key))).json()
    assert start["messages"] == [] and start["has_more"] is False and start["next_before"] is None
    most = (await client.get(url, params={"limit": 1000}, headers=auth(alice_key))).json()
    assert len(most["messages"]) == 250


@pytest.mark.parametrize(
    ("params", "param"),
    [
        ({"limit": 0}, "limit"),
        ({"limit": -5}, "limit"),
        ({"limit": 1001}, "limit"),
        ({"limit": "ten"}, "limit"),
        ({"before": ""}, "before"),
        ({"before": "x" * 201}, "before"),
        ({"before": "nope"}, "before"),
    ],
)
async def test_bad_message_page_parameters_are_400(
    client: httpx.AsyncClient,
    alice_key: str,
    alice: User,
    services: Services,
    params: dict[str, str | int],
    param: str,
) -> None:
    cid, _ = await _history(services, alice, 3)
    r = await client.get(f"/api/conversations/{cid}", params=params, headers=auth(alice_key))
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["type"] == "invalid_request_error" and error["code"] == "invalid_request"
    assert error["message"].startswith(f"{param}: ") or "is not in this conversation" in error["message"]


async def test_a_cursor_from_another_conversation_is_400(
    client: httpx.AsyncClient, alice_key: str, alice: User, bob: User, services: Services
) -> None:
    cid, _ = await _history(services, alice, 3)
    _, [sibling] = await _history(services, alice, 1)
    _, [bobs] = await _history(services, bob, 1)
    for before in (sibling, bobs):
        r = await client.get(f"/api/conversations/{cid}", params={"before": before}, headers=auth(alice_key))
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["param"] == "before" and "is not in this conversation" in error["message"]


async def test_message_pages_of_a_foreign_conversation_are_404(
    client: httpx.AsyncClient, alice: User, bob_key: str, services: Services
) -> None:
    cid, ids = await _history(services, alice, 3)
    for params in ({}, {"limit": 1}, {"before": ids[2]}, {"before": "nope"}, {"limit": 2, "before": ids[1]}):
        r = await client.get(f"/api/conversations/{cid}", params=params, headers=auth(bob_key))
        assert r.status_code == 404, (params, r.text)
        assert r.json()["error"]["code"] == "not_found" and "m0" not in r.text


async def test_persona_speaking_first_and_variables(client: httpx.AsyncClient, alice_key: str) -> None:
    created = await create(client, alice_key, persona="tutor", variables={"language": "Japanese", "level": "advanced"})
    assert created["conversation"]["variables"]["language"] == "Japanese"
    [first] = created["messages"]
    assert first["role"] == "assistant" and "Japanese" in first["content"]

    r = await client.post(
        "/api/conversations", json={"persona": "tutor", "variables": {"level": "expert"}}, headers=auth(alice_key)
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "variables"
    r = await client.post("/api/conversations", json={"persona": "nobody"}, headers=auth(alice_key))
    assert r.status_code == 404 and "assistant" in r.json()["error"]["message"]


async def test_regenerate_and_edit(client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider) -> None:
    cid = (await create(client, alice_key))["conversation"]["id"]
    fake_provider.enqueue(Script(chunks=["first"]), Script(chunks=["second"]), Script(chunks=["third"]))
    await client.post(f"/api/conversations/{cid}/messages", json={"content": "question"}, headers=auth(alice_key))

    r = await client.post(f"/api/conversations/{cid}/regenerate", json={}, headers=auth(alice_key))
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == "second" and r.json()["user_message"] is None
    messages = (await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))).json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "question"), ("assistant", "second")]

    r = await client.post(
        f"/api/conversations/{cid}/edit", json={"content": "better question"}, headers=auth(alice_key)
    )
    assert r.status_code == 200, r.text
    messages = (await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))).json()["messages"]
    assert [(m["role"], m["content"]) for m in messages] == [("user", "better question"), ("assistant", "third")]


async def test_stateless_chat_is_logged(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["4"]))
    r = await client.post(
        "/api/chat",
        json={"messages": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "2+2?"}]},
        headers=auth(alice_key),
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"] == "4"
    sent = fake_provider.requests[-1].messages
    assert [(m.role, m.content) for m in sent] == [("system", "Be brief."), ("user", "2+2?")]
    logged = await services.store.list_conversations(alice.id, ConversationQuery(kind="api"))
    assert len(logged) == 1 and logged[0].id == r.json()["conversation_id"]
    # The stateless log is not mixed into the chat list.
    assert (await client.get("/api/conversations", headers=auth(alice_key))).json()["data"] == []
    r = await client.post(
        "/api/chat", json={"messages": [{"role": "assistant", "content": "x"}]}, headers=auth(alice_key)
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"content": ""}, "content"),
        ({"content": "   "}, "content"),
        ({"content": 5}, "content"),
        ({}, "content"),
        ({"content": "x" * 40_000}, "content"),
        ({"content": "hi", "temperature": 9}, "temperature"),
        ({"content": "hi", "model": "nope/model"}, "model"),
        ({"content": "hi", "stop": ["a", "b", "c", "d", "e"]}, "stop"),
    ],
)
async def test_bad_messages_are_4xx_and_store_nothing(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, body: dict, param: str
) -> None:
    cid = (await create(client, alice_key))["conversation"]["id"]
    r = await client.post(f"/api/conversations/{cid}/messages", json=body, headers=auth(alice_key))
    assert 400 <= r.status_code < 500, r.text
    error = r.json()["error"]
    assert error["param"] == param and error["message"] and error["type"] == "invalid_request_error"
    assert await services.store.list_messages(alice.id, cid) == []


async def test_malformed_json_and_unknown_routes(client: httpx.AsyncClient, alice_key: str) -> None:
    r = await client.post(
        "/api/conversations", content=b"{not json", headers={**auth(alice_key), "Content-Type": "application/json"}
    )
    assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_json"
    r = await client.get("/api/nothing-here", headers=auth(alice_key))
    assert r.status_code == 404 and set(r.json()["error"]) == {"message", "type", "param", "code"}
    r = await client.put("/api/conversations", headers=auth(alice_key))
    assert r.status_code == 405 and r.json()["error"]["code"] == "method_not_allowed"


async def test_oversize_body_is_413(client: httpx.AsyncClient, alice_key: str, app) -> None:
    limit = app.state.settings.max_request_bytes
    r = await client.post("/api/chat", content=b"x" * (limit + 1), headers=auth(alice_key))
    assert r.status_code == 413 and r.json()["error"]["code"] == "request_too_large"


async def test_upstream_failure_is_an_error_response_and_stored(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    cid = (await create(client, alice_key))["conversation"]["id"]
    services.settings.fallback_reply = False
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream broke")))
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "go"}, headers=auth(alice_key))
    assert r.status_code == 502 and r.json()["error"]["code"] == "upstream_error"
    messages = await services.store.list_messages(alice.id, cid)
    assert [(m.role, m.status) for m in messages] == [("user", "complete"), ("assistant", "error")]

    services.settings.fallback_reply = True
    fake_provider.enqueue(Script(chunks=[], error=ProviderError("upstream broke")))
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "again"}, headers=auth(alice_key))
    assert r.status_code == 200 and r.json()["outcome"] == "fallback"
    assert r.json()["message"]["status"] == "fallback" and r.json()["message"]["content"]


async def test_rate_limited_is_429_with_retry_after(
    client: httpx.AsyncClient, alice_key: str, services: Services
) -> None:
    class Limiter:
        async def check(self, user: User, *, source: str, locale: str | None = None) -> None:
            raise RateLimited("Too many requests: wait a little.", retry_after=2.2)

        async def record(self, user: User, *, tokens: int) -> None: ...

    services.chat.limiter = Limiter()
    cid = (await create(client, alice_key))["conversation"]["id"]
    for body in ({"content": "x"}, {"content": "x", "stream": True}):
        r = await client.post(f"/api/conversations/{cid}/messages", json=body, headers=auth(alice_key))
        assert r.status_code == 429 and r.headers["retry-after"] == "3"
        assert r.json()["error"]["type"] == "rate_limit_error"


async def test_catalog_health_and_request_ids(client: httpx.AsyncClient, alice_key: str) -> None:
    r = await client.get("/api/personas", params={"locale": "en"}, headers=auth(alice_key))
    personas = {p["name"]: p for p in r.json()["data"]}
    assert personas["tutor"]["speaks_first"] and personas["tutor"]["title"] == "Conversation tutor"
    assert {v["name"] for v in personas["tutor"]["variables"]} == {"language", "situation", "level"}
    r = await client.get("/api/models", headers=auth(alice_key))
    assert "fake/echo" in [m["id"] for m in r.json()["data"]]

    assert (await client.get("/healthz")).json() == {"status": "ok"}
    r = await client.get("/readyz")
    assert r.status_code == 200 and r.json()["store"] == "ok" and r.json()["model"]["loaded"] is True

    r = await client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    r = await client.get("/healthz", headers={"X-Request-ID": "bad id\nwith junk"})
    assert r.headers["x-request-id"] != "bad id\nwith junk" and len(r.headers["x-request-id"]) == 32


async def test_filter_reload_is_admin_only(
    client: httpx.AsyncClient,
    alice_key: str,
    accounts,
    services: Services,
) -> None:
    r = await client.post("/api/admin/filter/reload", headers=auth(alice_key))
    assert r.status_code == 403
    admin = await accounts.create_user("root", "correct horse battery", is_admin=True)
    key = (await accounts.create_api_key(admin.id)).secret
    calls = []
    services.moderator.reload = lambda: calls.append(1) or 3  # type: ignore[attr-defined]
    r = await client.post("/api/admin/filter/reload", headers=auth(key))
    assert r.status_code == 200 and r.json()["reloaded"] is True and calls == [1]


async def test_stop_of_idle_conversation(client: httpx.AsyncClient, alice_key: str) -> None:
    cid = (await create(client, alice_key))["conversation"]["id"]
    r = await client.post(f"/api/conversations/{cid}/stop", headers=auth(alice_key))
    assert r.json() == {"stopped": False}


async def test_partial_reply_status_listed(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services
) -> None:
    conversation = await services.store.create_conversation(alice.id, NewConversation(title="t"))
    await services.store.append_message(
        alice.id, conversation.id, NewMessage(role="assistant", content="half", status=MessageStatus.INTERRUPTED)
    )
    messages = (await client.get(f"/api/conversations/{conversation.id}", headers=auth(alice_key))).json()["messages"]
    assert messages[0]["status"] == "interrupted" and messages[0]["content"] == "half"


async def test_readyz_shows_circuit_breakers(client: httpx.AsyncClient, services: Services, alice: User) -> None:
    from daehwa.chat import TurnRequest
    from daehwa.errors import ProviderError
    from tests.conftest import FakeProvider, Script

    provider = services.providers.get("fake")
    assert isinstance(provider, FakeProvider)
    await services.chat.run(TurnRequest(user=alice, content="hello"))
    breakers = {b["name"]: b for b in (await client.get("/readyz")).json()["breakers"]}
    assert breakers["fake/echo"]["state"] == "closed" and breakers["fake/echo"]["failures"] == 0
    for _ in range(services.settings.breaker_min_requests):
        provider.enqueue(*[Script(chunks=[], error=ProviderError("down", retryable=False))] * 3)
        await services.chat.run(TurnRequest(user=alice, content="hello?"))
    r = await client.get("/readyz")
    assert r.status_code == 200  # an open breaker informs; fallbacks still answer
    assert {b["name"]: b for b in r.json()["breakers"]}["fake/echo"]["state"] == "open"


# -- NUL characters (U+0000): refused the same way whatever the store ------------------------------------------------
async def test_nul_characters_in_text_or_url_are_400_and_nothing_is_stored(
    client: httpx.AsyncClient, alice_key: str, alice: User, services: Services, fake_provider: FakeProvider
) -> None:
    cid = (await client.post("/api/conversations", json={}, headers=auth(alice_key))).json()["conversation"]["id"]
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "a\u0000b"}, headers=auth(alice_key))
    assert r.status_code == 400 and r.json()["error"]["param"] == "content"
    assert r.json()["error"]["code"] == "invalid_text" and "U+0000" in r.json()["error"]["message"]
    r = await client.post(
        "/v1/chat/completions",
        json={"model": "fake", "messages": [{"role": "user", "content": "x\u0000"}]},
        headers=auth(alice_key),
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "messages"
    for url in (f"/api/conversations/{cid}%00", f"/api/conversations/{cid}?before=a%00b"):
        r = await client.get(url, headers=auth(alice_key))
        assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text", url
    assert not fake_provider.requests
    assert await services.store.list_messages(alice.id, cid) == []


async def test_nul_characters_from_the_model_are_dropped(
    client: httpx.AsyncClient, alice_key: str, fake_provider: FakeProvider
) -> None:
    fake_provider.enqueue(Script(chunks=["he\u0000llo", "\u0000", " there"]))
    cid = (await create(client, alice_key))["conversation"]["id"]
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "hi"}, headers=auth(alice_key))
    assert r.status_code == 200 and r.json()["message"]["content"] == "hello there"


@pytest.mark.postgres
async def test_a_nul_character_postgresql_refuses_is_a_400_not_a_500(settings: Settings) -> None:
    async with _postgres_namespace() as stores:
        services = build_services(settings, store=stores(), providers=ProviderRegistry([FakeProvider()]))
        await services.start()
        try:
            app = create_app(settings, services)
            user = await services.store.create_user("dora", password_hash=None)
            key = (await app.state.accounts.create_api_key(user.id, "tests")).secret
            transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                cid = (await c.post("/api/conversations", json={}, headers=auth(key))).json()["conversation"]["id"]
                r = await c.patch(f"/api/conversations/{cid}", json={"title": "a\u0000b"}, headers=auth(key))
                assert r.status_code == 400 and r.json()["error"]["code"] == "invalid_text"
                r = await c.get(f"/api/conversations/{cid}", headers=auth(key))
                assert r.status_code == 200  # the store and the conversation are fine afterwards
        finally:
            await services.aclose()
