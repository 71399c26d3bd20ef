"""The conversation API (the server keeps the history), the stateless ``/api/chat``, and what the web page lists.

Every route that produces a reply goes through ``ChatService`` via ``TurnHandle``; ``"stream": true`` turns the same
route into an SSE stream (``stream.sse_turn_response``). Another user's conversation is a 404 like a missing one.
"""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Header, Query, Request, Response
from fastapi.encoders import jsonable_encoder
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from ..chat import TurnRequest
from ..errors import ConfigError, InvalidRequest, NotFound
from ..i18n import normalize_locale
from ..intelligence.forms import META_KEY as FORM_META_KEY
from ..intelligence.forms import FormState, progress
from ..resume import StreamTimes, find_reply
from ..services import Services
from ..stores.base import ConversationQuery
from ..types import ChatMessage, User
from .auth import AdminUser, CurrentUser
from .errors import error_response
from .schemas import (
    ConversationOut,
    ErrorOut,
    FormProgressOut,
    GenerationOptions,
    MessageContextOut,
    MessageOut,
    TurnResultOut,
    conversation_json,
    generation_params,
    message_json,
)
from .stream import ActiveTurns, TurnHandle, sse_resume_response, sse_turn_response

router = APIRouter(tags=["conversations"])

# GET /api/conversations/{id}: the latest MESSAGE_PAGE_DEFAULT messages unless the caller asks for more.
MESSAGE_PAGE_DEFAULT = 200
MESSAGE_PAGE_MAX = 1000

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 403, 404, 409, 413, 422, 429, 502, 503, 504)
}
_TURN_RESPONSES: dict[int | str, dict[str, Any]] = {
    **_ERRORS,
    200: {
        "description": "The finished turn, or with stream=true an SSE stream (events start, delta, error, done).",
        "content": {"text/event-stream": {}},
    },
}


def services_of(request: Request) -> Services:
    return request.app.state.services


def turns_of(request: Request) -> ActiveTurns:
    return request.app.state.turns


# -- request bodies --------------------------------------------------------------------------------------------
class Options(GenerationOptions):
    """Generation options every reply-producing route takes."""

    stream: bool = Field(default=False, description="Answer as an SSE stream instead of one JSON object.")
    model: str | None = Field(default=None, max_length=200, description="e.g. local, openai/gpt-4o-mini")


class MessageIn(Options):
    content: str = Field(description="The user's message.")


class RegenerateIn(Options):
    pass


class ChatMessageIn(BaseModel):
    role: Literal["system", "user", "assistant"]
    content: str


class StatelessChatIn(Options):
    messages: list[ChatMessageIn] = Field(min_length=1, description="The whole conversation; the last is the user's.")


class ConversationIn(BaseModel):
    persona: str | None = Field(default=None, max_length=100)
    model: str | None = Field(default=None, max_length=200)
    variables: dict[str, str | int | float | bool] | None = None
    title: str | None = Field(default=None, max_length=200)


class RenameIn(BaseModel):
    title: str = Field(min_length=1, max_length=200)


class ConversationListOut(BaseModel):
    data: list[ConversationOut]
    has_more: bool
    next_before: str | None


class ConversationDetailOut(BaseModel):
    conversation: ConversationOut
    messages: list[MessageOut]


class ConversationPageOut(ConversationDetailOut):
    has_more: bool = Field(description="Older messages exist: ask again with before=next_before.")
    next_before: str | None = Field(description="The id of the page's first message when has_more, else null.")


class StoppedOut(BaseModel):
    stopped: bool


async def reply(request: Request, turn: TurnRequest, *, stream: bool) -> Response | dict[str, Any]:
    """Run a turn for a REST route: one JSON TurnResult, or an SSE stream."""
    handle = await TurnHandle.open(services_of(request).chat, turn, turns_of(request), resumable=True)
    if stream:
        return sse_turn_response(handle, resume_seconds=services_of(request).settings.stream_resume_seconds)
    try:
        outcome = await handle.run()
    except BaseException:
        await handle.aclose()
        raise
    finished = outcome.finished
    if finished is not None and finished.error is not None and finished.outcome.value == "error":
        return error_response(finished.error)  # the model failed before writing anything; stored as error
    return outcome.json()


def _request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


# -- conversations ---------------------------------------------------------------------------------------------
@router.get("/api/conversations", response_model=ConversationListOut, responses=_ERRORS)
async def list_conversations(
    request: Request,
    user: CurrentUser,
    q: Annotated[str | None, Query(max_length=200, description="Words of the title")] = None,
    limit: Annotated[int, Query(ge=1, le=200)] = 50,
    before: Annotated[datetime | None, Query(description="Page: conversations updated before this time")] = None,
    kind: Annotated[Literal["chat", "api"], Query()] = "chat",
) -> dict[str, Any]:
    """Your conversations, most recently updated first."""
    found = await services_of(request).store.list_conversations(
        user.id, ConversationQuery(kind=kind, title=q or None, limit=limit + 1, before=before)
    )
    page = found[:limit]
    has_more = len(found) > limit
    return {
        "data": [conversation_json(c) for c in page],
        "has_more": has_more,
        "next_before": conversation_json(page[-1])["updated_at"] if has_more and page else None,
    }


@router.post("/api/conversations", response_model=ConversationDetailOut, status_code=201, responses=_ERRORS)
async def create_conversation(body: ConversationIn, request: Request, user: CurrentUser) -> dict[str, Any]:
    """Start a conversation; a persona that speaks first has its first message in ``messages``."""
    conversation, messages = await services_of(request).chat.start_conversation(
        user,
        persona=body.persona,
        model=body.model,
        variables=body.variables,
        title=body.title,
        locale=request.headers.get("accept-language"),
    )
    return {"conversation": conversation_json(conversation), "messages": [message_json(m) for m in messages]}


async def _owned(request: Request, user_id: str, conversation_id: str) -> Any:
    conversation = await services_of(request).store.get_conversation(user_id, conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.", param="conversation_id")
    return conversation


@router.get("/api/conversations/{conversation_id}", response_model=ConversationPageOut, responses=_ERRORS)
async def get_conversation(
    conversation_id: str,
    request: Request,
    user: CurrentUser,
    limit: Annotated[int, Query(ge=1, le=MESSAGE_PAGE_MAX, description="Messages per page")] = MESSAGE_PAGE_DEFAULT,
    before: Annotated[
        str | None, Query(min_length=1, max_length=200, description="Page: the messages before this message id")
    ] = None,
) -> dict[str, Any]:
    """A conversation and a page of its messages, oldest first: the latest ones, or those before ``before``."""
    store = services_of(request).store
    conversation = await _owned(request, user.id, conversation_id)
    found = await store.list_messages(user.id, conversation_id, limit=limit + 1, before=before)
    if found is None:
        raise NotFound("No such conversation.", param="conversation_id")
    has_more = len(found) > limit
    page = found[-limit:]
    messages = [message_json(m) for m in page]
    intel = services_of(request).intelligence
    if intel is not None and not user.anonymous:
        messages = await intel.without_dismissed(user.id, messages)
    return {
        "conversation": conversation_json(conversation),
        "messages": messages,
        "has_more": has_more,
        "next_before": page[0].id if has_more else None,
    }


@router.get(
    "/api/conversations/{conversation_id}/messages/{message_id}/context",
    response_model=MessageContextOut,
    responses=_ERRORS,
)
async def message_context(conversation_id: str, message_id: str, request: Request, user: CurrentUser) -> dict[str, Any]:
    """What the model was sent for this reply, and why: recent messages, summary, recalled turns, token costs."""
    await _owned(request, user.id, conversation_id)
    messages = await services_of(request).store.list_messages(user.id, conversation_id) or []
    found = next((m for m in messages if m.id == message_id), None)
    if found is None or found.role != "assistant":
        raise NotFound("No such reply in this conversation.", param="message_id")
    report = found.meta.get("context")
    return {"message_id": found.id, "context": report if isinstance(report, dict) else None}


@router.get("/api/conversations/{conversation_id}/form", response_model=FormProgressOut, responses=_ERRORS)
async def form_progress(conversation_id: str, request: Request, user: CurrentUser) -> dict[str, Any]:
    """The conversation's form: every field with its value, which one is asked next, and whether it is done."""
    conversation = await _owned(request, user.id, conversation_id)
    personas = services_of(request).personas
    persona = personas.get(conversation.persona) if conversation.persona in personas else None
    if persona is None or persona.form is None:
        return {"form": None}
    state = FormState.from_meta((conversation.meta or {}).get(FORM_META_KEY), persona.form)
    lang = normalize_locale(request.headers.get("accept-language"))
    return progress(persona.form, state, state.locale if state is not None else lang[:2])


@router.get(
    "/api/conversations/{conversation_id}/messages/{message_id}/stream",
    responses={
        **_ERRORS,
        200: {"description": "The rest of the reply as SSE: delta... then done.", "content": {"text/event-stream": {}}},
    },
)
async def resume_stream(
    conversation_id: str,
    message_id: str,
    request: Request,
    user: CurrentUser,
    after: Annotated[int, Query(ge=0, description="Characters of the reply the client already has.")] = 0,
    last_event_id: Annotated[str | None, Header(alias="Last-Event-ID", max_length=20)] = None,
) -> Response:
    """Resume a reply (streaming or finished) from any server process: its text after ``after`` characters (or the
    ``Last-Event-ID`` header, which an SSE client sends when it reconnects), then ``done``."""
    if last_event_id is not None:
        if not last_event_id.strip().isdigit():
            raise InvalidRequest("Last-Event-ID must be the id of a delta event (a number).", param="Last-Event-ID")
        after = int(last_event_id)
    await _owned(request, user.id, conversation_id)
    services = services_of(request)
    found = await find_reply(services.store, user.id, conversation_id, message_id)
    if found is None:
        raise NotFound("No such reply in this conversation.", param="message_id")
    settings = services.settings
    times = StreamTimes(settings.stream_lease_seconds, settings.stream_log_seconds)
    return sse_resume_response(services.store, user, found, after=after, times=times)


@router.patch("/api/conversations/{conversation_id}", response_model=ConversationOut, responses=_ERRORS)
async def rename_conversation(
    conversation_id: str, body: RenameIn, request: Request, user: CurrentUser
) -> dict[str, Any]:
    """Rename a conversation."""
    store = services_of(request).store
    title = " ".join(body.title.split())
    if not title:
        raise InvalidRequest("The title is empty.", param="title")
    if not await store.rename_conversation(user.id, conversation_id, title):
        raise NotFound("No such conversation.", param="conversation_id")
    await store.update_conversation(user.id, conversation_id, meta={"auto_title": False})
    return conversation_json(await _owned(request, user.id, conversation_id))


@router.delete("/api/conversations/{conversation_id}", status_code=204, responses=_ERRORS)
async def delete_conversation(conversation_id: str, request: Request, user: CurrentUser) -> Response:
    """Delete a conversation and its messages (usage records stay)."""
    await turns_of(request).stop(user.id, conversation_id, wait=False)
    if not await services_of(request).store.delete_conversation(user.id, conversation_id):
        raise NotFound("No such conversation.", param="conversation_id")
    return Response(status_code=204)


async def _reply_to(request: Request, user: User, body: Any, **turn: Any) -> Any:
    """Run a turn asked for over REST (or SSE when the body says ``stream``): the fields every such route shares."""
    request_turn = TurnRequest(
        user=user,
        model=body.model,
        params=generation_params(body),
        source="sse" if body.stream else "rest",
        request_id=_request_id(request),
        locale=request.headers.get("accept-language"),
        **turn,
    )
    return await reply(request, request_turn, stream=body.stream)


@router.post(
    "/api/conversations/{conversation_id}/messages",
    response_model=TurnResultOut,
    responses=_TURN_RESPONSES,
)
async def post_message(conversation_id: str, body: MessageIn, request: Request, user: CurrentUser) -> Any:
    """Send a message and get the reply (``"stream": true`` for SSE)."""
    return await _reply_to(request, user, body, content=body.content, conversation_id=conversation_id)


@router.post(
    "/api/conversations/{conversation_id}/regenerate",
    response_model=TurnResultOut,
    responses=_TURN_RESPONSES,
)
async def regenerate(conversation_id: str, body: RegenerateIn, request: Request, user: CurrentUser) -> Any:
    """Answer the last user message again, replacing the reply after it."""
    return await _reply_to(request, user, body, conversation_id=conversation_id, regenerate=True)


@router.post(
    "/api/conversations/{conversation_id}/edit",
    response_model=TurnResultOut,
    responses=_TURN_RESPONSES,
)
async def edit_last(conversation_id: str, body: MessageIn, request: Request, user: CurrentUser) -> Any:
    """Replace the last user message (and everything after it) with ``content``, and answer it."""
    return await _reply_to(request, user, body, content=body.content, conversation_id=conversation_id, edit=True)


@router.post("/api/conversations/{conversation_id}/stop", response_model=StoppedOut, responses=_ERRORS)
async def stop(conversation_id: str, request: Request, user: CurrentUser) -> dict[str, Any]:
    """Stop the reply being generated for this conversation; the partial reply is stored as interrupted."""
    await _owned(request, user.id, conversation_id)
    return {"stopped": await turns_of(request).stop(user.id, conversation_id)}


@router.post("/api/chat", response_model=TurnResultOut, responses=_TURN_RESPONSES, tags=["chat"])
async def stateless_chat(body: StatelessChatIn, request: Request, user: CurrentUser) -> Any:
    """One reply to a client-kept history (logged as a conversation of kind ``api``)."""
    if body.messages[-1].role != "user":
        raise InvalidRequest("The last message must be the user's.", param="messages")
    return await _reply_to(request, user, body, messages=[ChatMessage(m.role, m.content) for m in body.messages])


# -- what the web page lists -----------------------------------------------------------------------------------
class VariableOut(BaseModel):
    name: str
    default: str | None
    description: str
    choices: list[str]


class PersonaOut(BaseModel):
    name: str
    title: str
    description: str
    titles: dict[str, str]
    descriptions: dict[str, str]
    speaks_first: bool
    allow_anonymous: bool
    model: str | None
    variables: list[VariableOut]


class PersonaListOut(BaseModel):
    data: list[PersonaOut]
    default: str


class ModelOut(BaseModel):
    id: str
    provider: str
    available: bool
    reason: str | None
    description: str


class ModelListOut(BaseModel):
    data: list[ModelOut]
    default: str


@router.get("/api/personas", response_model=PersonaListOut, responses=_ERRORS, tags=["catalog"])
async def list_personas(
    request: Request,
    user: CurrentUser,
    locale: Annotated[str | None, Query(max_length=50)] = None,
    accept_language: Annotated[str | None, Header()] = None,
) -> dict[str, Any]:
    """The personas you can start a conversation with (titles in your language)."""
    lang = normalize_locale(locale or accept_language)
    personas = services_of(request).personas
    data = []
    for p in personas:
        if user.anonymous and not p.allow_anonymous:
            continue
        data.append(
            {
                "name": p.name,
                "title": p.localized_title(lang),
                "description": p.description.get(lang) or p.description.get("en") or "",
                "titles": dict(p.title),
                "descriptions": dict(p.description),
                "speaks_first": bool(p.first_message),
                "allow_anonymous": p.allow_anonymous,
                "model": p.model,
                "variables": [
                    {"name": v.name, "default": v.default, "description": v.description, "choices": list(v.choices)}
                    for v in p.variables.values()
                ],
            }
        )
    return {"data": data, "default": services_of(request).settings.default_persona}


@router.get("/api/models", response_model=ModelListOut, responses=_ERRORS, tags=["catalog"])
async def list_models(request: Request, user: CurrentUser) -> dict[str, Any]:
    """The models of every configured provider, with whether they can run now (and why not)."""
    services = services_of(request)
    models = await services.providers.list_models()
    return {
        "data": [
            {
                "id": m.id,
                "provider": m.provider,
                "available": m.available,
                "reason": m.reason,
                "description": m.description,
            }
            for m in models
        ],
        "default": services.settings.default_model,
    }


# -- admin and health ------------------------------------------------------------------------------------------
@router.post("/api/admin/filter/reload", responses=_ERRORS, tags=["admin"])
async def reload_filter(request: Request, user: AdminUser) -> dict[str, Any]:
    """Reload the banned-word lists from disk (admin only)."""
    moderator = services_of(request).moderator
    reload = getattr(moderator, "reload", None)
    if reload is None:
        raise ConfigError("The configured moderator cannot reload its word lists.", code="not_supported")
    result = reload()
    if hasattr(result, "__await__"):
        result = await result
    out: dict[str, Any] = {"reloaded": True}
    if isinstance(result, dict):
        out.update(result)
    elif isinstance(result, int):
        out["words"] = result
    return out


health_router = APIRouter(tags=["operations"])


@health_router.get("/healthz")
async def healthz() -> dict[str, str]:
    """Liveness: the process answers."""
    return {"status": "ok"}


@health_router.get("/readyz")
async def readyz(request: Request) -> JSONResponse:
    """Readiness: the store answers and the default model is loaded."""
    services = services_of(request)
    body: dict[str, Any] = {"status": "ready", "store": "ok"}
    ready = True
    try:
        await services.store.ping()
    except Exception as exc:
        ready = False
        body["store"] = f"unreachable: {type(exc).__name__}"
    try:
        provider, model_id = services.providers.resolve(services.settings.default_model)
        status = provider.status()
        body["model"] = {
            "id": services.providers.full_name(provider, model_id),
            "available": status.available,
            "loaded": status.loaded,
            "reason": status.reason,
        }
        ready = ready and status.available and status.loaded
    except Exception as exc:
        ready = False
        body["model"] = {"id": services.settings.default_model, "available": False, "loaded": False, "reason": str(exc)}
    # Breakers and bulkheads inform, they do not gate readiness: an open breaker still answers through fallbacks.
    health = services.router.health()
    body["breakers"] = [dataclasses.asdict(b) for b in health["breakers"]]
    body["bulkheads"] = [dataclasses.asdict(b) for b in health["bulkheads"]]
    if not ready:
        body["status"] = "not_ready"
    return JSONResponse(jsonable_encoder(body), status_code=200 if ready else 503)
