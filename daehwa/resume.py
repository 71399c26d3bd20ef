"""Resumable replies: the chunk log a streaming turn writes, and how a client anywhere reads it back.

A client whose connection drops mid-reply reconnects, to any server process sharing the store, with the reply's id
and the offset it had reached, and gets the rest of the reply exactly once. The process running the turn appends the
reply's text (choice 0) to the store's chunk log (``StreamLogStore``) before it sends it to its client, and renews a
lease while it runs; the reader replays the log from the offset and follows it until the reply is stored
as finished. Offsets are characters (code points) of the reply's text.

A writer that dies (``kill -9``) stops renewing its lease: a reader that sees the lease lapse while the store still
shows the reply ``streaming`` stores it as ``interrupted`` with the text the log holds, so the client still gets an
end, and the conversation does not wait for the next server start to be repaired.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator
from contextlib import suppress

from .errors import NotFound
from .stores.base import MessageChange, Store, StreamChunk, StreamTimes
from .types import MessageStatus, StoredMessage

log = logging.getLogger(__name__)

#: How often a reader looks for more.
POLL_SECONDS = 0.05
#: A reader that found the log ended waits this long for the reply's final save to show.
SETTLE_SECONDS = 5.0


class ChunkPublisher:
    """Writes one turn's reply text to the chunk log, and renews the writer's lease while the turn runs.

    ``add`` queues text; ``sync`` waits until all of it is in the log, so the transport sends a client only text a
    resume can continue from (a client never holds text the store does not). Text that piles up while a write is in
    flight goes in the next write, so a fast model costs one store write per round trip, not one per delta. A
    failed write is retried with the next one (the log has no gap) and does not hold the reply up. ``close`` writes
    what is left and ends the log; call it once the reply is stored.
    """

    def __init__(self, store: Store, user_id: str, conversation_id: str, message_id: str, times: StreamTimes) -> None:
        self.store = store
        self.key = (user_id, conversation_id, message_id)
        self.times = times
        self.offset = 0  # characters added so far: the offset a client has after the text added last
        self._written = 0
        self._pending: list[str] = []
        self._failed = False
        self._closed = False
        self._last_write = 0.0
        self._writing: asyncio.Future[None] | None = asyncio.ensure_future(self._write())  # the lease, at once
        self._lease = asyncio.ensure_future(self._renew())

    def add(self, text: str) -> int:
        """Queue ``text``; returns the reply's offset after it."""
        self._pending.append(text)
        self.offset += len(text)
        return self.offset

    async def sync(self) -> None:
        """Wait until the text added so far is in the log (or a write of it failed)."""
        target = self.offset
        while self._written < target:
            if self._writing is None or self._writing.done():
                self._writing = asyncio.ensure_future(self._write())
            await asyncio.shield(self._writing)  # a cancelled caller does not cut the write in half
            if self._failed:
                return

    async def _renew(self) -> None:
        renew = self.times.lease_seconds / 3
        while True:
            await asyncio.sleep(renew / 2)
            if time.monotonic() - self._last_write >= renew and (self._writing is None or self._writing.done()):
                self._writing = asyncio.ensure_future(self._write())

    async def _write(self) -> None:
        text = "".join(self._pending)
        self._pending.clear()
        chunk = StreamChunk(self._written, text)
        user_id, conversation_id, message_id = self.key
        try:
            await self.store.append_stream(user_id, conversation_id, message_id, chunk, self.times)
        except Exception:
            self._pending.insert(0, text)  # sent again with the next write: the log never has a gap
            self._failed = True
            log.warning("writing a streaming reply's chunk log failed", exc_info=True)
            return
        self._failed = False
        self._written = chunk.end
        self._last_write = time.monotonic()

    async def close(self) -> None:
        """Write the rest and end the log (shielded: a cancelled caller still ends it)."""
        if self._closed:
            return
        self._closed = True
        self._lease.cancel()
        await asyncio.shield(self._finish())

    async def _finish(self) -> None:
        with suppress(asyncio.CancelledError):
            await self._lease
        await self.sync()
        user_id, conversation_id, message_id = self.key
        try:
            await self.store.end_stream(user_id, conversation_id, message_id, expire_seconds=self.times.expire_seconds)
        except Exception:
            log.warning("ending a streaming reply's chunk log failed", exc_info=True)


async def find_reply(store: Store, user_id: str, conversation_id: str, message_id: str) -> StoredMessage | None:
    """The conversation's message ``message_id``, if it is an assistant reply of the user's conversation."""
    for limit in (20, None):  # a reply being resumed is almost always among the last messages
        messages = await store.list_messages(user_id, conversation_id, limit=limit)
        for message in reversed(messages or []):
            if message.id == message_id:
                return message if message.role == "assistant" else None
        if messages is None or len(messages) < 20:
            break
    return None


async def follow_reply(
    store: Store, user_id: str, conversation_id: str, message_id: str, *, after: int, times: StreamTimes
) -> AsyncIterator[StreamChunk | StoredMessage]:
    """The reply's text after character ``after``, as chunks while it is generated, then the stored reply.

    Raises ``NotFound`` when the reply is not the user's (or is gone).
    """
    offset = max(after, 0)
    lost_since: float | None = None  # when the log was first found missing while the reply still streams
    while True:
        read = await store.read_stream(user_id, conversation_id, message_id, after=offset)
        if read is not None:
            for chunk in read.chunks:
                if chunk.text:
                    yield chunk
                    offset = chunk.end
            if read.ended:
                break
            if read.alive:
                await asyncio.sleep(POLL_SECONDS)
                continue
        # No log, or its writer's lease lapsed: the store's copy decides.
        reply = await find_reply(store, user_id, conversation_id, message_id)
        if reply is None:
            raise NotFound("No such message.", param="message_id")
        if reply.status != MessageStatus.STREAMING:
            break
        now = time.monotonic()
        if read is None and lost_since is None:
            lost_since = now
        if read is not None or now - (lost_since or now) >= times.lease_seconds:
            await _store_as_interrupted(store, user_id, conversation_id, reply)
            break
        if len(reply.content) > offset:  # no log (expired or never written): follow the saved text instead
            yield StreamChunk(offset, reply.content[offset:])
            offset = len(reply.content)
        await asyncio.sleep(POLL_SECONDS * 4)

    final = await _settled(store, user_id, conversation_id, message_id)
    if len(final.content) > offset:
        yield StreamChunk(offset, final.content[offset:])
    yield final


async def _settled(store: Store, user_id: str, conversation_id: str, message_id: str) -> StoredMessage:
    """The reply once its final save shows (the log is ended just after it; allow a moment either way)."""
    deadline = time.monotonic() + SETTLE_SECONDS
    while True:
        reply = await find_reply(store, user_id, conversation_id, message_id)
        if reply is None:
            raise NotFound("No such message.", param="message_id")
        if reply.status != MessageStatus.STREAMING or time.monotonic() >= deadline:
            return reply
        await asyncio.sleep(POLL_SECONDS)


async def _store_as_interrupted(store: Store, user_id: str, conversation_id: str, reply: StoredMessage) -> None:
    """The process writing the reply is gone: keep the longer of the log's text and the saved text."""
    read = await store.read_stream(user_id, conversation_id, reply.id, after=0)
    logged = "".join(c.text for c in read.chunks) if read is not None else ""
    content = logged if len(logged) >= len(reply.content) else reply.content
    log.warning("reply %s lost its writer (its lease lapsed): stored as interrupted", reply.id)
    await store.update_message(user_id, reply.id, MessageChange(content=content, status=MessageStatus.INTERRUPTED))
