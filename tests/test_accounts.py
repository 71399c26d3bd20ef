"""Accounts in process (on the real SQLite store), and ``daehwa users`` / ``daehwa keys`` as real subprocesses."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import asdict
from datetime import datetime, timedelta
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from daehwa import accounts as accounts_module
from daehwa.accounts import KEY_PREFIX_SHOWN, Accounts, Session, bootstrap_owner_message
from daehwa.config import Settings
from daehwa.errors import AuthenticationError, Conflict, InvalidRequest, NotFound
from daehwa.services import Services
from daehwa.stores import open_store
from daehwa.types import User

pytest_plugins = ["tests.api_fixtures"]

# api_fixtures' cheap parameters (importing it here would stop pytest rewriting its asserts); verifying a hash reads
# the parameters from the hash, so this also checks the CLI's production-strength hashes.
FAST_HASHER = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)

PASSWORD = "correct horse battery staple"
NEW_PASSWORD = "tr0ub4dor & 3, with spaces "  # the trailing space is part of it: only the line end is stripped


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


def link_token(link: str) -> str:
    return link.split("token=", 1)[1].split()[0]


def shift_clock(monkeypatch: pytest.MonkeyPatch, by: timedelta) -> None:
    """Make ``Accounts`` believe it is ``by`` later (negative: earlier) when it stamps expiry times."""

    class Shifted(datetime):
        @classmethod
        def now(cls, tz=None):  # type: ignore[no-untyped-def]
            return datetime.now(tz) + by

    monkeypatch.setattr(accounts_module, "datetime", Shifted)


# -- in process ------------------------------------------------------------------------------------------------
async def test_users_passwords_and_their_errors(accounts: Accounts) -> None:
    carol = await accounts.create_user("carol", PASSWORD)
    assert (await accounts.check_password("carol", PASSWORD)).id == carol.id
    stored = await accounts.store.get_user(carol.id)
    assert stored is not None and stored.password_hash is not None
    assert stored.password_hash.startswith("$argon2id$") and PASSWORD not in stored.password_hash

    with pytest.raises(Conflict) as taken:
        await accounts.create_user("carol", PASSWORD)
    assert taken.value.status == 409 and "choose another name" in taken.value.message
    with pytest.raises(InvalidRequest, match="no spaces"):
        await accounts.create_user("carol smith", PASSWORD)
    with pytest.raises(InvalidRequest, match="at least 8 characters"):
        await accounts.create_user("dave", "short")
    assert [u.name for u in await accounts.store.list_users()] == ["carol"]  # the refused ones left nothing

    # A wrong password and an unknown name are one error, so names cannot be probed.
    for name, password in (("carol", "not the password"), ("nobody", PASSWORD), ("carol", "x" * 5000)):
        with pytest.raises(AuthenticationError) as wrong:
            await accounts.check_password(name, password)
        assert wrong.value.code == "invalid_credentials"

    await accounts.set_password(carol.id, NEW_PASSWORD)
    with pytest.raises(AuthenticationError):
        await accounts.check_password("carol", PASSWORD)
    assert (await accounts.check_password("carol", NEW_PASSWORD)).id == carol.id
    assert not await accounts.verify_user_password(carol.id, PASSWORD)
    with pytest.raises(NotFound):
        await accounts.set_password("no-such-id", NEW_PASSWORD)

    passwordless = await accounts.create_user("erin", None)
    assert not await accounts.has_password(passwordless.id) and await accounts.has_password(carol.id)
    with pytest.raises(AuthenticationError):
        await accounts.check_password("erin", "")  # no password is not an empty password


async def test_api_keys_are_hashed_listed_without_secrets_and_revocable(accounts: Accounts, alice: User, bob: User):
    new = await accounts.create_api_key(alice.id, "laptop")
    assert new.secret.startswith("dh-") and len(new.secret) > 40
    assert new.record.prefix == new.secret[:KEY_PREFIX_SHOWN] and new.secret not in repr(new)
    assert (await accounts.user_for_api_key(new.secret)).id == alice.id

    listed = await accounts.list_api_keys(alice.id)
    assert [k.id for k in listed] == [new.record.id] and listed[0].name == "laptop"
    shown = str([asdict(k) for k in await accounts.list_api_keys()])
    assert new.secret not in shown and sha256(new.secret) not in shown
    assert await accounts.list_api_keys(bob.id) == []

    assert not await accounts.revoke_api_key(new.record.id, user_id=bob.id)  # not bob's to revoke
    assert (await accounts.user_for_api_key(new.secret)).id == alice.id
    assert await accounts.revoke_api_key(new.record.id)  # the key was cached above: it must stop at once anyway
    with pytest.raises(AuthenticationError) as revoked:
        await accounts.user_for_api_key(new.secret)
    assert revoked.value.code == "revoked_api_key" and new.secret not in revoked.value.message
    assert (await accounts.list_api_keys(alice.id))[0].revoked_at is not None

    for wrong in ("dh-" + "x" * 43, new.secret[:-1], "sk-somebody-elses", ""):
        with pytest.raises(AuthenticationError) as unknown:
            await accounts.user_for_api_key(wrong)
        assert not wrong or wrong not in unknown.value.message
    with pytest.raises(NotFound):
        await accounts.create_api_key("no-such-id")


async def test_sessions_carry_a_csrf_token_and_end(accounts: Accounts, alice: User, monkeypatch: pytest.MonkeyPatch):
    session = await accounts.create_session(alice)
    assert session.token and session.csrf_token and session.token != session.csrf_token
    assert session.token not in repr(session) and session.csrf_token not in repr(session)
    found = await accounts.session(session.token)
    assert found is not None and found.user.id == alice.id and found.csrf_token == session.csrf_token
    assert await accounts.session(session.token + "x") is None
    await accounts.end_session(session.token)
    assert await accounts.session(session.token) is None

    shift_clock(monkeypatch, -timedelta(days=accounts.settings.session_days, minutes=1))
    stale = await accounts.create_session(alice)  # made a session-lifetime ago: expired now
    assert await accounts.session(stale.token) is None


async def test_set_password_ends_the_users_other_sessions_and_links(accounts: Accounts, alice: User, bob: User):
    kept, other = await accounts.create_session(alice), await accounts.create_session(alice)
    bobs = await accounts.create_session(bob)
    old_link = await accounts.create_login_token(alice.id)
    assert await accounts.session(other.token) is not None  # remembered (DAEHWA_AUTH_CACHE_SECONDS)

    assert await accounts.set_password(alice.id, PASSWORD, keep_session=kept.token) == 2  # other + the link
    assert await accounts.session(kept.token) is not None
    assert await accounts.session(other.token) is None
    assert await accounts.session(bobs.token) is not None
    with pytest.raises(AuthenticationError):
        await accounts.redeem_login_token(old_link)
    new_link = await accounts.create_login_token(alice.id)  # a link made after the change works
    fresh = await accounts.redeem_login_token(new_link)

    assert await accounts.set_password(alice.id, NEW_PASSWORD) == 2  # no session kept: kept and fresh end
    assert await accounts.session(kept.token) is None and await accounts.session(fresh.token) is None
    with pytest.raises(NotFound):
        await accounts.set_password("no-such-id", NEW_PASSWORD)


async def test_a_session_read_during_a_password_change_is_not_remembered(
    accounts: Accounts, alice: User, monkeypatch: pytest.MonkeyPatch
) -> None:
    other = await accounts.create_session(alice)
    read, paused, resume = accounts.store.get_session, asyncio.Event(), asyncio.Event()

    async def read_then_wait(token_hash: str):  # type: ignore[no-untyped-def]
        record = await read(token_hash)
        paused.set()
        await resume.wait()
        return record

    monkeypatch.setattr(accounts.store, "get_session", read_then_wait)
    lookup = asyncio.create_task(accounts.session(other.token))
    await paused.wait()  # it has read the session from the store, before the change
    monkeypatch.undo()
    await accounts.set_password(alice.id, PASSWORD)
    resume.set()
    assert await lookup is not None  # that one request was already past the check
    assert await accounts.session(other.token) is None  # but the session was not remembered for later ones


async def test_a_login_link_works_once(accounts: Accounts, alice: User) -> None:
    token = await accounts.create_login_token(alice.id)
    link = accounts.login_link(token)
    assert link == f"http://127.0.0.1:{accounts.settings.port}/auth/magic?token={token}"
    session = await accounts.redeem_login_token(token)
    assert isinstance(session, Session) and session.user.id == alice.id and session.token != token
    assert (await accounts.session(session.token)) is not None
    with pytest.raises(AuthenticationError) as used:
        await accounts.redeem_login_token(token)
    assert used.value.code == "invalid_login_link" and "daehwa users login-link" in used.value.message


async def test_a_login_link_is_not_a_session_cookie(accounts: Accounts, alice: User) -> None:
    token = await accounts.create_login_token(alice.id)
    # The link's stored hash is sha256("login-link:" + token); a cookie of that text hashes to the same value, and
    # must not become a reusable session that never spends the one-time link.
    assert await accounts.session(token) is None
    assert await accounts.session("login-link:" + token) is None
    assert (await accounts.redeem_login_token(token)).user.id == alice.id


async def test_a_login_link_redeemed_twice_at_once_logs_in_once(accounts: Accounts, alice: User) -> None:
    token = await accounts.create_login_token(alice.id)
    results = await asyncio.gather(*(accounts.redeem_login_token(token) for _ in range(3)), return_exceptions=True)
    assert sum(isinstance(r, Session) for r in results) == 1, results
    assert sum(isinstance(r, AuthenticationError) for r in results) == 2, results


@pytest.mark.parametrize(("hours", "works"), [(1.0, False), (3.0, True)])
async def test_a_login_link_expires_after_login_link_hours(
    accounts: Accounts, alice: User, monkeypatch: pytest.MonkeyPatch, hours: float, works: bool
) -> None:
    accounts.settings.login_link_hours = hours
    shift_clock(monkeypatch, -timedelta(hours=2))  # the link was made two hours ago
    token = await accounts.create_login_token(alice.id)
    monkeypatch.undo()
    if works:
        assert (await accounts.redeem_login_token(token)).user.id == alice.id
    else:
        with pytest.raises(AuthenticationError, match="expired"):
            await accounts.redeem_login_token(token)


async def test_bootstrap_creates_one_owner_on_an_empty_store_only(accounts: Accounts, settings: Settings) -> None:
    created = await accounts.bootstrap_owner()
    assert created is not None
    owner, token = created
    users = await accounts.store.list_users()
    assert [(u.name, u.is_admin) for u in users] == [("owner", True)]
    assert not await accounts.has_password(owner.id)  # the owner sets one after the first login
    assert await accounts.bootstrap_owner() is None  # a second start
    assert len(await accounts.store.list_users()) == 1
    assert (await accounts.redeem_login_token(token)).user.id == owner.id


async def test_bootstrap_from_two_processes_at_once_makes_one_owner(services: Services, settings: Settings) -> None:
    first = Accounts(services.store, settings, hasher=FAST_HASHER)
    second = Accounts(services.store, settings, hasher=FAST_HASHER)
    results = await asyncio.gather(first.bootstrap_owner(), second.bootstrap_owner())
    assert sum(r is not None for r in results) == 1
    assert [u.name for u in await services.store.list_users()] == ["owner"]


async def test_bootstrap_leaves_a_store_with_users_alone(settings: Settings, services: Services, alice: User) -> None:
    await services.store.close()  # bootstrap_owner_message opens the database itself, as `daehwa serve` does
    try:
        assert await bootstrap_owner_message(settings) is None
    finally:
        await services.store.open()
    assert [u.name for u in await services.store.list_users()] == ["alice"]


async def test_no_secret_reaches_the_logs(accounts: Accounts, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    carol = await accounts.create_user("carol", PASSWORD)
    await accounts.check_password("carol", PASSWORD)
    with pytest.raises(AuthenticationError):
        await accounts.check_password("carol", NEW_PASSWORD)
    await accounts.set_password(carol.id, NEW_PASSWORD)
    key = await accounts.create_api_key(carol.id, "k")
    await accounts.user_for_api_key(key.secret)
    await accounts.revoke_api_key(key.record.id)
    with pytest.raises(AuthenticationError):
        await accounts.user_for_api_key(key.secret)
    link = await accounts.create_login_token(carol.id)
    session = await accounts.redeem_login_token(link)
    await accounts.session(session.token)
    await accounts.end_session(session.token)
    secrets = [PASSWORD, NEW_PASSWORD.strip(), key.secret, sha256(key.secret), link, session.token, session.csrf_token]
    for secret in secrets:
        assert secret not in caplog.text


# -- the command line ------------------------------------------------------------------------------------------
@pytest.fixture
def cli_env(tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("DAEHWA_", "OPENAI_"))}
    env.update(DAEHWA_DATA_DIR=str(tmp_path / "data"), DAEHWA_LOG_LEVEL="debug", COLUMNS="200")
    return env


def daehwa(env: dict[str, str], *args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "daehwa", *args], env=env, input=stdin, capture_output=True, text=True, timeout=60
    )
    assert "Traceback" not in result.stderr, result.stderr
    return result


def failed(result: subprocess.CompletedProcess[str], *words: str) -> bool:
    """Refused with a one-line error naming the problem (exit code 2, nothing on stdout)."""
    message = result.stderr.strip()
    return (
        result.returncode == 2
        and result.stdout == ""
        and message.startswith("error: ")
        and len(message.splitlines()) == 1
        and all(w in message for w in words)
    )


@asynccontextmanager
async def cli_accounts(env: dict[str, str], **settings: object) -> AsyncIterator[Accounts]:
    """The store the CLI wrote, opened in this process, to check what the commands did."""
    data_dir = Path(env["DAEHWA_DATA_DIR"])
    config = Settings(data_dir=data_dir, _env_file=None, **settings)  # type: ignore[call-arg]
    store = open_store(config.resolved_database_url(), config)
    await store.open()
    try:
        yield Accounts(store, config, hasher=FAST_HASHER)
    finally:
        await store.close()


async def test_cli_users_create_list_and_refusals(cli_env: dict[str, str]) -> None:
    created = daehwa(cli_env, "users", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    assert created.returncode == 0 and created.stdout.startswith("Created user carol ("), created.stderr
    assert failed(
        daehwa(cli_env, "users", "create", "carol", "--password-stdin", stdin="another password\n"),
        "'carol' is taken",
        "choose another name",
    )
    # (Bad names and short passwords are the same InvalidRequest path, tested in process above.)
    assert failed(daehwa(cli_env, "users", "create", "dave", "--password-stdin", stdin="\n"), "empty line")
    admin = daehwa(cli_env, "users", "create", "dave", "--admin", "--no-password")
    assert admin.returncode == 0 and admin.stdout.startswith("Created admin user dave ("), admin.stderr

    listed = daehwa(cli_env, "users", "list")
    assert listed.returncode == 0, listed.stderr
    rows = {line.split()[3]: line for line in listed.stdout.splitlines() if " carol " in line or " dave " in line}
    assert set(rows) == {"carol", "dave"} and "yes" in rows["dave"] and "yes" not in rows["carol"]
    async with cli_accounts(cli_env) as accounts:
        carol = await accounts.check_password("carol", PASSWORD)  # the password came through stdin intact
        dave = await accounts.user_by_name("dave")
        assert not carol.is_admin and dave.is_admin and not await accounts.has_password(dave.id)
        stored = await accounts.store.get_user(carol.id)
        assert stored is not None and stored.password_hash is not None
        assert carol.id in listed.stdout and stored.password_hash not in listed.stdout
    assert "$argon2" not in listed.stdout + listed.stderr
    assert PASSWORD not in created.stdout + created.stderr + listed.stdout + listed.stderr


async def test_cli_users_passwd_replaces_the_password(cli_env: dict[str, str]) -> None:
    daehwa(cli_env, "users", "create", "carol", "--password-stdin", stdin=PASSWORD + "\n")
    changed = daehwa(cli_env, "users", "passwd", "carol", "--password-stdin", stdin=NEW_PASSWORD + "\r\n")
    assert changed.returncode == 0, changed.stderr
    assert changed.stdout.splitlines() == [
        "Password of carol set.",
        "Ended 0 browser session(s) and login link(s); API keys keep working.",
    ]
    assert NEW_PASSWORD.strip() not in changed.stdout + changed.stderr
    assert failed(
        daehwa(cli_env, "users", "passwd", "nobody", "--password-stdin", stdin=NEW_PASSWORD + "\n"),
        "no user 'nobody'",
        "daehwa users create nobody",
    )
    async with cli_accounts(cli_env) as accounts:
        with pytest.raises(AuthenticationError):
            await accounts.check_password("carol", PASSWORD)
        with pytest.raises(AuthenticationError):
            await accounts.check_password("carol", NEW_PASSWORD.strip())  # the trailing space is kept
        assert (await accounts.check_password("carol", NEW_PASSWORD)).name == "carol"


async def test_cli_keys_create_list_and_revoke(cli_env: dict[str, str]) -> None:
    daehwa(cli_env, "users", "create", "carol", "--no-password")
    label = "laptop [/x] [bold]b"  # square brackets are text, not console markup
    created = daehwa(cli_env, "keys", "create", "--user", "carol", "--name", label)
    assert created.returncode == 0, created.stderr
    *before, secret = created.stdout.strip().splitlines()
    assert secret.startswith("dh-") and secret == secret.strip() and len(secret) > 40
    assert "not shown again" in before[0] and secret not in created.stderr

    async with cli_accounts(cli_env, auth_cache_seconds=0) as accounts:
        assert (await accounts.user_for_api_key(secret)).name == "carol"
        [key] = await accounts.list_api_keys()
    listed = daehwa(cli_env, "keys", "list")
    assert listed.returncode == 0, listed.stderr
    [row] = [line for line in listed.stdout.splitlines() if key.id in line]
    assert " carol " in row and label in row and f"{secret[:KEY_PREFIX_SHOWN]}..." in row
    assert secret not in listed.stdout and sha256(secret) not in listed.stdout
    assert secret[: KEY_PREFIX_SHOWN + 1] not in listed.stdout  # only the prefix, not a character more

    revoked = daehwa(cli_env, "keys", "revoke", key.id)
    assert revoked.returncode == 0 and revoked.stdout.strip() == f"Revoked API key {key.id}.", revoked.stderr
    async with cli_accounts(cli_env, auth_cache_seconds=0) as accounts:
        with pytest.raises(AuthenticationError) as refused:
            await accounts.user_for_api_key(secret)
        assert refused.value.code == "revoked_api_key"
        [key] = await accounts.list_api_keys()
        assert key.revoked_at is not None
    after = daehwa(cli_env, "keys", "list", "--user", "carol")
    [row] = [line for line in after.stdout.splitlines() if key.id in line]
    assert key.revoked_at.strftime("%Y-%m-%d %H:%M") in row and secret not in after.stdout
    # The id is echoed as typed, brackets and all.
    assert failed(daehwa(cli_env, "keys", "revoke", "[/nope]"), "no API key '[/nope]'", "daehwa keys list")


async def test_cli_login_link_logs_in_once(cli_env: dict[str, str]) -> None:
    daehwa(cli_env, "users", "create", "carol", "--no-password")
    printed = daehwa(cli_env, "users", "login-link", "carol")
    assert printed.returncode == 0, printed.stderr
    link = printed.stdout.strip()
    assert link.startswith("http://127.0.0.1:8000/auth/magic?token=") and " " not in link
    token = link_token(link)
    assert token not in printed.stderr
    ipv6 = daehwa({**cli_env, "DAEHWA_HOST": "fe80::1"}, "users", "login-link", "carol")
    assert ipv6.stdout.strip().startswith("http://[fe80::1]:8000/auth/magic?token="), ipv6.stdout
    async with cli_accounts(cli_env) as accounts:
        assert (await accounts.redeem_login_token(token)).user.name == "carol"
        with pytest.raises(AuthenticationError):
            await accounts.redeem_login_token(token)
        assert (await accounts.redeem_login_token(link_token(ipv6.stdout))).user.name == "carol"
    assert failed(daehwa(cli_env, "users", "login-link", "[/nobody]"), "no user '[/nobody]'")
