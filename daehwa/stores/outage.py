"""Telling a store outage (Redis or PostgreSQL down or restarting) from a bug, so the API answers 503, not 500.

An exception is an outage when it is a connection-level failure (a refused or broken connection, a timeout, a server
shutting down) raised from inside a store backend or its driver; the frames of its traceback say which one. The
drivers reconnect on the next call, so requests recover by themselves once the store is back.
"""

from __future__ import annotations

from types import TracebackType

from ..errors import StoreUnavailable

_STORES = (("redis", "Redis"), ("postgres", "PostgreSQL"), ("asyncpg", "PostgreSQL"))
#: SQLSTATE classes of a lost server: 08 connection exception, 57P01-57P03 admin/crash shutdown, cannot connect now.
_SQLSTATES = ("08", "57P01", "57P02", "57P03")


def _connection_level(exc: BaseException) -> bool:
    if isinstance(exc, (OSError, TimeoutError, EOFError)):
        return True
    module, name = type(exc).__module__, type(exc).__name__
    if module.startswith("redis") and name in ("ConnectionError", "TimeoutError", "BusyLoadingError"):
        return True
    if module.startswith("asyncpg"):
        sqlstate = str(getattr(exc, "sqlstate", "") or "")
        if sqlstate.startswith(_SQLSTATES) or name in ("ConnectionDoesNotExistError", "InterfaceError"):
            return name != "InterfaceError" or "closed" in str(exc) or "released" in str(exc)
        if name == "InternalClientError" and "cannot switch to state" in str(exc):
            # A pooled connection whose session the server ended mid-statement (a restart): its protocol state is
            # left behind (MagicStack/asyncpg#1069); the pool's reset on release fails and replaces it.
            return True
    return False


def _store_of(tb: TracebackType | None) -> str | None:
    found = None
    while tb is not None:
        path = tb.tb_frame.f_code.co_filename.replace("\\", "/")
        for key, name in _STORES:
            if f"/stores/{key}/" in path or (f"/{key}/" in path and "site-packages" in path):
                found = found or name
        tb = tb.tb_next
    return found


def outage_exception_types() -> list[type[Exception]]:
    """The exception types an outage can surface as, of the drivers that are installed."""
    kinds: list[type[Exception]] = [OSError, TimeoutError, EOFError]
    try:
        from redis import exceptions as redis_errors

        kinds += [redis_errors.ConnectionError, redis_errors.TimeoutError]
    except ImportError:  # the "redis" extra is not installed
        pass
    try:
        import asyncpg

        kinds += [
            asyncpg.PostgresConnectionError,
            asyncpg.InterfaceError,
            asyncpg.exceptions.OperatorInterventionError,
            asyncpg.InternalClientError,
        ]
    except ImportError:  # the "postgres" extra is not installed
        pass
    return kinds


def store_outage(exc: BaseException) -> StoreUnavailable | None:
    """The 503 for ``exc`` if it (or what caused it) is a store outage, else None."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if _connection_level(current):
            store = _store_of(current.__traceback__)
            if store is not None:
                code = "redis_unavailable" if store == "Redis" else "postgres_unavailable"
                return StoreUnavailable(
                    f"The {store} store cannot be reached right now ({type(current).__name__}): try again in a "
                    "moment; the service reconnects by itself when the store is back.",
                    code=code,
                )
        current = current.__cause__ or current.__context__
    return None
