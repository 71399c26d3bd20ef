"""Accounts: users with argon2 passwords, API keys, browser sessions with CSRF tokens, and one-time login links.

Secrets are never stored or logged: API keys, session tokens and login-link tokens are kept as SHA-256 hashes (they are
long random strings, so a fast hash is enough), passwords as argon2id hashes. An API key is shown once, when created.
Checked keys and sessions are remembered for ``DAEHWA_AUTH_CACHE_SECONDS`` so a request costs no store round trip;
revoking, logging out or changing a password through this object forgets them at once (another process, e.g. the CLI,
reaches a running server's memory within that time). A password change ends the user's other sessions and unused
login links; API keys are separate credentials and stay. Deleting a user (``delete_user``) ends all of them, and the
server's processes forget them at once through the stop-signal channel (``ActiveTurns.end_user``).
"""

from __future__ import annotations

import asyncio
import hashlib
import re
import secrets
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Generic, TypeVar

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from .config import Settings
from .errors import AuthenticationError, Conflict, InvalidRequest, NotFound
from .stores.base import ApiKeyRecord, SessionRecord, Store, UserDeletion
from .types import User

KEY_PREFIX = "dh-"
KEY_PREFIX_SHOWN = 11  # "dh-" and 8 random characters: enough to tell keys apart, far too few to guess the rest
SESSION_COOKIE = "daehwa_session"
CSRF_HEADER = "X-CSRF-Token"
OWNER_NAME = "owner"
MIN_PASSWORD_CHARS = 8
MAX_PASSWORD_CHARS = 1024
_NAME = re.compile(r"^[\w.\-]{1,64}$")
_CACHE_LIMIT = 10_000

T = TypeVar("T")


def hash_token(secret: str, purpose: str = "") -> str:
    """SHA-256 of a random secret; ``purpose`` keeps login-link and session tokens from standing in for each other."""
    return hashlib.sha256(f"{purpose}{secret}".encode()).hexdigest()


def check_user_name(name: str) -> str:
    name = name.strip()
    if not _NAME.match(name):
        raise InvalidRequest(
            "A user name is 1-64 letters, digits, '.', '-' or '_' (no spaces).", param="username", code="invalid_name"
        )
    return name


def check_password_strength(password: str) -> None:
    if len(password) < MIN_PASSWORD_CHARS:
        raise InvalidRequest(
            f"The password is too short: use at least {MIN_PASSWORD_CHARS} characters.", param="password"
        )
    if len(password) > MAX_PASSWORD_CHARS:
        raise InvalidRequest(f"The password is longer than {MAX_PASSWORD_CHARS} characters.", param="password")


@dataclass(frozen=True, slots=True)
class NewApiKey:
    """A key just created: the only moment its secret exists outside the caller's hands."""

    record: ApiKeyRecord
    secret: str = field(repr=False)


@dataclass(frozen=True, slots=True)
class Session:
    """A logged-in browser: its user and the CSRF token its state-changing requests must echo."""

    user: User
    csrf_token: str = field(repr=False)
    expires_at: datetime
    token: str = field(default="", repr=False)  # only set right after login (to put in the cookie)


class _TTLCache(Generic[T]):
    """A small dict whose entries expire; bounded, so a flood of distinct tokens cannot grow it without limit."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self._items: dict[str, tuple[float, T]] = {}

    def get(self, key: str) -> T | None:
        item = self._items.get(key)
        if item is None:
            return None
        if item[0] < time.monotonic():
            self._items.pop(key, None)
            return None
        return item[1]

    def put(self, key: str, value: T) -> None:
        if self.seconds <= 0:
            return
        if len(self._items) >= _CACHE_LIMIT:
            self._items.clear()
        self._items[key] = (time.monotonic() + self.seconds, value)

    def pop(self, key: str) -> None:
        self._items.pop(key, None)

    def drop_where(self, predicate: object) -> None:
        for key, (_, value) in list(self._items.items()):
            if predicate(value):  # type: ignore[operator]
                self._items.pop(key, None)


class Accounts:
    """Users, keys, sessions and login links on top of a Store. One per app (``app.state.accounts``)."""

    def __init__(self, store: Store, settings: Settings, *, hasher: PasswordHasher | None = None) -> None:
        self.store = store
        self.settings = settings
        self.hasher = hasher or PasswordHasher()
        self._keys: _TTLCache[tuple[str, User]] = _TTLCache(settings.auth_cache_seconds)
        self._sessions: _TTLCache[Session] = _TTLCache(settings.auth_cache_seconds)
        # Counts bulk session ends: a lookup that read the store before one must not cache what it read after it.
        self._sessions_ended = 0
        self._dummy_hash: str | None = None
        # Redeeming is read-then-delete; serialised so concurrent clicks on one link log in once (per process).
        self._redeeming = asyncio.Lock()

    # -- users -------------------------------------------------------------------------------------------------
    async def create_user(
        self, name: str, password: str | None, *, is_admin: bool = False, anonymous: bool = False
    ) -> User:
        name = check_user_name(name)
        password_hash = None
        if password is not None:
            check_password_strength(password)
            password_hash = await asyncio.to_thread(self.hasher.hash, password)
        return await self.store.create_user(name, password_hash=password_hash, is_admin=is_admin, anonymous=anonymous)

    async def create_anonymous_user(self) -> User:
        return await self.store.create_user(f"guest-{secrets.token_hex(6)}", password_hash=None, anonymous=True)

    async def user_by_name(self, name: str) -> User:
        record = await self.store.get_user_by_name(name.strip())
        if record is None:
            raise NotFound(f"There is no user {name!r}: create one with 'daehwa users create {name}'.", param="user")
        return record.user

    async def set_password(self, user_id: str, password: str, *, keep_session: str | None = None) -> int:
        """Set the password and end every other session and login link of the user: all of them, or all but the
        browser session whose token is ``keep_session`` (the one making the change). API keys keep working.
        Returns how many sessions and login links ended."""
        check_password_strength(password)
        password_hash = await asyncio.to_thread(self.hasher.hash, password)
        if not await self.store.set_password_hash(user_id, password_hash):
            raise NotFound("No such user.", param="user")
        # After the new hash, not before: a login squeezed in between would need the new password to survive.
        ended = await self.store.delete_user_sessions(user_id, keep=hash_token(keep_session) if keep_session else None)
        self._sessions_ended += 1
        self._sessions.drop_where(lambda session: session.user.id == user_id)
        return ended

    async def check_deletable(self, user: User) -> None:
        """Refuse to delete the last admin: nobody could then manage the service (``bootstrap_owner`` only makes a
        new owner when there are no users at all)."""
        if not user.is_admin:
            return
        if not any(u.is_admin and u.id != user.id for u in await self.store.list_users()):
            raise Conflict(
                f"{user.name!r} is the only admin: create another admin first ('daehwa users create NAME --admin'), "
                "then delete this account.",
                code="last_admin",
            )

    async def delete_user(self, user_id: str) -> UserDeletion:
        """Delete the account and everything kept for it (``Store.delete_user``: usage records stay, detached);
        its sessions and keys stop working in this process at once. Refuses the last admin."""
        record = await self.store.get_user(user_id)
        if record is None:
            raise NotFound("No such user.", param="user")
        await self.check_deletable(record.user)
        self.forget_user(user_id)
        try:
            deletion = await self.store.delete_user(user_id)
        finally:
            self.forget_user(user_id)  # a request between the two may have cached it again
        if deletion is None:  # deleted meanwhile by another request or process
            raise NotFound("No such user.", param="user")
        return deletion

    def forget_user(self, user_id: str) -> None:
        """Drop this process's cached sessions and API keys of the user (deleted here or in another process)."""
        self._sessions_ended += 1
        self._sessions.drop_where(lambda session: session.user.id == user_id)
        self._keys.drop_where(lambda value: value[1].id == user_id)

    async def has_password(self, user_id: str) -> bool:
        record = await self.store.get_user(user_id)
        return record is not None and record.password_hash is not None

    async def check_password(self, name: str, password: str) -> User:
        """The user if the password is theirs; one error (taking about as long) for any wrong name or password."""
        record = await self.store.get_user_by_name(name.strip()) if _NAME.match(name.strip()) else None
        stored = record.password_hash if record is not None and not record.user.anonymous else None
        if not await self._verify(stored, password):
            raise AuthenticationError("Wrong user name or password.", code="invalid_credentials")
        assert record is not None
        return record.user

    async def verify_user_password(self, user_id: str, password: str) -> bool:
        record = await self.store.get_user(user_id)
        return await self._verify(record.password_hash if record else None, password)

    async def _verify(self, password_hash: str | None, password: str) -> bool:
        if len(password) > MAX_PASSWORD_CHARS:
            return False
        if password_hash is None:
            # Hash anyway, so a missing user takes as long as a wrong password and names cannot be probed by timing.
            if self._dummy_hash is None:
                self._dummy_hash = await asyncio.to_thread(self.hasher.hash, secrets.token_hex(16))
            password_hash = self._dummy_hash
            await self._verify_hash(password_hash, password)
            return False
        return await self._verify_hash(password_hash, password)

    async def _verify_hash(self, password_hash: str, password: str) -> bool:
        try:
            return await asyncio.to_thread(self.hasher.verify, password_hash, password)
        except (VerifyMismatchError, VerificationError, InvalidHashError):
            return False

    # -- API keys ----------------------------------------------------------------------------------------------
    async def create_api_key(self, user_id: str, name: str = "") -> NewApiKey:
        if await self.store.get_user(user_id) is None:
            raise NotFound("No such user.", param="user")
        secret = KEY_PREFIX + secrets.token_urlsafe(32)
        record = await self.store.create_api_key(
            user_id, name=name.strip()[:100], prefix=secret[:KEY_PREFIX_SHOWN], key_hash=hash_token(secret)
        )
        return NewApiKey(record=record, secret=secret)

    async def user_for_api_key(self, secret: str) -> User:
        """The key's owner; ``AuthenticationError`` (401) for an unknown or revoked key. Never echoes the key."""
        secret = secret.strip()
        key_hash = hash_token(secret)
        cached = self._keys.get(key_hash)
        if cached is not None:
            return cached[1]
        record = await self.store.find_api_key(key_hash) if secret.startswith(KEY_PREFIX) else None
        if record is None:
            raise AuthenticationError(
                "Invalid API key: check the 'Authorization: Bearer <key>' header, or create a key with "
                "'daehwa keys create --user NAME'."
            )
        if record.revoked_at is not None:
            raise AuthenticationError(
                f"The API key {record.prefix}... was revoked: create a new one with 'daehwa keys create --user NAME'.",
                code="revoked_api_key",
            )
        user_record = await self.store.get_user(record.user_id)
        if user_record is None:
            raise AuthenticationError("The API key's user no longer exists.")
        self._keys.put(key_hash, (record.id, user_record.user))
        return user_record.user

    async def list_api_keys(self, user_id: str | None = None) -> list[ApiKeyRecord]:
        return await self.store.list_api_keys(user_id)

    async def revoke_api_key(self, key_id: str, *, user_id: str | None = None) -> bool:
        """Revoke (only the user's own key when ``user_id`` is given); the key stops working at once here."""
        revoked = await self.store.revoke_api_key(key_id, user_id=user_id)
        self._keys.drop_where(lambda value: value[0] == key_id)
        return revoked

    # -- browser sessions --------------------------------------------------------------------------------------
    async def create_session(self, user: User) -> Session:
        token = secrets.token_urlsafe(32)
        record = SessionRecord(
            user_id=user.id,
            csrf_token=secrets.token_urlsafe(32),
            expires_at=datetime.now(UTC) + timedelta(days=self.settings.session_days),
        )
        await self.store.create_session(hash_token(token), record)
        return Session(user=user, csrf_token=record.csrf_token, expires_at=record.expires_at, token=token)

    async def session(self, token: str) -> Session | None:
        """The live session of a cookie's token, or None (unknown, expired or logged out)."""
        token_hash = hash_token(token)
        cached = self._sessions.get(token_hash)
        if cached is not None and cached.expires_at > datetime.now(UTC):
            return cached
        ended_before = self._sessions_ended
        record = await self.store.get_session(token_hash)
        # Login links live in the same table with no CSRF token, and a cookie of "login-link:<token>" hashes to a
        # link's key: without this check it would be a reusable session that never spends the one-time link.
        if record is None or not record.csrf_token:
            return None
        user_record = await self.store.get_user(record.user_id)
        if user_record is None:
            return None
        session = Session(user=user_record.user, csrf_token=record.csrf_token, expires_at=record.expires_at)
        if ended_before == self._sessions_ended:
            self._sessions.put(token_hash, session)
        return session

    async def end_session(self, token: str) -> None:
        token_hash = hash_token(token)
        self._sessions.pop(token_hash)
        await self.store.delete_session(token_hash)

    # -- one-time login links ----------------------------------------------------------------------------------
    async def create_login_token(self, user_id: str) -> str:
        """A token for ``/auth/magic?token=...``: logs the user in once, within ``DAEHWA_LOGIN_LINK_HOURS``."""
        token = secrets.token_urlsafe(32)
        record = SessionRecord(
            user_id=user_id,
            csrf_token="",
            expires_at=datetime.now(UTC) + timedelta(hours=self.settings.login_link_hours),
        )
        await self.store.create_session(hash_token(token, "login-link:"), record)
        return token

    async def redeem_login_token(self, token: str) -> Session:
        token_hash = hash_token(token, "login-link:")
        async with self._redeeming:
            record = await self.store.get_session(token_hash)
            if record is None:
                raise AuthenticationError(
                    "This login link is invalid, expired or used already: get a new one with "
                    "'daehwa users login-link NAME'.",
                    code="invalid_login_link",
                )
            await self.store.delete_session(token_hash)
        user_record = await self.store.get_user(record.user_id)
        if user_record is None:
            raise AuthenticationError("The login link's user no longer exists.", code="invalid_login_link")
        return await self.create_session(user_record.user)

    def login_link(self, token: str) -> str:
        return f"{self.base_url()}/auth/magic?token={token}"

    def base_url(self) -> str:
        if self.settings.public_url:
            return self.settings.public_url.rstrip("/")
        host = self.settings.host
        if host in {"0.0.0.0", "::", ""}:
            host = "127.0.0.1"
        elif ":" in host:
            host = f"[{host}]"
        return f"http://{host}:{self.settings.port}"

    # -- first start -------------------------------------------------------------------------------------------
    async def bootstrap_owner(self) -> tuple[User, str] | None:
        """With no users yet, create the admin ``owner`` and a one-time login token for it; else None."""
        if await self.store.list_users():
            return None
        try:
            user = await self.create_user(OWNER_NAME, None, is_admin=True)
        except Conflict:  # another process created it a moment ago
            return None
        return user, await self.create_login_token(user.id)


async def bootstrap_owner_message(settings: Settings) -> str | None:
    """What ``daehwa serve`` prints on first start: the owner's login link and how to get an API key (or None)."""
    from .stores import open_store

    store = open_store(settings.resolved_database_url(), settings)
    await store.open()
    try:
        accounts = Accounts(store, settings)
        created = await accounts.bootstrap_owner()
    finally:
        await store.close()
    if created is None:
        return None
    user, token = created
    return (
        f"First start: created the admin user {user.name!r}.\n"
        f"  Log in once with this link (valid {settings.login_link_hours:g} h): {accounts.login_link(token)}\n"
        f"  Set a password:   daehwa users passwd {user.name}\n"
        f"  Get an API key:   daehwa keys create --user {user.name}   (for the openai SDK: base_url "
        f"{accounts.base_url()}/v1)"
    )
