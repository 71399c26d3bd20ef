"""The Redis client of a store, its key names, and the Lua scripts each domain module declares.

A domain module (``conversations``, ``accounts``...) lists its scripts in its class's ``SCRIPTS`` (name -> Lua
source); ``open()`` registers those of every class of the store, and ``self._script(name)`` runs one.

Keys and Redis Cluster (the rule for every module here): a Lua script, a MULTI/EXEC transaction or a WATCH may only
touch keys of ONE hash slot, because on a cluster anything else fails with CROSSSLOT. Keys that such a write
spans must share a hash tag (the part in ``{...}``), and the key helpers below make them:

* ``self._conv_key(cid, *parts)`` -> ``P:conv:{cid}:parts``: everything of one conversation (its hash, messages,
  order, vectors, summary...). A new per-conversation key MUST be made with it.
* ``self._acct_key(*parts)`` -> ``P:{accounts}:parts``: users, API keys, sessions and their indexes, which scripts
  read and write together (name uniqueness, key-hash lookups). Account data is small; it lives in one slot.
* ``self._k(*parts)`` -> ``P:parts``: a key no script or transaction shares with another key (``P:usage``,
  ``P:user:{uid}:convs``...). Writes spanning such keys are separate commands, ordered so that a crash between them
  leaves nothing a reader trusts (e.g. a conversation is written before its user's index points at it).

A Lua script must name every key it touches in KEYS (never build key names inside the script).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from urllib.parse import urlsplit

from ...errors import ConfigError

if TYPE_CHECKING:
    from redis.asyncio.client import Pipeline

T = TypeVar("T")

CLUSTER_SCHEMES = ("redis+cluster://", "rediss+cluster://")
ACCOUNTS_TAG = "{accounts}"


def is_cluster_url(url: str) -> bool:
    return url.lower().startswith(CLUSTER_SCHEMES)


def connect(url: str, **options: Any) -> Any:
    """A redis-py asyncio client for ``url``: ``redis+cluster://host:port`` (or ``rediss+cluster://``) makes a
    ``RedisCluster`` that discovers the other nodes from that one; any other URL a plain ``Redis``. Replies are
    decoded (str)."""
    if is_cluster_url(url):
        from redis.asyncio.cluster import RedisCluster

        scheme, _, rest = url.partition("://")
        plain = f"{scheme.lower().removesuffix('+cluster')}://{rest}"
        if urlsplit(plain).path not in ("", "/", "/0"):
            raise ConfigError("A Redis Cluster has only database 0: drop the /<db> from the redis+cluster:// URL.")
        return RedisCluster.from_url(plain, decode_responses=True, **options)
    import redis.asyncio as aioredis

    return aioredis.from_url(url, decode_responses=True, **options)


def check_prefix(prefix: str) -> str:
    if not prefix or "{" in prefix or "}" in prefix:
        raise ConfigError(
            f"DAEHWA_REDIS_KEY_PREFIX {prefix!r} must be non-empty and without braces (braces are Redis Cluster "
            "hash tags, which the store places itself): choose e.g. 'daehwa'."
        )
    return prefix


class RedisConnection:
    SCRIPTS: ClassVar[Mapping[str, str]] = {}

    prefix: str
    ttl_ms: int
    # Typed Any: redis-py's annotations widen every reply to bytes | str | list, which helps no one here.
    _client: Any = None
    _scripts: dict[str, Any]

    def _k(self, *parts: str) -> str:
        """A key of its own slot: never in a script or transaction with another key."""
        return ":".join((self.prefix, *parts))

    def _conv_key(self, conversation_id: str, *parts: str) -> str:
        """A key of the conversation: all of them share the hash tag ``{conversation_id}``."""
        return ":".join((self.prefix, "conv", "{" + conversation_id + "}", *parts))

    def _acct_key(self, *parts: str) -> str:
        """An account key (users, API keys, sessions): all of them share the hash tag ``{accounts}``."""
        return ":".join((self.prefix, ACCOUNTS_TAG, *parts))

    def _user_index(self, user_id: str) -> str:
        """The user's conversations, by updated_at: updated after the conversation's own write."""
        return self._k("user", user_id, "convs")

    def _conv_keys(self, conversation_id: str) -> list[str]:
        """conv, msgs, order: the keys most conversation scripts declare (one slot)."""
        conv = self._conv_key(conversation_id)
        return [conv, f"{conv}:msgs", f"{conv}:order"]

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
        """Optimistic read-modify-write: ``work`` reads the watched keys, calls ``pipe.multi()``, queues writes.
        Every key it watches or writes must be of one slot (see the module docstring)."""
        result: T = await self._r().transaction(work, *watches, value_from_callable=True)
        return result
