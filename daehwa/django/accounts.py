"""Which daehwa user a Django user or guest is, and deleting them with their data (docs/django.md, "Deleting users").

A Django user is the daehwa user ``django-<pk>``; a guest is ``django-guest-<HMAC of the session key>``. Deleting a
Django user (``user.delete()``, the admin, a queryset) deletes its daehwa user once the transaction commits (the
``post_delete`` receiver that the app connects in ``ready()``); ``manage.py daehwa_clear_guests`` deletes the guests
whose session is gone. Both go through ``Store.delete_user`` and send daehwa's "user deleted" signal, so rooms and
turns of the user stop: in this process at once, in other processes through the store's stop-signal channel (Redis,
PostgreSQL).

Django signals and management commands are synchronous; daehwa's store is async. When this process runs daehwa
(an ASGI server whose rooms are open), the work runs on that event loop, through its services; otherwise (the admin
on a WSGI server, ``manage.py shell``, a management command) on a store opened for it.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import suppress
from datetime import UTC, datetime, timedelta
from importlib import import_module
from typing import Any, TypeVar

from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from django.db import transaction
from django.utils import timezone
from django.utils.crypto import salted_hmac

from ..api.stream import ActiveTurns
from ..stores import open_store
from ..stores.base import ConversationQuery, Store
from ..types import User
from .runtime import daehwa_settings, get_runtime

log = logging.getLogger("daehwa.django")

USER_PREFIX = "django-"
GUEST_PREFIX = "django-guest-"
#: How long deleting users may keep a Django request (or command) waiting on the event loop that runs daehwa.
WAIT_SECONDS = 60.0

T = TypeVar("T")
#: ``end_user(user_id, wait)``: the "user deleted" signal (stop the user's turns and rooms everywhere).
EndUser = Callable[[str, bool], Awaitable[None]]
Work = Callable[[Store, EndUser], Awaitable[T]]


def daehwa_user_name(pk: Any) -> str:
    """The daehwa user name of the Django user with primary key ``pk``."""
    return f"{USER_PREFIX}{pk}"


def guest_tag(session_key: str) -> str:
    """The part of a guest's name that stands for its session: an HMAC of the key (salted with SECRET_KEY)."""
    return salted_hmac("daehwa.django.guest", session_key).hexdigest()[:24]


def guest_name(session_key: str | None) -> str:
    """The daehwa user name of a guest with this Django session; a new name each time without a session."""
    return f"{GUEST_PREFIX}{guest_tag(session_key) if session_key else secrets.token_hex(12)}"


def run_on_daehwa(work: Work[T]) -> T:
    """Run ``work(store, end_user)`` from synchronous code: on this process's daehwa event loop when it runs (its
    services, its turns), else on a store opened for it and closed after."""
    runtime = get_runtime()
    loop = runtime.live_loop()
    try:
        here = asyncio.get_running_loop()
    except RuntimeError:
        here = None
    if loop is not None and loop is not here:
        future = asyncio.run_coroutine_threadsafe(runtime.with_services(work), loop)
        return future.result(WAIT_SECONDS)
    if here is None:
        return asyncio.run(_with_own_store(work))
    # Synchronous code inside a running event loop (DJANGO_ALLOW_ASYNC_UNSAFE): it blocks that loop, so a thread
    # with its own loop and store does the work.
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, _with_own_store(work)).result(WAIT_SECONDS)


async def _with_own_store(work: Work[T]) -> T:
    settings = daehwa_settings()
    store = open_store(settings.resolved_database_url(), settings=settings)
    await store.open()
    signals = store.stop_signals()
    try:
        with suppress(Exception):  # the signal is best effort; the deletion goes on without it
            await signals.open(lambda _user, _conversation: None)

        async def end_user(user_id: str, wait: bool) -> None:
            with suppress(Exception):
                await signals.publish(user_id, ActiveTurns.USER_DELETED)

        return await work(store, end_user)
    finally:
        with suppress(Exception):
            await signals.close()
        await store.close()


async def delete_users(store: Store, end_user: EndUser, names: Iterable[str]) -> list[str]:
    """Delete the daehwa users with these names and everything kept for them; the names that were there."""
    deleted: list[str] = []
    for name in names:
        record = await store.get_user_by_name(name)
        if record is None:
            continue
        user_id = record.user.id
        await end_user(user_id, True)  # their turns store what they have, then everything goes
        if await store.delete_user(user_id) is not None:
            deleted.append(name)
        await end_user(user_id, False)  # a room that reopened meanwhile closes too
    return deleted


def delete_daehwa_users(names: Iterable[str]) -> list[str]:
    """Delete these daehwa users (and their conversations, ...) from synchronous code; the names that were there."""
    wanted = list(names)

    async def work(store: Store, end_user: EndUser) -> list[str]:
        return await delete_users(store, end_user, wanted)

    return run_on_daehwa(work)


def live_session_keys() -> Iterator[str]:
    """The keys of the Django sessions that exist and have not expired (database and file session engines)."""
    engine: Any = import_module(django_settings.SESSION_ENGINE).SessionStore
    if hasattr(engine, "get_model_class"):  # db, cached_db, and database-backed engines of your own
        model = engine.get_model_class()
        live = model.objects.filter(expire_date__gt=timezone.now()).values_list("session_key", flat=True)
        yield from live.iterator()
        return
    from django.contrib.sessions.backends.file import SessionStore as FileSessionStore

    if issubclass(engine, FileSessionStore):
        # The file engine keeps expired sessions until clearsessions removes them: run it first.
        prefix = django_settings.SESSION_COOKIE_NAME
        for name in os.listdir(engine._get_storage_path()):
            if name.startswith(prefix):
                yield name[len(prefix) :]
        return
    raise ImproperlyConfigured(
        f"daehwa_clear_guests cannot list the sessions of SESSION_ENGINE {django_settings.SESSION_ENGINE!r}: it "
        "knows the database engines (db, cached_db) and the file engine. With a cache or signed-cookie engine, "
        "delete old guests with 'daehwa users delete NAME'."
    )


async def _last_active(store: Store, user: User) -> datetime | None:
    conversations = await store.list_conversations(user.id, ConversationQuery(kind=None, limit=1))
    times = [t for t in (user.created_at, conversations[0].updated_at if conversations else None) if t is not None]
    return max(times, default=None)


def clear_guests(*, keep_minutes: float = 60, dry_run: bool = False) -> list[str]:
    """Delete the guests (``django-guest-...``) whose Django session no longer exists or has expired, unless they
    were active in the last ``keep_minutes`` (a guest without a session, in a room still open); their names."""
    live = {guest_tag(key) for key in live_session_keys()}
    cutoff = datetime.now(UTC) - timedelta(minutes=keep_minutes)

    async def work(store: Store, end_user: EndUser) -> list[str]:
        stale: list[str] = []
        for user in await store.list_users():
            if not (user.anonymous and user.name.startswith(GUEST_PREFIX)) or user.name[len(GUEST_PREFIX) :] in live:
                continue
            active = await _last_active(store, user)
            if keep_minutes > 0 and active is not None and active > cutoff:
                continue
            stale.append(user.name)
        if dry_run:
            return stale
        return await delete_users(store, end_user, stale)

    return run_on_daehwa(work)


def delete_for_django_user(sender: Any, instance: Any, using: str = "default", **kwargs: Any) -> None:
    """``post_delete`` of the user model: delete the user's daehwa user once the deletion is committed."""
    name = daehwa_user_name(instance.pk)  # the pk is cleared after the signal

    def delete() -> None:
        try:
            delete_daehwa_users([name])
        except Exception:  # the Django user is gone whatever happens here: say how to finish by hand
            log.exception(
                "could not delete %s, the daehwa user of a deleted Django user: 'daehwa users delete %s'", name, name
            )

    transaction.on_commit(delete, using=using)


def connect_user_deletion() -> None:
    """Connect ``delete_for_django_user`` for the user model and its proxies (in the app's ``ready()``).

    Connected per model, not for every sender: a receiver for all models would turn Django's fast bulk deletes
    (``clearsessions``) into one query and one signal per row."""
    from django.apps import apps
    from django.contrib.auth import get_user_model
    from django.db.models.signals import post_delete

    if not apps.is_installed("django.contrib.auth"):
        return
    user_model = get_user_model()
    for model in apps.get_models():
        if issubclass(model, user_model):
            post_delete.connect(
                delete_for_django_user, sender=model, dispatch_uid=f"daehwa.django.delete_user:{model._meta.label}"
            )
