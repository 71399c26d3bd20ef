"""``create_app(settings)``: the ASGI app behind ``daehwa serve``.

Everything the app needs lives on ``app.state`` (``settings``, ``services``, ``accounts``, ``turns``) and starts and
stops in the lifespan; nothing is global. Each area adds its routes as an ``APIRouter`` in its own module of
``daehwa.api`` and one ``include_router`` line in ``_include_routers`` below.
"""

from __future__ import annotations

import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI

from .. import __version__
from ..accounts import Accounts
from ..config import Settings
from ..services import Services, build_services
from . import account, auth, intelligence, openai, ops, rest, stream, web
from .errors import install_error_handlers
from .middleware import BodyLimitMiddleware, RequestIdMiddleware, install_log_redaction, remove_log_redaction
from .stream import ActiveTurns

log = logging.getLogger("daehwa.api")


def create_app(settings: Settings, services: Services | None = None) -> FastAPI:
    """Build the app. Services passed in are started and closed by the caller; otherwise the app owns them."""
    owned = services is None
    services = services if services is not None else build_services(settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        redaction = install_log_redaction()
        try:
            if owned:
                await services.start()
            try:
                await app.state.turns.open()
                try:
                    yield
                finally:
                    app.state.turns.stop_all()  # replies still streaming are stored as interrupted
                    await app.state.turns.close()
            finally:
                if owned:
                    await services.aclose()
        finally:
            remove_log_redaction(redaction)

    app = FastAPI(
        title="daehwa",
        version=__version__,
        description="Self-hosted LLM chat: an OpenAI-compatible /v1, a conversation API over REST, SSE and "
        "WebSocket, and accounts. See docs/api.md.",
        lifespan=lifespan,
    )
    app.state.settings = settings
    app.state.services = services
    app.state.accounts = Accounts(services.store, settings)
    app.state.turns = ActiveTurns(services.store)
    app.state.turns.on_user_deleted.append(app.state.accounts.forget_user)
    app.state.started_at = time.time()

    install_error_handlers(app)
    _include_routers(app)
    # Added last = outermost: the request id exists before anything else runs, even for a 413.
    app.add_middleware(BodyLimitMiddleware, max_bytes=settings.max_request_bytes)
    app.add_middleware(RequestIdMiddleware)
    # Outermost of all: POST /v1/chat/completions is answered here, without the layers above (its docstring says why).
    app.add_middleware(openai.ChatCompletionsRoute, max_bytes=settings.max_request_bytes)
    return app


def app_from_environment() -> FastAPI:
    """The app of one ``daehwa serve --workers N`` worker process: settings from the environment (the parent put
    its flags there), logging as the parent's."""
    from ..config import load_settings
    from ..logs import configure_logging

    settings = load_settings()
    configure_logging(settings)
    return create_app(settings)


def _include_routers(app: FastAPI) -> None:
    app.include_router(rest.health_router)
    app.include_router(auth.router)
    app.include_router(account.router)
    app.include_router(rest.router)
    app.include_router(stream.router)
    app.include_router(openai.router)
    app.include_router(ops.router)
    app.include_router(intelligence.router)
    app.include_router(web.web_router())
