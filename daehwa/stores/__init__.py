"""Where conversations, accounts and usage live: ``open_store(url)`` picks the backend from the URL's scheme.

The built-in backends are rows of ``BUILTIN_BACKENDS``; another package adds one the same way, as an entry point in
the ``daehwa.stores`` group whose name is the URL scheme and whose value is a ``Store`` subclass with a
``from_url(url, settings)`` classmethod::

    [project.entry-points."daehwa.stores"]
    mysql = "daehwa_mysql:MySQLStore"
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

from ..errors import ConfigError
from .base import (
    AccountStore,
    ApiKeyRecord,
    ConversationQuery,
    ConversationStore,
    FormRecord,
    FormStore,
    MessageChange,
    NewConversation,
    NewFormRecord,
    NewMessage,
    NewTurn,
    SessionRecord,
    Store,
    StreamChunk,
    StreamLogStore,
    StreamRead,
    StreamTimes,
    TurnResult,
    UsageStore,
    UserDeletion,
    UserRecord,
)

if TYPE_CHECKING:
    from ..config import Settings

__all__ = [
    "BUILTIN_BACKENDS",
    "ENTRY_POINT_GROUP",
    "AccountStore",
    "ApiKeyRecord",
    "ConversationQuery",
    "ConversationStore",
    "FormRecord",
    "FormStore",
    "MessageChange",
    "NewConversation",
    "NewFormRecord",
    "NewMessage",
    "NewTurn",
    "SessionRecord",
    "Store",
    "StoreBackend",
    "StreamChunk",
    "StreamLogStore",
    "StreamRead",
    "StreamTimes",
    "TurnResult",
    "UsageStore",
    "UserDeletion",
    "UserRecord",
    "open_store",
    "store_backends",
]

ENTRY_POINT_GROUP = "daehwa.stores"


@dataclass(frozen=True, slots=True)
class StoreBackend:
    """A store implementation: ``module:Class`` (imported only when used) and the extra that installs its driver."""

    target: str
    driver: str | None = None  # top-level module of the optional driver, e.g. "asyncpg"
    extra: str | None = None  # pip extra that installs it, e.g. "postgres"

    def load(self) -> Callable[[str, Settings | None], Store]:
        module_name, _, attr = self.target.partition(":")
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            missing = exc.name or ""
            if self.driver and (missing == self.driver or missing.startswith(self.driver + ".")):
                raise ConfigError(
                    f"This database URL needs the {self.driver} driver, which is not installed: "
                    f"pip install 'daehwa[{self.extra}]'."
                ) from None
            raise
        factory: Any = getattr(module, attr)
        return factory.from_url


BUILTIN_BACKENDS: dict[str, StoreBackend] = {
    "sqlite": StoreBackend("daehwa.stores.sqlite:SQLiteStore"),
    "memory": StoreBackend("daehwa.stores.memory:MemoryStore"),
    "redis": StoreBackend("daehwa.stores.redis:RedisStore", driver="redis", extra="redis"),
    "rediss": StoreBackend("daehwa.stores.redis:RedisStore", driver="redis", extra="redis"),
    "redis+cluster": StoreBackend("daehwa.stores.redis:RedisStore", driver="redis", extra="redis"),
    "rediss+cluster": StoreBackend("daehwa.stores.redis:RedisStore", driver="redis", extra="redis"),
    "postgresql": StoreBackend("daehwa.stores.postgres:PostgresStore", driver="asyncpg", extra="postgres"),
    "postgres": StoreBackend("daehwa.stores.postgres:PostgresStore", driver="asyncpg", extra="postgres"),
}


def store_backends() -> dict[str, StoreBackend]:
    """Every known backend by URL scheme: the built-in ones, then those of installed plugins."""
    found = dict(BUILTIN_BACKENDS)
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        found[ep.name] = StoreBackend(ep.value)
    return found


def open_store(url: str, settings: Settings | None = None) -> Store:
    """The store for ``url`` (not yet opened: ``await store.open()``); ``settings`` carries backend options."""
    scheme, sep, _ = url.partition("://")
    scheme = scheme.lower()
    backends = store_backends()
    if not sep or scheme not in backends:
        known = ", ".join(f"{name}://" for name in sorted(backends))
        raise ConfigError(
            f"DAEHWA_DATABASE_URL {url.split('@')[-1]!r} is not a database URL this service knows (schemes: {known}); "
            "e.g. sqlite:////var/lib/daehwa/daehwa.db, redis://localhost:6379/0 or postgresql://user@host/db."
        )
    return backends[scheme].load()(url, settings)
