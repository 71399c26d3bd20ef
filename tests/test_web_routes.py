"""The page's routes without a browser: security headers, cached static files, the render endpoint, package data."""

from __future__ import annotations

import fnmatch
import re
import tomllib
from pathlib import Path

import httpx
import pytest

from daehwa.accounts import Accounts
from daehwa.api.web import CONTENT_SECURITY_POLICY, MAX_RENDER_ITEMS, load_assets
from daehwa.config import Settings
from daehwa.types import User
from tests.api_helpers import auth

pytest_plugins = ["tests.api_fixtures"]

ROOT = Path(__file__).resolve().parents[1]
WEB = ROOT / "daehwa" / "web"
PASSWORD = "correct horse battery staple"


async def session(client: httpx.AsyncClient, accounts: Accounts) -> str:
    """Log carol in with a password; the client keeps the cookie; returns the CSRF token."""
    await accounts.create_user("carol", PASSWORD)
    r = await client.post("/api/auth/login", json={"username": "carol", "password": PASSWORD})
    assert r.status_code == 200, r.text
    return str(r.json()["csrf_token"])


@pytest.mark.parametrize("path", ["/", "/login", "/c/some-conversation-id"])
async def test_the_page_is_served_with_a_strict_csp(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path, headers={"Accept-Language": "en-US,en;q=0.9"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "text/html; charset=utf-8"
    csp = r.headers["content-security-policy"]
    assert csp == CONTENT_SECURITY_POLICY
    directives = dict(d.split(" ", 1) for d in csp.split("; "))
    assert directives["default-src"] == "'none'"
    for name in ("script-src", "style-src", "img-src", "connect-src"):
        assert directives[name] == "'self'", name  # no 'unsafe-inline', no other origin
    assert directives["frame-ancestors"] == "'none'"
    assert directives["require-trusted-types-for"] == "'script'"
    assert r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["referrer-policy"] == "no-referrer"
    assert r.headers["cache-control"] == "no-cache"
    assert '<html lang="en"' in r.text


async def test_the_page_has_no_inline_script_or_style_and_no_foreign_url(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    assert re.findall(r"<script(?![^>]*\bsrc=)[^>]*>", html) == []  # every script is a file
    assert "<style" not in html
    assert not re.search(r"\sstyle=", html)
    assert not re.search(r"\son[a-z]+=", html)
    assert not re.search(r"(src|href)=\"(https?:)?//", html)
    # Korean is the home language when the browser names none of ours.
    assert '<html lang="ko"' in (await client.get("/", headers={"Accept-Language": "fr"})).text


async def test_the_guest_button_is_on_the_page_only_while_anonymous_chat_is_allowed(
    client: httpx.AsyncClient, settings: Settings
) -> None:
    assert 'id="guest-login"' not in (await client.get("/login")).text
    settings.allow_anonymous = True  # read for each page, like POST /api/auth/anonymous reads it
    html = (await client.get("/login")).text
    assert 'id="guest-login"' in html and 'data-i18n="guest_login"' in html
    assert not re.search(r"\son[a-z]+=", html)  # the button is wired up by app.js, not inline
    settings.allow_anonymous = False
    assert 'id="guest-login"' not in (await client.get("/")).text


async def test_static_files_are_versioned_immutable_and_revalidated(client: httpx.AsyncClient) -> None:
    html = (await client.get("/")).text
    linked = re.findall(r"/static/([\w./-]+)\?v=([0-9a-f]{16})", html)
    assert {path for path, _ in linked} >= {"app.js", "style.css", "highlight.css", "theme.js", "icon.svg"}
    for path, version in linked:
        r = await client.get(f"/static/{path}?v={version}")
        assert r.status_code == 200, path
        assert r.headers["cache-control"] == "public, max-age=31536000, immutable"
        assert r.headers["etag"] == f'"{version}"'
        assert r.headers["content-security-policy"] == CONTENT_SECURITY_POLICY
    # Modules imported by app.js are unversioned: revalidated, answered 304 when unchanged.
    r = await client.get("/static/api.js")
    assert r.headers["cache-control"] == "no-cache"
    assert r.headers["content-type"] == "text/javascript; charset=utf-8"
    again = await client.get("/static/api.js", headers={"If-None-Match": r.headers["etag"]})
    assert again.status_code == 304 and again.content == b""
    # A stale version string is not cached forever.
    assert (await client.get("/static/app.js?v=0000000000000000")).headers["cache-control"] == "no-cache"


@pytest.mark.parametrize(
    "path", ["/static/nope.js", "/static/../rendering.py", "/static/", "/static/%2e%2e/api/web.py"]
)
async def test_unknown_static_paths_are_404(client: httpx.AsyncClient, path: str) -> None:
    r = await client.get(path)
    assert r.status_code == 404
    assert "def " not in r.text


async def test_highlight_css_is_generated_for_both_themes(client: httpx.AsyncClient) -> None:
    r = await client.get("/static/highlight.css")
    assert r.headers["content-type"] == "text/css; charset=utf-8"
    assert '[data-theme="dark"] .codeblock .k' in r.text
    assert ':root:not([data-theme="dark"]) .codeblock .k' in r.text


async def test_render_needs_a_login_and_the_csrf_header(client: httpx.AsyncClient, accounts: Accounts) -> None:
    body = {"items": [{"role": "assistant", "content": "**hi**"}]}
    assert (await client.post("/api/web/render", json=body)).status_code == 401
    csrf = await session(client, accounts)
    r = await client.post("/api/web/render", json=body)
    assert r.status_code == 403 and r.json()["error"]["code"] == "csrf_failed"
    r = await client.post("/api/web/render", json=body, headers={"X-CSRF-Token": csrf})
    assert r.status_code == 200
    assert r.json() == {"html": ["<p><strong>hi</strong></p>\n"]}


async def test_render_sanitises_and_keeps_order(client: httpx.AsyncClient, alice: User, alice_key: str) -> None:
    items = [
        {"role": "assistant", "content": "<img src=x onerror=alert(1)> [x](javascript:alert(1))"},
        {"role": "user", "content": "**not markdown** <b>"},
        {"role": "assistant", "content": "```js\nalert(1)\n```"},
    ]
    r = await client.post("/api/web/render", json={"items": items}, headers=auth(alice_key))
    assert r.status_code == 200
    first, second, third = r.json()["html"]
    assert first == "<p>&lt;img src=x onerror=alert(1)&gt; [x](javascript:alert(1))</p>\n"  # text, not markup
    assert second == "<p>**not markdown** &lt;b&gt;</p>"
    assert third.startswith('<div class="codeblock" data-lang="js">')


async def test_render_refuses_too_much_at_once(client: httpx.AsyncClient, alice: User, alice_key: str) -> None:
    too_many = {"items": [{"content": "x"}] * (MAX_RENDER_ITEMS + 1)}
    r = await client.post("/api/web/render", json=too_many, headers=auth(alice_key))
    assert r.status_code == 400 and r.json()["error"]["param"].startswith("items")
    r = await client.post(
        "/api/web/render", json={"items": [{"role": "robot", "content": "x"}]}, headers=auth(alice_key)
    )
    assert r.status_code == 400


def test_every_web_file_ships_in_the_package() -> None:
    # The wheel takes package data from these globs; a file they miss would 404 after `pip install daehwa`.
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    globs = config["tool"]["setuptools"]["package-data"]["daehwa"]
    files = [p.relative_to(ROOT / "daehwa").as_posix() for p in WEB.rglob("*") if p.is_file() and p.suffix != ".pyc"]
    files = [f for f in files if not f.endswith("__init__.py")]
    assert files, "daehwa/web has no files"
    missed = [f for f in files if not any(fnmatch.fnmatch(f, g) for g in globs)]
    assert missed == []
    # ... and the router serves each static file under its own path.
    assets = load_assets()
    for f in files:
        if f.startswith("web/static/"):
            assert f.removeprefix("web/static/") in assets
