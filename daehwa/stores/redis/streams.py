"""Redis chunk logs of streaming replies, as Redis Streams.

Keys (``P`` is the prefix; the ``{c:<conversation id>}`` hash tag keeps one conversation's keys in one slot)::

    P:{c:<cid>}:reply:<mid>        stream  one entry per chunk, id ``<end offset>-1``, fields s (start), t (text)
    P:{c:<cid>}:reply:<mid>:meta   hash    user_id, conversation_id, end (offset of the last chunk), ended
    P:{c:<cid>}:reply:<mid>:lease  string  exists while the writer's lease runs (PX)

An entry's id is the character offset where its text ends, so ``XRANGE <after+1>-0 +`` reads exactly the chunks
holding text after ``after``. All three keys expire ``expire_seconds`` after the last write.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import ClassVar

from ..base import StreamChunk, StreamLogStore, StreamRead, StreamTimes
from ..common import cut_chunks
from .connection import RedisConnection

# KEYS: log, meta, lease. ARGV: user_id, conversation_id, end, start, text, lease_ms, expire_ms
_APPEND = """
local owner = redis.call('HGET', KEYS[2], 'user_id')
if owner and owner ~= ARGV[1] then return 0 end
if not owner then redis.call('HSET', KEYS[2], 'user_id', ARGV[1], 'conversation_id', ARGV[2]) end
redis.call('SET', KEYS[3], '1', 'PX', ARGV[6])
if ARGV[5] ~= '' then
  local last = redis.call('HGET', KEYS[2], 'end')
  if not last or tonumber(last) < tonumber(ARGV[3]) then
    redis.call('XADD', KEYS[1], ARGV[3] .. '-1', 's', ARGV[4], 't', ARGV[5])
    redis.call('HSET', KEYS[2], 'end', ARGV[3])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[7])
redis.call('PEXPIRE', KEYS[2], ARGV[7])
return 1
"""

# KEYS: log, meta, lease. ARGV: user_id, expire_ms
_END = """
if redis.call('HGET', KEYS[2], 'user_id') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'ended', '1')
redis.call('DEL', KEYS[3])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return 1
"""


class RedisStreams(RedisConnection, StreamLogStore):
    SCRIPTS: ClassVar[Mapping[str, str]] = {"stream_append": _APPEND, "stream_end": _END}

    def _reply_keys(self, conversation_id: str, message_id: str) -> list[str]:
        log = self._k("{c:" + conversation_id + "}", "reply", message_id)
        return [log, f"{log}:meta", f"{log}:lease"]

    async def _lease_state(self, conversation_id: str, message_id: str) -> bool | None:
        """True: the writer of the reply's chunk log holds its lease (a running process streams it); False: the
        lease lapsed (the writer is gone); None: the reply has no log."""
        _, meta, lease = self._reply_keys(conversation_id, message_id)
        pipe = self._r().pipeline(transaction=False)  # one slot: the keys share the reply's hash tag
        pipe.exists(lease)
        pipe.exists(meta)
        alive, logged = await pipe.execute()
        return True if alive else (False if logged else None)

    async def append_stream(
        self, user_id: str, conversation_id: str, message_id: str, chunk: StreamChunk, times: StreamTimes
    ) -> None:
        await self._script("stream_append")(
            keys=self._reply_keys(conversation_id, message_id),
            args=[
                user_id,
                conversation_id,
                chunk.end,
                chunk.start,
                chunk.text,
                max(1, int(times.lease_seconds * 1000)),
                max(1, int(times.expire_seconds * 1000)),
            ],
        )

    async def end_stream(self, user_id: str, conversation_id: str, message_id: str, *, expire_seconds: float) -> None:
        await self._script("stream_end")(
            keys=self._reply_keys(conversation_id, message_id), args=[user_id, max(1, int(expire_seconds * 1000))]
        )

    async def read_stream(
        self, user_id: str, conversation_id: str, message_id: str, *, after: int = 0
    ) -> StreamRead | None:
        log, meta_key, lease = self._reply_keys(conversation_id, message_id)
        pipe = self._r().pipeline(transaction=False)
        pipe.hgetall(meta_key)
        pipe.exists(lease)
        pipe.xrange(log, f"{max(after, 0) + 1}-0", "+")
        meta, alive, entries = await pipe.execute()
        if not meta or meta.get("user_id") != user_id or meta.get("conversation_id") != conversation_id:
            return None
        chunks = [StreamChunk(int(fields["s"]), fields["t"]) for _, fields in entries]
        return StreamRead(cut_chunks(chunks, after), bool(alive), meta.get("ended") == "1")
