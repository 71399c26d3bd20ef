"""Deleting an account (``DELETE /api/me``, ``daehwa users delete``), the per-user interests switch
(``PUT /api/me/interests``, ``/interests off|on``) and dismissed recommendations staying dismissed on stored replies,
through the real app (docs/api.md, docs/intelligence.md)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import httpx
import pytest

from daehwa.accounts import SESSION_COOKIE, Accounts
from daehwa.api.stream import ActiveTurns
from daehwa.chat import TurnRequest
from daehwa.config import Settings
from daehwa.services import Services
from daehwa.stores.base import DELETED_USER_ID
from daehwa.types import User
from tests.api_helpers import LiveServer, auth
from tests.conftest import FakeProvider
from tests.test_accounts import FAST_HASHER, cli_accounts, cli_env, daehwa, failed  # noqa: F401  (cli_env: fixture)
from tests.test_intelligence import embedded_guides
from tests.test_stores_deletion import ALL_KINDS

pytest_plugins = ["tests.api_fixtures"]

PASSWORD = "correct horse battery staple"


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    # A loaded machine can take longer than the default 2 s hook bound to embed the catalogue on its first use.
    return Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model="fake",
        stream_flush_seconds=0.05,
        filter_output_action="off",
        pipeline_hook_timeout_seconds=30.0,
        _env_file=None,  # type: ignore[call-arg]
    )


async def _session(client: httpx.AsyncClient, name: str, password: str = PASSWORD) -> dict[str, str]:
    r = await client.post("/api/auth/login", json={"username": name, "password": password})
    assert r.status_code == 200, r.text
    return {"X-CSRF-Token": r.json()["csrf_token"]}


async def _delete_me(client: httpx.AsyncClient, headers: dict[str, str], **body: object) -> httpx.Response:
    return await client.request("DELETE", "/api/me", json=body, headers=headers)


async def test_deleting_your_account_removes_it_and_every_credential_stops_at_once(
    client: httpx.AsyncClient, accounts: Accounts, services: Services, bob: User, bob_key: str
) -> None:
    carol = await accounts.create_user("carol", PASSWORD)
    key = (await accounts.create_api_key(carol.id, "laptop")).secret
    csrf = await _session(client, "carol")
    # Some history, a learned interest and usage, to be deleted (and the usage kept detached).
    r = await client.post("/api/conversations", json={"persona": "guide"}, headers=auth(key))
    cid = r.json()["conversation"]["id"]
    ask = {"content": "레디스 캐시 설정은 어떻게 하나요?"}
    assert (await client.post(f"/api/conversations/{cid}/messages", json=ask, headers=auth(key))).status_code == 200
    await services.chat.drain()
    assert await services.store.list_interests(carol.id)
    assert (await client.get("/api/conversations", headers=auth(key))).status_code == 200  # the key is cached now
    bob_cid = (await client.post("/api/conversations", json={}, headers=auth(bob_key))).json()["conversation"]["id"]

    r = await _delete_me(client, csrf, confirm="Carol", password=PASSWORD)
    assert r.status_code == 400 and r.json()["error"]["code"] == "confirmation_required" and "('carol')" in r.text
    r = await _delete_me(client, csrf, confirm="carol")
    assert r.status_code == 403 and r.json()["error"]["code"] == "invalid_credentials"
    r = await _delete_me(client, csrf, confirm="carol", password="not my password")
    assert r.status_code == 403
    r = await _delete_me(client, {}, confirm="carol", password=PASSWORD)  # the cookie without its CSRF token
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    assert await services.store.get_user(carol.id) is not None  # nothing happened yet

    r = await _delete_me(client, csrf, confirm="carol", password=PASSWORD)
    assert r.status_code == 200, r.text
    assert r.json() == {
        "deleted": True,
        "conversations": 1,
        "form_records": 0,
        "api_keys": 1,
        "sessions": 1,
        "usage_records_kept": 1,
    }
    assert SESSION_COOKIE in r.headers["set-cookie"] and "Max-Age=0" in r.headers["set-cookie"]

    # The cookie (sent again by hand: the response cleared it) and the cached key: both 401 at once.
    token = client.cookies.get(SESSION_COOKIE) or ""
    client.cookies.clear()
    for headers in ({"Cookie": f"{SESSION_COOKIE}={token}"}, auth(key)):
        assert (await client.get("/api/auth/me", headers=headers)).status_code == 401
    r = await client.post("/api/auth/login", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 401
    assert await services.store.get_user(carol.id) is None
    assert await services.store.list_interests(carol.id) == []
    assert await services.store.list_conversations(carol.id) == []
    totals = {t.user_id for t in await services.store.usage_totals()}
    assert DELETED_USER_ID in totals and carol.id not in totals
    # Bob is untouched.
    assert (await client.get(f"/api/conversations/{bob_cid}", headers=auth(bob_key))).status_code == 200


async def test_an_api_key_user_without_a_password_confirms_with_the_name(
    client: httpx.AsyncClient, services: Services, alice: User, alice_key: str
) -> None:
    r = await client.request("DELETE", "/api/me", headers=auth(alice_key))
    assert r.status_code == 400  # no body: no confirmation
    r = await _delete_me(client, auth(alice_key), confirm="alice")
    assert r.status_code == 200, r.text
    assert r.json()["api_keys"] == 1
    assert (await client.get("/api/conversations", headers=auth(alice_key))).status_code == 401
    assert await services.store.get_user(alice.id) is None


async def test_the_last_admin_cannot_delete_itself(client: httpx.AsyncClient, accounts: Accounts) -> None:
    owner = await accounts.create_user("owner", None, is_admin=True)
    key = (await accounts.create_api_key(owner.id)).secret
    r = await _delete_me(client, auth(key), confirm="owner")
    assert r.status_code == 409 and r.json()["error"]["code"] == "last_admin"
    assert "daehwa users create NAME --admin" in r.json()["error"]["message"]
    await accounts.create_user("second", None, is_admin=True)
    assert (await _delete_me(client, auth(key), confirm="owner")).status_code == 200


async def test_deletion_stops_the_users_streaming_reply_first(
    live_server: LiveServer, services: Services, alice: User, alice_key: str, fake_provider: FakeProvider
) -> None:
    from tests.test_api_stream import HANGING, new_conversation, sse_events

    cid = await new_conversation(live_server.base_url, alice_key)
    fake_provider.enqueue(HANGING)
    events = []
    async with (
        httpx.AsyncClient(base_url=live_server.base_url) as c,
        c.stream(
            "POST", f"/api/conversations/{cid}/messages", json={"content": "story", "stream": True},
            headers=auth(alice_key),
        ) as r,
    ):  # fmt: skip
        async for kind, data in sse_events(r):
            events.append((kind, data))
            if kind == "delta" and len(events) == 2:
                gone = await c.request("DELETE", "/api/me", json={"confirm": "alice"}, headers=auth(alice_key))
                assert gone.status_code == 200, gone.text
                assert gone.json()["conversations"] == 1 and gone.json()["usage_records_kept"] == 1
    assert events[-1][0] == "done" and events[-1][1]["outcome"] == "interrupted"  # the stream ended, not hung
    assert fake_provider.cancelled == 1
    # The reply it stored when it stopped went with the account; its usage stayed, detached.
    assert await services.store.list_conversations(alice.id, ALL_KINDS) == []
    totals = await services.store.usage_totals()
    assert [t.user_id for t in totals] == [DELETED_USER_ID]


async def test_another_process_forgets_a_deleted_user_through_the_signal(
    settings: Settings, alice: User, services: Services
) -> None:
    """Two Accounts with warm caches stand for two server processes; the signal one sends empties the other's."""
    here, there = Accounts(services.store, settings, hasher=FAST_HASHER), Accounts(services.store, settings)
    key = (await here.create_api_key(alice.id)).secret
    assert (await there.user_for_api_key(key)).id == alice.id  # cached in "there"
    turns = ActiveTurns(services.store)
    turns.on_user_deleted.append(there.forget_user)
    await turns.open()
    try:
        await here.delete_user(alice.id)
        assert (await there.user_for_api_key(key)).id == alice.id  # still cached: no signal yet
        await turns.end_user(alice.id, wait=False)
        with pytest.raises(Exception, match="Invalid API key"):
            await there.user_for_api_key(key)
    finally:
        await turns.close()


# -- the interests switch -----------------------------------------------------------------------------------------
def _system(fake: FakeProvider) -> str:
    return fake.requests[-1].messages[0].content


async def test_interests_off_learns_and_uses_nothing_and_on_again(
    client: httpx.AsyncClient, services: Services, alice: User, alice_key: str, fake_provider: FakeProvider
) -> None:
    for text in ("레디스 캐시 설정을 어떻게 하나요?", "레디스 캐시 만료 시간이 궁금해요", "레디스 캐시 키 설계"):
        await services.chat.run(TurnRequest(user=alice, content=text, persona="guide"))
    await services.chat.drain()
    await services.chat.run(TurnRequest(user=alice, content="안녕하세요", persona="guide"))
    assert "관심이 많습니다" in _system(fake_provider)
    r = await client.put("/api/me/interests", json={"enabled": False}, headers=auth(alice_key))
    assert r.status_code == 200 and r.json()["enabled"] is False
    assert "레디스 캐시" in [i["term"] for i in r.json()["data"]]  # kept, to see and delete

    await services.chat.run(TurnRequest(user=alice, content="파이썬 비동기 프로그래밍 질문", persona="guide"))
    await services.chat.drain()
    assert "관심이 많습니다" not in _system(fake_provider)  # nothing remembered goes into the prompt
    r = await client.get("/api/me/interests", headers=auth(alice_key))
    assert r.json()["enabled"] is False and "비동기" not in str(r.json()["data"])  # and nothing new is learned

    r = await client.put("/api/me/interests", json={"enabled": True}, headers=auth(alice_key))
    assert r.json()["enabled"] is True
    await services.chat.run(TurnRequest(user=alice, content="파이썬 비동기 프로그래밍 질문", persona="guide"))
    await services.chat.drain()
    assert "사용자는 레디스 캐시" in _system(fake_provider)
    learned = (await client.get("/api/me/interests", headers=auth(alice_key))).json()["data"]
    assert "파이썬" in [i["term"] for i in learned]
    assert (await client.put("/api/me/interests", json={}, headers=auth(alice_key))).status_code == 400


async def test_guests_cannot_switch_interests(client: httpx.AsyncClient, settings: Settings) -> None:
    settings.allow_anonymous = True
    r = await client.post("/api/auth/anonymous")
    csrf = {"X-CSRF-Token": r.json()["csrf_token"]}
    got = (await client.get("/api/me/interests")).json()
    assert got == {"data": [], "enabled": False, "anonymous": True}
    assert (await client.put("/api/me/interests", json={"enabled": True}, headers=csrf)).status_code == 403


def test_slash_interests_off_and_on_in_daehwa_chat(tmp_path: Path) -> None:
    import os

    from .test_cli import DAEHWA

    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(DAEHWA_DATA_DIR=str(tmp_path / "data"), DAEHWA_LOG_LEVEL="warning", COLUMNS="200")
    commands = "/interests off\n/interests\n/interests on\n/interests\n"
    result = subprocess.run([*DAEHWA, "chat"], input=commands, env=env, capture_output=True, text=True, timeout=90)
    assert result.returncode == 0, result.stderr
    off, _, on = result.stderr.partition("interests on: learned and used again")
    assert "interests off: nothing learned or used" in off and "interests are off" in off
    assert "interests are off" not in on


# -- dismissed cards ----------------------------------------------------------------------------------------------
async def test_a_dismissed_card_is_gone_from_the_stored_reply_too(
    client: httpx.AsyncClient, services: Services, alice_key: str, bob_key: str
) -> None:
    await embedded_guides(services)
    r = await client.post("/api/conversations", json={"persona": "guide"}, headers=auth(alice_key))
    cid = r.json()["conversation"]["id"]
    ask = {"content": "파이썬 코드가 너무 느린데 성능 최적화는 어떻게 하나요?"}
    r = await client.post(f"/api/conversations/{cid}/messages", json=ask, headers=auth(alice_key))
    picks = [p["id"] for p in r.json()["reply_meta"]["recommendations"]]
    assert "python-performance" in picks and len(picks) >= 2

    fb = {"catalogue": "daehwa-guides", "item_id": "python-performance", "action": "dismiss"}
    assert (await client.post("/api/recommendations/feedback", json=fb, headers=auth(alice_key))).status_code == 204
    r = await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))
    reply = [m for m in r.json()["messages"] if m["role"] == "assistant"][-1]
    assert [p["id"] for p in reply["recommendations"]] == [p for p in picks if p != "python-performance"]

    # Another user's dismissal changes nothing for Alice.
    other = {**fb, "item_id": picks[1]}
    assert (await client.post("/api/recommendations/feedback", json=other, headers=auth(bob_key))).status_code == 204
    r = await client.get(f"/api/conversations/{cid}", headers=auth(alice_key))
    assert picks[1] in [p["id"] for p in r.json()["messages"][-1]["recommendations"]]


# -- the command line ---------------------------------------------------------------------------------------------
async def test_cli_users_delete_asks_refuses_the_last_admin_and_deletes(cli_env: dict[str, str]) -> None:  # noqa: F811
    assert daehwa(cli_env, "users", "create", "boss", "--admin", "--no-password").returncode == 0
    assert daehwa(cli_env, "users", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n").returncode == 0
    assert failed(daehwa(cli_env, "users", "delete", "boss", "--yes"), "only admin", "--admin")
    assert failed(daehwa(cli_env, "users", "delete", "nobody", "--yes"), "There is no user 'nobody'")
    no = daehwa(cli_env, "users", "delete", "carol", stdin="n\n")
    assert no.returncode == 1 and "Nothing deleted" in no.stderr
    async with cli_accounts(cli_env) as accounts:
        carol = await accounts.user_by_name("carol")
        await accounts.create_api_key(carol.id, "k")
        await accounts.store.create_conversation(carol.id)
    yes = daehwa(cli_env, "users", "delete", "carol", stdin="y\n")
    assert yes.returncode == 0, yes.stderr
    assert "Deleted user carol." in yes.stdout and "1 conversation(s)" in yes.stdout and "1 API key(s)" in yes.stdout
    async with cli_accounts(cli_env) as accounts:
        assert await accounts.store.get_user_by_name("carol") is None
        assert [u.name for u in await accounts.store.list_users()] == ["boss"]


@pytest.mark.redis
async def test_the_user_deleted_signal_reaches_another_process_over_redis(settings: Settings) -> None:
    """Two stores and two turn registries on one Redis prefix: what two server processes share."""
    from tests.api_helpers import wait_for
    from tests.test_stores import _redis_namespace

    async with _redis_namespace() as factory:
        here_store, there_store = factory(), factory()
        await here_store.open()
        await there_store.open()
        here_turns, there_turns = ActiveTurns(here_store), ActiveTurns(there_store)
        here, there = Accounts(here_store, settings, hasher=FAST_HASHER), Accounts(there_store, settings)
        there_turns.on_user_deleted.append(there.forget_user)
        await here_turns.open()
        await there_turns.open()
        try:
            user = await here.create_user("remote-gone", None)
            key = (await here.create_api_key(user.id)).secret
            assert (await there.user_for_api_key(key)).id == user.id  # cached over there
            await here.delete_user(user.id)
            await here_turns.end_user(user.id, wait=False)  # as DELETE /api/me does after the deletion

            async def refused() -> bool:
                try:
                    await there.user_for_api_key(key)
                except Exception:
                    return True
                return False

            assert await wait_for(refused, within=3.0)
        finally:
            await here_turns.close()
            await there_turns.close()
            await here_store.close()
            await there_store.close()
