"""The daehwa services of one Django process, built in-process from the Django settings.

Consumers run daehwa's own turn pipeline (``ChatService.turn``, the one every transport uses) in the ASGI server's
event loop: no second server to run, no extra network hop, and the moderation, quotas, stored history and
partial-reply guarantees are the very same code as ``daehwa serve``'s. The services are built on first use from
``settings.DAEHWA`` (a dict of daehwa settings, e.g. ``{"DEFAULT_MODEL": "openai/gpt-4o-mini"}``) over the
``DAEHWA_*`` environment, and started in the loop that first needs them. Point ``DATABASE_URL`` at the store of a
``daehwa serve`` to share conversations, users and quotas with it.

An ASGI server with lifespan events (uvicorn) starts and stops them with the server when ``"lifespan": lifespan`` is in
the ``ProtocolTypeRouter``; without it they start on the first connection and a stop leaves replies still streaming
to be marked ``interrupted`` by the next start (``Store.recover_interrupted``).
"""

from __future__ import annotations

import asyncio
import logging
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from django.apps import apps
from django.conf import settings as django_settings
from django.core.exceptions import ImproperlyConfigured
from pydantic import ValidationError

from ..api.stream import ActiveTurns
from ..config import Settings
from ..services import Services, build_services

if TYPE_CHECKING:
    from ..stores.base import Store

log = logging.getLogger("daehwa.django")

ServicesFactory = Callable[[Settings], Services]
T = TypeVar("T")


class Room(Protocol):
    """An open chat room (a consumer): told when its daehwa user is deleted."""

    def user_deleted(self) -> None: ...


def daehwa_settings() -> Settings:
    """daehwa's Settings from ``settings.DAEHWA`` (field names, any case) over the ``DAEHWA_*`` environment."""
    given: Any = getattr(django_settings, "DAEHWA", None) or {}
    if isinstance(given, Settings):
        return given
    if not isinstance(given, dict):
        raise ImproperlyConfigured("settings.DAEHWA must be a dict of daehwa settings, e.g. {'DEFAULT_MODEL': ...}.")
    unknown = sorted(k for k in given if str(k).lower() not in Settings.model_fields)
    if unknown:
        raise ImproperlyConfigured(
            f"settings.DAEHWA has unknown daehwa settings {unknown}: the names are those of DAEHWA_* without the "
            "prefix ('daehwa config' lists them)."
        )
    try:
        return Settings(**{str(k).lower(): v for k, v in given.items()})
    except ValidationError as exc:
        raise ImproperlyConfigured(f"settings.DAEHWA is not valid: {exc}") from exc


class Runtime:
    """The services and running turns of this process; consumers reach it through ``get_runtime()``."""

    def __init__(self, factory: ServicesFactory | None = None) -> None:
        self.factory: ServicesFactory = factory or (lambda settings: build_services(settings))
        self._services: Services | None = None
        self._turns: ActiveTurns | None = None
        self._owned = False  # built here (and closed here), or installed by the caller
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock: asyncio.Lock | None = None
        # One lock per room being opened, dropped when no connection holds it.
        self._creating: weakref.WeakValueDictionary[tuple[int, str], asyncio.Lock] = weakref.WeakValueDictionary()
        self._rooms: dict[str, set[Room]] = {}  # the open rooms of this process, by daehwa user id

    async def services(self) -> Services:
        """The started services, built and started on the first call in this event loop."""
        loop = asyncio.get_running_loop()
        if self._services is not None and self._loop is loop:
            return self._services
        if self._lock is None or self._loop is not loop:
            # Services are tied to the loop that started them (connections, threads): a new loop (a test's, a server
            # restarted in-process) gets its own; the old loop's are gone with it.
            self._services, self._turns, self._loop, self._lock = None, None, loop, asyncio.Lock()
        async with self._lock:
            if self._services is None:
                services = self.factory(daehwa_settings())
                await services.start()
                turns = ActiveTurns(services.store)
                turns.on_user_deleted.append(self._close_rooms)
                await turns.open()
                self._services, self._turns, self._owned = services, turns, True
                log.info("daehwa services started (model %s)", services.settings.default_model)
        return self._services

    async def turns(self) -> ActiveTurns:
        """The turns running in this process (so a stop reaches them, also from another process sharing the store)."""
        await self.services()
        assert self._turns is not None
        return self._turns

    def creating(self, key: str) -> asyncio.Lock:
        """Held while a room finds or creates its conversation ``key``, so two tabs opening at once share one."""
        slot = (id(asyncio.get_running_loop()), key)
        lock = self._creating.get(slot)
        if lock is None:
            lock = self._creating[slot] = asyncio.Lock()
        return lock

    def enter(self, user_id: str, room: Room) -> None:
        """A room of the daehwa user opened (``leave`` when it closes): it is closed if the user is deleted."""
        self._rooms.setdefault(user_id, set()).add(room)

    def leave(self, user_id: str, room: Room) -> None:
        rooms = self._rooms.get(user_id)
        if rooms is not None:
            rooms.discard(room)
            if not rooms:
                del self._rooms[user_id]

    def _close_rooms(self, user_id: str) -> None:
        # The "user deleted" signal, from this process or another one sharing the store.
        for room in self._rooms.pop(user_id, set()):
            room.user_deleted()

    def live_loop(self) -> asyncio.AbstractEventLoop | None:
        """The running event loop whose services serve this process's rooms, if there is one."""
        loop = self._loop
        if self._services is None or self._turns is None or loop is None or loop.is_closed() or not loop.is_running():
            return None
        return loop

    async def with_services(self, work: Callable[[Store, Callable[[str, bool], Awaitable[None]]], Awaitable[T]]) -> T:
        """``work(store, end_user)`` on these services, ``end_user`` being ``ActiveTurns.end_user`` (every process
        stops the user's turns and closes their rooms)."""
        services, turns = await self.services(), await self.turns()

        async def end_user(user_id: str, wait: bool) -> None:
            await turns.end_user(user_id, wait=wait)

        return await work(services.store, end_user)

    def install(self, services: Services, turns: ActiveTurns | None = None) -> None:
        """Use services built and started by the caller (tests, a project that builds its own); not closed here."""
        self._services, self._owned = services, False
        self._turns = turns or ActiveTurns(services.store)
        if self._close_rooms not in self._turns.on_user_deleted:
            self._turns.on_user_deleted.append(self._close_rooms)
        self._loop = asyncio.get_running_loop()
        self._lock = asyncio.Lock()

    async def aclose(self) -> None:
        """Stop the running turns (their partial replies are stored) and close the services this runtime built."""
        services, turns, owned = self._services, self._turns, self._owned
        self._services, self._turns, self._owned, self._loop, self._lock = None, None, False, None, None
        if turns is not None:
            turns.stop_all()
            if owned:
                await turns.close()
        if services is not None and owned:
            await services.aclose()


def get_runtime() -> Runtime:
    """The runtime of the installed ``daehwa.django`` app."""
    try:
        config = apps.get_app_config("daehwa")
    except LookupError as exc:
        raise ImproperlyConfigured("Add 'daehwa.django' to INSTALLED_APPS to use daehwa's consumers.") from exc
    runtime = getattr(config, "runtime", None)
    if not isinstance(runtime, Runtime):
        raise ImproperlyConfigured("The app labelled 'daehwa' is not daehwa.django.")
    return runtime


async def lifespan(scope: dict[str, Any], receive: Callable[..., Any], send: Callable[..., Any]) -> None:
    """ASGI lifespan: start daehwa with the server and stop it (storing partial replies) when the server stops.

    Route it with ``ProtocolTypeRouter({"http": ..., "websocket": ..., "lifespan": lifespan})``.
    """
    runtime = get_runtime()
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            try:
                await runtime.services()
            except Exception as exc:
                log.exception("daehwa did not start")
                await send({"type": "lifespan.startup.failed", "message": str(exc)})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await runtime.aclose()
            await send({"type": "lifespan.shutdown.complete"})
            return
