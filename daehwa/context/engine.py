"""The context engine: builds each turn's prompt (summary + recall + recent within the budget) and, after the reply,
keeps the conversation's memory up to date in the background (turn vectors, the rolling summary).

    build(...)       on the turn's path: token budget of the model, recent window, stored summary, recall of older
                     turns (embedding the new message is the only model call here, ~20 ms), the context report
    after_turn(...)  never on the reply's path: embeds the finished turn (and older turns still missing a vector),
                     extends the summary when enough messages left the window. A failure is logged, counted in
                     ``daehwa_context_failures_total`` and retried after the next turn; turns never wait for it.

Where vectors and summaries live is the store's business (``ContextMemory``); without a store that has it, or without
the embedding model, the engine degrades to the recent window and says so in the report's notes.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from ..types import ChatMessage, GenerationParams, StoredMessage, TextDelta
from .embeddings import INSTALL_HINT, Embedder
from .limits import DEFAULT_WINDOW, Budget, context_budget
from .policy import ContextPolicy
from .recall import rank, turn_text, turns_of
from .report import ContextReport
from .summary import SUMMARY_MAX_TOKENS, Entry, Summary, extended, language_of, pending, still_valid, summary_prompt
from .tokens import EstimateTokenizer, Tokenizer, message_cost
from .window import RECALL_SHARE, SUMMARY_SHARE, Recalled, assemble, select_window

if TYPE_CHECKING:
    from ..config import Settings
    from ..metrics import Metrics
    from ..routing import Router

log = logging.getLogger(__name__)

#: Older turns without a vector that one after-turn task embeds at most (the rest follow on later turns).
BACKFILL_BATCH = 16
#: Conversations whose background work is serialised by a lock kept in memory at most.
LOCKS = 1024


@runtime_checkable
class ContextMemory(Protocol):
    """What a store keeps for the context engine (``daehwa.stores.base.ContextStore``): message vectors and one
    rolling summary per conversation, owned like the conversation (another user's reads as missing)."""

    async def save_vectors(
        self, user_id: str, conversation_id: str, vectors: Mapping[str, bytes], *, model: str
    ) -> bool: ...

    async def load_vectors(self, user_id: str, conversation_id: str, *, model: str) -> dict[str, bytes]: ...

    async def load_summary(self, user_id: str, conversation_id: str) -> Summary | None: ...

    async def save_summary(self, user_id: str, summary: Summary) -> bool: ...

    async def delete_summary(self, user_id: str, conversation_id: str) -> bool: ...


@dataclass(slots=True)
class BuiltContext:
    """A turn's prompt, its report, and what the engine learned building it (the new message's vector)."""

    messages: list[ChatMessage]
    report: ContextReport
    query_vector: bytes | None = None
    embed_ms: float | None = None
    build_ms: float = 0.0


@dataclass(frozen=True, slots=True)
class QueryEmbedding:
    """The new message's vector, computed once per turn (the pipeline's embed step) and reused by recall and hooks;
    ``vector`` is None when the embedding model failed (``note`` says so for the context report)."""

    vector: Sequence[float] | None
    ms: float | None = None
    note: str | None = None


class ContextEngine:
    """One per app (``daehwa.services``)."""

    def __init__(
        self,
        *,
        router: Router,
        metrics: Metrics,
        memory: ContextMemory | None,
        embedder: Embedder | None,
        policy: ContextPolicy,
        max_tokens_cap: int | None,
        reply_tokens: int = 1024,
        summary_model: str | None = None,
        embedder_missing: str | None = None,
    ) -> None:
        self.router = router
        self.metrics = metrics
        self.memory = memory
        self.embedder = embedder
        self.policy = policy
        self.max_tokens_cap = max_tokens_cap
        self.reply_tokens = reply_tokens
        self.summary_model = summary_model
        self.embedder_missing = embedder_missing or f"the embedding model is not installed: {INSTALL_HINT}"
        self._locks: OrderedDict[str, asyncio.Lock] = OrderedDict()

    @classmethod
    def from_settings(
        cls,
        settings: Settings,
        *,
        router: Router,
        metrics: Metrics,
        store: object,
        embedder: Embedder | None = None,
        embedder_missing: str | None = None,
    ) -> ContextEngine:
        """The engine the ``DAEHWA_CONTEXT_*`` settings describe; it keeps its memory in ``store`` if it can."""
        return cls(
            router=router,
            metrics=metrics,
            memory=store if isinstance(store, ContextMemory) else None,
            embedder=embedder,
            policy=settings.context_policy_default(),
            max_tokens_cap=settings.context_max_tokens,
            reply_tokens=settings.context_reply_tokens,
            summary_model=settings.context_summary_model,
            embedder_missing=embedder_missing,
        )

    # -- what the model can take -------------------------------------------------------------------------------
    def tokenizer(self, model: str) -> Tokenizer:
        """The exact tokenizer of ``model`` where there is one, else the estimate (``exact`` False)."""
        try:
            provider, model_id = self.router.providers.resolve(model)
        except Exception:
            return EstimateTokenizer()
        return provider.tokenizer(model_id) or EstimateTokenizer()

    def budget(self, model: str, params: GenerationParams) -> Budget:
        """The prompt tokens a turn of ``model`` may use: its window minus the reply's max_tokens, capped."""
        window: int | None = None
        try:
            provider, model_id = self.router.providers.resolve(model)
            window = provider.context_window(model_id)
        except Exception:
            window = None
        return context_budget(
            window or DEFAULT_WINDOW,
            max_tokens=params.max_tokens,
            cap=self.max_tokens_cap,
            reply_default=self.reply_tokens,
        )

    # -- the turn's path ---------------------------------------------------------------------------------------
    async def embed_query(self, text: str) -> QueryEmbedding | None:
        """The vector of a new message (None without the embedding model); a failure is counted, not raised."""
        if self.embedder is None:
            return None
        t0 = time.perf_counter()
        try:
            vector = (await self.embedder.embed([text], kind="query"))[0]
        except Exception as exc:  # EmbeddingError, or anything the model's engine raised
            self._failed("embedding", exc)
            return QueryEmbedding(None, note="recall: skipped, the embedding model failed")
        return QueryEmbedding(vector, (time.perf_counter() - t0) * 1000)

    async def build(
        self,
        *,
        user_id: str,
        conversation_id: str,
        history: Sequence[StoredMessage | Entry],
        system: str | None,
        model: str,
        params: GenerationParams,
        policy: ContextPolicy | None = None,
        system_parts: Sequence[str] = (),
        query: QueryEmbedding | None = None,
    ) -> BuiltContext:
        """The prompt for answering the last message of ``history`` (user and assistant messages, oldest first).

        ``system_parts`` are appended to ``system`` (and counted in the budget like it); ``query`` is the last
        message's vector when the caller computed it already (else recall embeds it when it needs it).
        """
        clock = time.perf_counter()
        policy = policy or self.policy
        tokenizer = self.tokenizer(model)
        budget = self.budget(model, params)
        system = "\n\n".join(p for p in (system, *system_parts) if p) or None
        entries = [m if isinstance(m, Entry) else Entry(m.id, m.role, m.content) for m in history]
        if getattr(tokenizer, "blocking", False):
            costs = await asyncio.to_thread(_costs, entries, system, tokenizer)
        else:
            costs = _costs(entries, system, tokenizer)
        system_cost = costs.pop()
        room = budget.tokens - system_cost - tokenizer.prompt_overhead([ChatMessage("system", system or "x")])
        roles = [e.role for e in entries]
        start = select_window(costs, roles, room=room, recent_messages=policy.recent_messages)
        notes: list[str] = []
        summary: Summary | None = None
        recalled: list[Recalled] = []
        vector: bytes | None = None
        embed_ms: float | None = None
        language = "en"  # only the summary's and the excerpts' headings use it: known once older turns are left out
        if start > 0:
            language = language_of([e.content for e in entries[-6:]])
            if policy.summary:
                summary, note = await self._summary_for(user_id, conversation_id, entries, start)
                if note:
                    notes.append(note)
            reserve = 0
            if summary is not None:
                reserve += min(tokenizer.count(summary.text) + 40, int(budget.tokens * SUMMARY_SHARE))
            if policy.recall:
                reserve += int(budget.tokens * RECALL_SHARE)
            start = select_window(costs, roles, room=room, recent_messages=policy.recent_messages, reserve=reserve)
            if policy.recall:
                recalled, vector, embed_ms, note = await self._recall(
                    user_id, conversation_id, entries, start, policy, query
                )
                if note:
                    notes.append(note)
        messages, report = assemble(
            system,
            entries,
            window_start=start,
            tokenizer=tokenizer,
            budget=budget,
            policy=policy,
            summary=summary,
            recalled=recalled,
            language=language,
            notes=notes,
        )
        return BuiltContext(messages, report, vector, embed_ms, (time.perf_counter() - clock) * 1000)

    async def _summary_for(
        self, user_id: str, conversation_id: str, entries: Sequence[Entry], start: int
    ) -> tuple[Summary | None, str | None]:
        if self.memory is None:
            return None, "summary: this store does not keep summaries"
        try:
            summary = await self.memory.load_summary(user_id, conversation_id)
        except Exception as exc:
            self._failed("summary_load", exc)
            return None, "summary: could not be read"
        if summary is None:
            return None, f"summary: not written yet ({start} older messages are not sent)"
        if not still_valid(summary, entries):
            # An edit or a regenerate deleted messages it covered: it no longer describes this history.
            await self._quietly(self.memory.delete_summary(user_id, conversation_id), "summary_delete")
            return None, "summary: discarded, the messages it covered were edited; a new one follows"
        if summary.messages < start:
            return summary, f"summary: covers {summary.messages} of {start} older messages (the rest follows)"
        return summary, None

    async def _recall(
        self,
        user_id: str,
        conversation_id: str,
        entries: Sequence[Entry],
        start: int,
        policy: ContextPolicy,
        given: QueryEmbedding | None = None,
    ) -> tuple[list[Recalled], bytes | None, float | None, str | None]:
        if self.embedder is None:
            return [], None, None, f"recall: off, {self.embedder_missing}"
        if self.memory is None:
            return [], None, None, "recall: this store does not keep message vectors"
        import numpy as np

        turns = [t for t in turns_of([e.role for e in entries[:start]]) if t.reply is not None]
        if not turns:
            return [], None, None, None
        embedded = given or await self.embed_query(entries[-1].content)
        if embedded is None or embedded.vector is None:
            return [], None, None, embedded.note if embedded else None
        query_vec, embed_ms = embedded.vector, embedded.ms
        query = np.asarray(query_vec, dtype="<f4").tobytes()
        try:
            stored = await self.memory.load_vectors(user_id, conversation_id, model=self.embedder.name)
        except Exception as exc:
            self._failed("vectors_load", exc)
            return [], query, embed_ms, "recall: skipped, the vectors could not be read"
        usable = [t for t in turns if t.reply is not None and entries[t.reply].id in stored]
        missing = len(turns) - len(usable)
        note = f"recall: {missing} of {len(turns)} older turns have no vector yet" if missing else None
        if not usable:
            return [], query, embed_ms, note
        matrix = np.frombuffer(
            b"".join(stored[entries[t.reply].id] for t in usable if t.reply is not None), dtype="<f4"
        ).reshape(len(usable), -1)
        hits = rank(np.asarray(query_vec, dtype=np.float32), matrix, k=policy.recall_k)
        recalled = []
        for i, score in hits:
            t = usable[i]
            ids = (t.user, t.reply) if t.reply is not None else (t.user,)
            recalled.append(Recalled(tuple(entries[j] for j in ids if j is not None), score))
        return recalled, query, embed_ms, note

    # -- after the reply (background) --------------------------------------------------------------------------
    async def after_turn(
        self,
        *,
        user_id: str,
        conversation_id: str,
        history: Sequence[StoredMessage],
        model: str,
        query_vector: bytes | None = None,
        policy: ContextPolicy | None = None,
    ) -> None:
        """Embed what has no vector yet and extend the summary if it is due. Never raises (failures are counted)."""
        if self.memory is None:
            return
        policy = policy or self.policy
        async with self._lock(conversation_id):
            entries = [Entry(m.id, m.role, m.content) for m in history]
            if policy.recall and self.embedder is not None:
                await self._embed_missing(user_id, conversation_id, entries, query_vector)
            if policy.summary:
                await self._update_summary(user_id, conversation_id, entries, model, policy)

    async def _embed_missing(
        self, user_id: str, conversation_id: str, entries: Sequence[Entry], query_vector: bytes | None
    ) -> None:
        assert self.memory is not None and self.embedder is not None
        import numpy as np

        try:
            stored = await self.memory.load_vectors(user_id, conversation_id, model=self.embedder.name)
            new: dict[str, bytes] = {}
            last_user = next((e for e in reversed(entries) if e.role == "user"), None)
            if query_vector is not None and last_user is not None and last_user.id not in stored:
                new[last_user.id] = query_vector
            todo = [
                t
                for t in turns_of([e.role for e in entries])
                if t.reply is not None and entries[t.reply].id not in stored
            ]
            todo = todo[-BACKFILL_BATCH:]  # newest first: they are the ones the next turns recall soonest
            if todo:
                texts = [turn_text(entries[t.user].content, entries[t.reply].content) for t in todo if t.reply]
                vectors = await self.embedder.embed(texts, kind="passage")
                for t, vector in zip(todo, vectors, strict=True):
                    assert t.reply is not None
                    new[entries[t.reply].id] = np.asarray(vector, dtype="<f4").tobytes()
            if new:
                await self.memory.save_vectors(user_id, conversation_id, new, model=self.embedder.name)
        except Exception as exc:
            self._failed("embedding", exc)

    async def _update_summary(
        self, user_id: str, conversation_id: str, entries: Sequence[Entry], model: str, policy: ContextPolicy
    ) -> None:
        assert self.memory is not None
        try:
            tokenizer = self.tokenizer(model)
            budget = self.budget(model, GenerationParams())
            costs = [message_cost(ChatMessage(e.role, e.content), tokenizer) for e in entries]
            # The window the next turn will have (its new message not known yet: a short one is assumed).
            costs.append(20)
            roles = [e.role for e in entries] + ["user"]
            try:
                start = select_window(costs, roles, room=budget.tokens, recent_messages=policy.recent_messages)
            except Exception:
                return
            start = min(start, len(entries))
            previous = await self.memory.load_summary(user_id, conversation_id)
            if previous is not None and not still_valid(previous, entries):
                await self.memory.delete_summary(user_id, conversation_id)
                previous = None
            todo = pending(entries, start, previous)
            if not todo:
                return
            language = language_of([e.content for e in todo] + ([previous.text] if previous else []))
            prompt = summary_prompt(previous, todo, language=language)
            text = await self._generate(self.summary_model or model, prompt)
            if not text.strip():
                raise RuntimeError("the model returned an empty summary")
            summary = extended(
                previous, todo, conversation_id=conversation_id, text=text, model=self.summary_model or model
            )
            await self.memory.save_summary(user_id, summary)
            log.info(
                "summary updated",
                extra={"conversation_id": conversation_id, "messages": summary.messages, "model": summary.model},
            )
        except Exception as exc:
            self._failed("summary", exc)

    async def _generate(self, model: str, messages: list[ChatMessage]) -> str:
        params = GenerationParams(max_tokens=SUMMARY_MAX_TOKENS, temperature=0.2)
        parts: list[str] = []
        async for event in self.router.stream([model], messages, params):
            if isinstance(event, TextDelta):
                parts.append(event.text)
        return "".join(parts)

    # -- helpers -----------------------------------------------------------------------------------------------
    def _lock(self, conversation_id: str) -> asyncio.Lock:
        lock = self._locks.get(conversation_id)
        if lock is None:
            lock = self._locks[conversation_id] = asyncio.Lock()
            while len(self._locks) > LOCKS:
                old, old_lock = next(iter(self._locks.items()))
                if old_lock.locked():
                    break
                self._locks.pop(old)
        self._locks.move_to_end(conversation_id)
        return lock

    def _failed(self, task: str, exc: BaseException) -> None:
        self.metrics.context_failures.labels(task).inc()
        log.warning("context %s failed (retried after the next turn; replies go on without it): %s", task, exc)

    async def _quietly(self, work: Any, task: str) -> None:
        try:
            await work
        except Exception as exc:
            self._failed(task, exc)


def _costs(entries: Sequence[Entry], system: str | None, tokenizer: Tokenizer) -> list[int]:
    """Each message's cost, then the system prompt's (last)."""
    costs = [message_cost(ChatMessage(e.role, e.content), tokenizer) for e in entries]
    costs.append(message_cost(ChatMessage("system", system), tokenizer) if system else 0)
    return costs
