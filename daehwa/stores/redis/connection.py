"""The Redis client of a store, its key names, and the Lua scripts each domain module declares.

A domain module (``conversations``, ``accounts``...) lists its scripts in its class's ``SCRIPTS`` (name -> Lua
source); ``open()`` registers those of every class of the store, and ``self._script(name)`` runs one.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

T = TypeVar("T")


class RedisConnection:
    SCRIPTS: ClassVar[Mapping[str, str]] = {}

    prefix: str
    ttl_ms: int
    # Typed Any: redis-py's annotations widen every reply to bytes | str | list, which helps no one here.
    _client: Any = None
    _scripts: dict[str, Any]

    def _k(self, *parts: str) -> str:
        return ":".join((self.prefix, *parts))

    def _conv_keys(self, user_id: str, conversation_id: str) -> list[str]:
        """conv, msgs, order, user_index, streaming: the keys a conversation's scripts declare."""
        conv = self._k("conv", conversation_id)
        return [conv, f"{conv}:msgs", f"{conv}:order", self._k("user", user_id, "convs"), self._k("streaming")]

    def _r(self) -> Any:
        if self._client is None:
            raise RuntimeError("RedisStore is not open: call 'await store.open()' first.")
        return self._client

    def _register_scripts(self, client: Any) -> None:
        """Register the ``SCRIPTS`` of every class the store is made of (a name must be unique among them)."""
        scripts: dict[str, Any] = {}
        for cls in type(self).__mro__:
            for name, source in vars(cls).get("SCRIPTS", {}).items():
                if name in scripts:
                    raise RuntimeError(f"Two Redis store modules declare a script named {name!r}: rename one.")
                scripts[name] = client.register_script(source)
        self._scripts = scripts

    def _script(self, name: str) -> Any:
        return self._scripts[name]

    async def _transaction(self, work: Callable[[Pipeline], Awaitable[T]], *watches: str) -> T:
        """Optimistic read-modify-write: ``work`` reads the watched keys, calls ``pipe.multi()``, queues writes."""
        result: T = await self._r().transaction(work, *watches, value_from_callable=True)
        return result
