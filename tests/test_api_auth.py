"""Authentication and isolation: keys, sessions, CSRF, login links, anonymous use, and 404 for others' things."""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys

import httpx
import pytest
from fastapi import FastAPI

from daehwa.accounts import SESSION_COOKIE, Accounts, bootstrap_owner_message
from daehwa.config import Settings
from daehwa.services import Services
from daehwa.types import User
from tests.api_helpers import auth
from tests.conftest import FakeProvider, Script

pytest_plugins = ["tests.api_fixtures"]

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "a new and longer passphrase"


async def login(client: httpx.AsyncClient, name: str, password: str) -> httpx.Response:
    return await client.post("/api/auth/login", json={"username": name, "password": password})


async def test_missing_invalid_and_revoked_keys_are_401(
    client: httpx.AsyncClient, accounts: Accounts, alice: User
) -> None:
    assert (await client.get("/api/conversations")).status_code == 401
    r = await client.get("/api/conversations", headers=auth("dh-not-a-real-key"))
    assert r.status_code == 401 and r.json()["error"]["type"] == "authentication_error"
    new = await accounts.create_api_key(alice.id, "laptop")
    assert (await client.get("/api/conversations", headers=auth(new.secret))).status_code == 200
    assert await accounts.revoke_api_key(new.record.id)
    r = await client.get("/api/conversations", headers=auth(new.secret))
    assert r.status_code == 401 and r.json()["error"]["code"] == "revoked_api_key"
    assert new.secret not in r.text and new.secret not in repr(new)


async def test_session_login_csrf_and_logout(
    client: httpx.AsyncClient, accounts: Accounts, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    await accounts.create_user("carol", PASSWORD)
    r = await login(client, "carol", "wrong password!")
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"
    r = await login(client, "nobody", PASSWORD)
    assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_credentials"  # no user enumeration

    r = await login(client, "carol", PASSWORD)
    assert r.status_code == 200 and r.json()["user"]["name"] == "carol"
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax")
    assert PASSWORD not in r.text and "password" not in r.json()["user"]
    csrf = r.json()["csrf_token"]

    assert (await client.get("/api/auth/me")).json()["csrf_token"] == csrf
    r = await client.post("/api/conversations", json={})
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = await client.post("/api/conversations", json={}, headers={"X-CSRF-Token": "forged"})
    assert r.status_code == 403
    r = await client.post("/api/conversations", json={}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201

    assert (await client.post("/api/auth/logout")).status_code == 403  # logout needs the token too
    assert (await client.post("/api/auth/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
    assert (await client.get("/api/auth/me")).status_code == 401
    assert PASSWORD not in caplog.text


async def test_api_key_requests_need_no_csrf_and_keys_over_http(
    client: httpx.AsyncClient, alice_key: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    r = await client.post("/api/keys", json={"name": "phone"}, headers=auth(alice_key))
    assert r.status_code == 201
    secret, key = r.json()["secret"], r.json()["key"]
    assert secret.startswith(key["prefix"]) and len(key["prefix"]) < len(secret) / 3
    listed = (await client.get("/api/keys", headers=auth(alice_key))).json()["data"]
    assert secret not in str(listed) and key["id"] in [k["id"] for k in listed]
    assert (await client.get("/api/auth/me", headers=auth(secret))).json()["csrf_token"] is None
    assert (await client.delete(f"/api/keys/{key['id']}", headers=auth(alice_key))).status_code == 204
    assert (await client.get("/api/auth/me", headers=auth(secret))).status_code == 401
    assert secret not in caplog.text and alice_key not in caplog.text


async def test_login_link_and_owner_bootstrap(settings: Settings, services: Services, app) -> None:  # type: ignore[no-untyped-def]
    await services.store.close()  # bootstrap opens the same database itself, as `daehwa serve` does
    message = await bootstrap_owner_message(settings)
    await services.store.open()
    assert message is not None and "/auth/magic?token=" in message and "daehwa keys create --user owner" in message
    assert await bootstrap_owner_message(settings) is None  # only on first start
    token = message.split("token=", 1)[1].split()[0]
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        r = await c.get("/auth/magic", params={"token": token})
        assert r.status_code == 303 and r.headers["location"] == "/" and SESSION_COOKIE in r.headers["set-cookie"]
        me = (await c.get("/api/auth/me")).json()
        assert me["user"]["name"] == "owner" and me["user"]["is_admin"] is True
        csrf = me["csrf_token"]
        r = await c.post("/api/auth/password", json={"new_password": PASSWORD}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 204
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:
        r = await c.get("/auth/magic", params={"token": token})  # one time only
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_login_link"
        assert (await login(c, "owner", PASSWORD)).status_code == 200


def browser(app: FastAPI) -> httpx.AsyncClient:
    """A client with its own cookie jar: one browser."""
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")


async def test_a_password_change_ends_the_other_sessions_and_keeps_this_one(app: FastAPI, accounts: Accounts) -> None:
    carol = await accounts.create_user("carol", PASSWORD)
    key = (await accounts.create_api_key(carol.id, "laptop")).secret
    link = await accounts.create_login_token(carol.id)  # issued before the change, never used
    async with browser(app) as here, browser(app) as there, browser(app) as elsewhere:
        csrf = (await login(here, "carol", PASSWORD)).json()["csrf_token"]
        await login(there, "carol", PASSWORD)
        await login(elsewhere, "carol", PASSWORD)
        assert (await there.get("/api/auth/me")).status_code == 200  # checked, so remembered for a while
        r = await here.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 204

        for other in (there, elsewhere):
            r = await other.get("/api/auth/me")
            assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
        assert (await here.get("/api/auth/me")).json()["csrf_token"] == csrf  # the same session, same token
        assert (await here.post("/api/conversations", json={}, headers={"X-CSRF-Token": csrf})).status_code == 201
        assert (await here.get("/api/conversations", headers=auth(key))).status_code == 200  # API keys stay

        r = await there.get("/auth/magic", params={"token": link})
        assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_login_link"
        assert (await login(there, "carol", PASSWORD)).status_code == 401
        assert (await login(there, "carol", NEW_PASSWORD)).status_code == 200
        assert (await there.get("/api/auth/me")).status_code == 200


async def test_a_password_change_with_an_api_key_ends_every_session(app: FastAPI, accounts: Accounts) -> None:
    carol = await accounts.create_user("carol", PASSWORD)
    key = (await accounts.create_api_key(carol.id, "script")).secret
    async with browser(app) as first, browser(app) as second:
        await login(first, "carol", PASSWORD)
        await login(second, "carol", PASSWORD)
        r = await first.post(
            "/api/auth/password",
            json={"current_password": PASSWORD, "new_password": NEW_PASSWORD},
            headers=auth(key),  # the header wins over the cookie: no browser session made this change
        )
        assert r.status_code == 204
        assert (await first.get("/api/auth/me")).status_code == 401
        assert (await second.get("/api/auth/me")).status_code == 401
        assert (await first.get("/api/auth/me", headers=auth(key))).status_code == 200


async def test_a_wrong_current_password_ends_no_session(app: FastAPI, accounts: Accounts) -> None:
    await accounts.create_user("carol", PASSWORD)
    async with browser(app) as here, browser(app) as there:
        csrf = (await login(here, "carol", PASSWORD)).json()["csrf_token"]
        await login(there, "carol", PASSWORD)
        r = await here.post(
            "/api/auth/password",
            json={"current_password": "not the password", "new_password": NEW_PASSWORD},
            headers={"X-CSRF-Token": csrf},
        )
        assert r.status_code == 403
        assert (await there.get("/api/auth/me")).status_code == 200


async def test_an_admin_password_reset_from_the_cli_ends_every_session(
    app: FastAPI, accounts: Accounts, settings: Settings
) -> None:
    carol = await accounts.create_user("carol", PASSWORD)
    key = (await accounts.create_api_key(carol.id, "laptop")).secret
    async with browser(app) as first, browser(app) as second:
        await login(first, "carol", PASSWORD)
        await login(second, "carol", PASSWORD)
        env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
        env.update(DAEHWA_DATA_DIR=str(settings.data_dir), DAEHWA_DATABASE_URL=settings.resolved_database_url())
        result = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "daehwa", "users", "passwd", "carol", "--password-stdin"],
            input=NEW_PASSWORD + "\n",
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 0, result.stderr
        assert "Ended 2 browser session(s)" in result.stdout and "API keys keep working" in result.stdout
        # Neither session was checked by this server yet, so nothing remembers it (DAEHWA_AUTH_CACHE_SECONDS).
        for session in (first, second):
            r = await session.get("/api/auth/me")
            assert r.status_code == 401 and r.json()["error"]["code"] == "session_expired"
        assert (await first.get("/api/auth/me", headers=auth(key))).status_code == 200
        assert (await login(first, "carol", NEW_PASSWORD)).status_code == 200


async def test_anonymous_only_when_allowed(client: httpx.AsyncClient, settings: Settings) -> None:
    r = await client.post("/api/auth/anonymous")
    assert r.status_code == 403
    settings.allow_anonymous = True
    r = await client.post("/api/auth/anonymous")
    assert r.status_code == 200 and r.json()["user"]["anonymous"] is True
    csrf = r.json()["csrf_token"]
    r = await client.post("/api/conversations", json={"persona": "assistant"}, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 201
    settings.allow_anonymous = False
    assert (await client.get("/api/conversations")).status_code == 401


async def test_isolation_every_route_is_404(
    client: httpx.AsyncClient, alice_key: str, bob_key: str, fake_provider: FakeProvider
) -> None:
    r = await client.post("/api/conversations", json={}, headers=auth(alice_key))
    cid = r.json()["conversation"]["id"]
    fake_provider.enqueue(Script(chunks=["secret answer"]))
    r = await client.post(f"/api/conversations/{cid}/messages", json={"content": "my secret"}, headers=auth(alice_key))
    assert r.status_code == 200
    base = f"/api/conversations/{cid}"
    attempts = [
        ("GET", base, None),
        ("PATCH", base, {"title": "mine now"}),
        ("DELETE", base, None),
        ("POST", f"{base}/messages", {"content": "hi"}),
        ("POST", f"{base}/messages", {"content": "hi", "stream": True}),
        ("POST", f"{base}/regenerate", {}),
        ("POST", f"{base}/regenerate", {"stream": True}),
        ("POST", f"{base}/edit", {"content": "changed"}),
        ("POST", f"{base}/stop", None),
    ]
    for method, url, body in attempts:
        r = await client.request(method, url, json=body, headers=auth(bob_key))
        assert r.status_code == 404, (method, url, r.text)
        assert r.json()["error"]["code"] == "not_found" and "secret" not in r.text
    assert (await client.get("/api/conversations", headers=auth(bob_key))).json()["data"] == []
    # Alice's conversation is untouched.
    r = await client.get(base, headers=auth(alice_key))
    assert [m["content"] for m in r.json()["messages"]] == ["my secret", "secret answer"]
    assert r.json()["conversation"]["title"] == "my secret"
