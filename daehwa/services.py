"""Everything a running daehwa needs, built from Settings in one place: used by ``create_app`` and by the CLI."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from .chat import ChatService
from .config import Settings
from .context.embeddings import load_embedder
from .context.engine import ContextEngine
from .intelligence.collecting import FormCollector, FormWebhooks
from .intelligence.extract import Extractor
from .metrics import Metrics
from .moderation import build_moderator
from .moderation.base import ModerationPolicy, Moderator
from .personas import PersonaCatalog
from .pipeline import TurnContributor, TurnObserver
from .pricing import PriceTable
from .providers.registry import ProviderRegistry
from .quotas import QuotaLimiter
from .routing import ResilienceConfig, Router
from .stores import open_store
from .stores.base import Store
from .stores.cache import CachedStore
from .stores.common import utcnow

if TYPE_CHECKING:
    from .intelligence.service import Intelligence

log = logging.getLogger(__name__)

# How long a shutdown waits for replies still being saved and observers still running before it cancels them.
_DRAIN_SECONDS = 30.0


@dataclass
class Services:
    settings: Settings
    store: Store
    providers: ProviderRegistry
    personas: PersonaCatalog
    moderator: Moderator
    metrics: Metrics
    router: Router
    chat: ChatService
    limiter: QuotaLimiter | None = None  # None when no quota is configured
    intelligence: Intelligence | None = None  # None when DAEHWA_INTELLIGENCE is off or its extra is missing
    forms: FormCollector | None = None  # the form step (personas with a [form])

    _breaker_sharing: asyncio.Future[None] | None = field(default=None, init=False, repr=False)
    _second_sweep: asyncio.Future[None] | None = field(default=None, init=False, repr=False)

    async def start(self) -> None:
        """Open the store, then start the default model's provider (the embedded model loads here, once).

        Other providers start on first use, so e.g. ``daehwa chat -m openai/...`` never loads the local model.
        """
        await self.store.open()
        await self.recover_interrupted()
        # Open breakers are shared with the other processes of the store (when it has a board: Redis, PostgreSQL).
        self._breaker_sharing = asyncio.ensure_future(self.router.share_breakers(self.store.breaker_board()))
        default = self.settings.default_model.partition("/")[0]
        await self.providers.start([default])

    async def recover_interrupted(self) -> None:
        """Store the replies a crashed server was streaming as interrupted (their text is kept), not the ones other
        live processes on the store are streaming (their chunk log's lease is alive).

        Twice: now, for replies older than a lease (a reply just begun may not have its lease yet); and once more a
        lease and a half later, for every reply begun before this start, when the leases of a server that crashed
        just before it have lapsed.
        """
        started = utcnow()
        lease = self.settings.stream_lease_seconds
        await self.store.recover_interrupted(created_before=started - timedelta(seconds=lease))
        self._second_sweep = asyncio.ensure_future(self._sweep_later(started, lease * 1.5))

    async def _sweep_later(self, started: datetime, delay: float) -> None:
        await asyncio.sleep(delay)
        try:
            await self.store.recover_interrupted(created_before=started)
        except Exception:  # e.g. a store outage: the next start sweeps again, and resuming readers repair their reply
            log.warning("the second sweep for interrupted replies failed", exc_info=True)

    async def aclose(self) -> None:
        for task in (self._second_sweep, self._breaker_sharing):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        self._second_sweep = self._breaker_sharing = None
        await self.chat.drain(grace_seconds=_DRAIN_SECONDS)
        if self.forms is not None:
            await self.forms.webhooks.drain()
        close = getattr(self.chat.context.embedder, "close", None)
        if close is not None:
            close()
        await self.providers.aclose()
        if self.limiter is not None:
            await self.limiter.aclose()
        await self.store.close()


def build_services(
    settings: Settings,
    *,
    store: Store | None = None,
    providers: ProviderRegistry | None = None,
    moderator: Moderator | None = None,
    personas: PersonaCatalog | None = None,
    contributors: Sequence[TurnContributor] = (),
    observers: Sequence[TurnObserver] = (),
) -> Services:
    """Wire the services together; pieces can be injected (tests pass a fake provider registry).

    ``contributors`` and ``observers`` are the turn pipeline's hooks (docs/pipeline.md), run in the order given.
    """
    metrics = Metrics()
    if store is None:
        store = open_store(settings.resolved_database_url(), settings=settings)
        if settings.store_cache_conversations > 0:
            store = CachedStore(store, settings.store_cache_conversations)
    providers = providers if providers is not None else ProviderRegistry.from_settings(settings)
    personas = personas if personas is not None else PersonaCatalog.load(settings.personas_dir)
    moderator = moderator if moderator is not None else build_moderator(settings)
    router = Router(providers, metrics, ResilienceConfig.from_settings(settings))
    quotas = QuotaLimiter.from_settings(settings, store=store, metrics=metrics)
    limiter = quotas if quotas.enabled else None
    policy = ModerationPolicy(input=settings.filter_input_action, output=settings.filter_output_action)
    context = ContextEngine.from_settings(
        settings,
        router=router,
        metrics=metrics,
        store=store,
        embedder=load_embedder(settings.context_embedder, threads=settings.context_embed_threads),
        embedder_missing=None if settings.context_embedder != "off" else "DAEHWA_CONTEXT_EMBEDDER is off",
    )
    intel = None
    if settings.intelligence:
        intel, (found_contributors, found_observers) = _intelligence(store, context.embedder)
        contributors = [*contributors, *found_contributors]
        observers = [*observers, *found_observers]
    forms = FormCollector(
        store, Extractor(router, metrics), FormWebhooks(store, metrics), metrics, default_model=settings.default_model
    )
    chat = ChatService(
        settings=settings,
        store=store,
        router=router,
        personas=personas,
        moderator=moderator,
        policy=policy,
        metrics=metrics,
        limiter=limiter,
        pricing=PriceTable.from_settings(settings.prices_file),
        context=context,
        contributors=(forms, *contributors),
        observers=observers,
    )
    return Services(
        settings=settings,
        store=store,
        providers=providers,
        personas=personas,
        moderator=moderator,
        metrics=metrics,
        router=router,
        chat=chat,
        limiter=limiter,
        intelligence=intel,
        forms=forms,
    )


def _intelligence(store: Store, embedder: object) -> tuple[Intelligence | None, tuple[list[Any], list[Any]]]:
    """Conversation intelligence's hooks, or none when numpy (the ``intelligence`` extra) is missing."""
    try:
        import numpy  # noqa: F401
    except ImportError:
        log.warning("conversation intelligence is off: pip install 'daehwa[intelligence]'")
        return None, ([], [])
    from .intelligence.service import Intelligence, hooks

    intel = Intelligence.build(store, embedder=embedder)
    return intel, hooks(intel)
