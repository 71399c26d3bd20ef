"""``/v1``: OpenAI's Chat Completions wire format, translated to and from the project's types at this edge only.

Requests are stateless (the client sends the history) and still go through the one pipeline: each is logged as a
conversation of kind ``api`` with source ``v1``, so usage is accounted like any turn. Every error on ``/v1`` is OpenAI's
``{"error": {"message", "type", "param", "code"}}`` body (the app's handlers make sure of that).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from contextlib import suppress
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.types import ASGIApp, Receive, Scope, Send

from ..chat import TurnDelta, TurnRequest
from ..errors import AuthenticationError, DaehwaError, InvalidRequest, NotFound, UnsupportedParameter
from ..logs import bind_request_id
from ..routing import params_from_wire
from ..stores.outage import store_outage
from ..text import check_json, may_hold_escapes
from ..types import ChatMessage, User
from .auth import MISSING_API_KEY, api_key_user, user_for_authorization
from .errors import error_response, validation_message
from .middleware import assign_request_id
from .schemas import ErrorOut, param_field
from .stream import EventStreamResponse, SendBytes, TurnHandle, error_event_json

log = logging.getLogger("daehwa.api")
router = APIRouter(prefix="/v1", tags=["openai"])
CHAT_COMPLETIONS_PATH = "/v1/chat/completions"
ApiKeyUser = Annotated[User, Depends(api_key_user)]
_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": ErrorOut} for status in (400, 401, 404, 413, 422, 429, 502, 503, 504)
}


# -- wire models -----------------------------------------------------------------------------------------------
class TextPart(BaseModel):
    type: Literal["text"]
    text: str


class WireMessage(BaseModel):
    model_config = ConfigDict(extra="ignore")

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart] | None = None
    name: str | None = Field(default=None, max_length=64)

    def to_chat(self) -> ChatMessage:
        if self.content is None:
            raise InvalidRequest("Every message needs content.", param="messages")
        text = self.content if isinstance(self.content, str) else "".join(p.text for p in self.content)
        role = "system" if self.role == "developer" else self.role
        return ChatMessage(role, text, self.name)


class StreamOptions(BaseModel):
    include_usage: bool = False


class ResponseFormat(BaseModel):
    model_config = ConfigDict(extra="allow")

    type: Literal["text", "json_object", "json_schema"]


class ChatCompletionRequest(BaseModel):
    """``POST /v1/chat/completions``; parameters not listed here are passed on to the provider by name."""

    model_config = ConfigDict(extra="allow")

    model: str = Field(min_length=1, max_length=200)
    messages: list[WireMessage] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    n: int | None = param_field("n")
    max_tokens: int | None = param_field("max_tokens")
    max_completion_tokens: int | None = param_field("max_completion_tokens")
    temperature: float | None = param_field("temperature")
    top_p: float | None = param_field("top_p")
    stop: str | list[str] | None = None
    presence_penalty: float | None = param_field("presence_penalty")
    frequency_penalty: float | None = param_field("frequency_penalty")
    seed: int | None = param_field("seed")
    user: str | None = Field(default=None, max_length=256)
    response_format: ResponseFormat | None = None


_UNSUPPORTED = ("tools", "tool_choice", "functions", "function_call", "audio", "modalities", "prediction")


def _params(body: ChatCompletionRequest, max_choices: int) -> dict[str, Any]:
    if body.n is not None and body.n > max_choices:
        raise InvalidRequest(
            f"n is {body.n}; this server allows at most {max_choices} (DAEHWA_MAX_CHOICES).", param="n"
        )
    if isinstance(body.stop, list) and len(body.stop) > 4:
        raise InvalidRequest("stop takes at most 4 sequences.", param="stop")
    extra = dict(body.model_extra or {})
    for name in _UNSUPPORTED:
        if extra.get(name) not in (None, [], {}):
            raise UnsupportedParameter(f"{name} is not supported by daehwa's /v1: remove it.", param=name)
        extra.pop(name, None)
    values: dict[str, Any] = {
        "max_tokens": body.max_completion_tokens or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "n": body.n if body.n and body.n > 1 else None,
        "stop": body.stop,
        "presence_penalty": body.presence_penalty,
        "frequency_penalty": body.frequency_penalty,
        "seed": body.seed,
        "user": body.user,
        "response_format": body.response_format.model_dump(exclude_none=True) if body.response_format else None,
    }
    values = {k: v for k, v in values.items() if v is not None}
    for name, value in extra.items():
        if value is not None and name not in ("stream_options",):
            values[name] = value
    return values


def _turn_request(
    body: ChatCompletionRequest, user: User, max_choices: int, request_id: str | None, locale: str | None
) -> TurnRequest:
    messages = [m.to_chat() for m in body.messages]
    if messages[-1].role != "user":
        raise InvalidRequest("The last message must be the user's (role 'user').", param="messages")
    params = params_from_wire(_params(body, max_choices))
    return TurnRequest(
        user=user,
        messages=messages,
        model=body.model,
        params=params,
        source="v1",
        request_id=request_id,
        locale=locale,
        fallback_reply=False,  # a program gets an OpenAI error it can retry on, not a canned sentence as output
    )


def _completion_id(reply_id: str) -> str:
    return f"chatcmpl-{reply_id}"


def _usage(usage: Any) -> dict[str, int]:
    return {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.total_tokens,
    }


def _message(text: str, reply_meta: Mapping[str, Any]) -> dict[str, Any]:
    """A choice's message; what the turn's contributors added to the reply rides along as ``meta`` (OpenAI's
    clients ignore keys they do not know)."""
    message: dict[str, Any] = {"role": "assistant", "content": text, "refusal": None}
    if reply_meta:
        message["meta"] = dict(reply_meta)
    return message


def _finish_reason(reason: str) -> str:
    return reason if reason in ("stop", "length", "content_filter", "tool_calls") else "stop"


# -- routes ----------------------------------------------------------------------------------------------------
@router.post("/chat/completions", responses={**_ERRORS, 200: {"content": {"text/event-stream": {}}}})
async def chat_completions(body: ChatCompletionRequest, request: Request, user: ApiKeyUser) -> Response:
    """Create a chat completion (OpenAI-compatible), streamed as SSE chunks with ``stream: true``."""
    # The served app answers this route in ``ChatCompletionsRoute`` (below) before FastAPI routes it; this
    # declaration describes it in the OpenAPI schema and answers when the app is used without that middleware.
    rid = getattr(request.state, "request_id", None)
    return await complete(request.app.state, body, user, request_id=rid, locale=request.headers.get("accept-language"))


async def complete(
    state: Any, body: ChatCompletionRequest, user: User, *, request_id: str | None, locale: str | None
) -> Response:
    """Run the completion's turn; the response to send (the JSON completion, the SSE stream, or an error)."""
    turn = _turn_request(body, user, state.settings.max_choices, request_id, locale)
    chat = state.services.chat
    if body.stream:
        handle = await TurnHandle.open(chat, turn, state.turns)
        include_usage = bool(body.stream_options and body.stream_options.include_usage)
        return _stream_response(handle, include_usage, body.n or 1)
    # Registered as an active turn like a streamed one: POST /api/conversations/{id}/stop (from any server process)
    # ends it, and the reply so far is the answer.
    outcome = await TurnHandle.run_to_end(chat, turn, state.turns)
    finished = outcome.finished
    texts: Mapping[int, str] = {0: outcome.message.content}  # stopped: the reply so far (stored as interrupted)
    model = outcome.message.model or outcome.started.model
    meta: Mapping[str, Any] = {}
    usage: dict[str, int] | None = None
    reason = "stop"
    if finished is not None:
        if finished.error is not None:
            return error_response(finished.error)
        texts, model, meta = finished.texts, finished.model, finished.reply_meta
        usage, reason = _usage(finished.usage), _finish_reason(finished.finish_reason)
    choices = [
        {"index": index, "message": _message(text, meta), "logprobs": None, "finish_reason": reason}
        for index, text in sorted(texts.items())
    ]
    payload = {
        "id": _completion_id(outcome.started.reply_id),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": choices,
        "usage": usage,
        "system_fingerprint": None,
    }
    return Response(json.dumps(payload, ensure_ascii=False, separators=(",", ":")), media_type="application/json")


class _TooLarge(InvalidRequest):
    status = 413
    code = "request_too_large"


class ChatCompletionsRoute:
    """``POST /v1/chat/completions`` answered straight from ASGI, ahead of FastAPI's routing: the gateway's hot path.

    Installed as the outermost middleware of the app (under Starlette's ``ServerErrorMiddleware``), it does for this
    one route what the layers below it do for every other: the request id (``RequestIdMiddleware``), the body limit and
    the storable-text check (``BodyLimitMiddleware``), the API key (``api_key_user``), the request model
    (``ChatCompletionRequest``, so the same validation and the same ``validation_message`` errors), and OpenAI's
    error body for every failure. What it skips is the cost of the layers themselves: FastAPI's routing, dependency
    solving and request wrappers, and five middleware hops, about a third of the server's CPU per request
    (benchmarks/README.md, "HTTP gateway"). Any other method or path goes on to the app unchanged.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] != CHAT_COMPLETIONS_PATH or scope["method"] != "POST":
            await self.app(scope, receive, send)
            return
        rid = assign_request_id(scope)
        with bind_request_id(rid):
            try:
                response = await self._answer(scope, receive, rid)
            except DaehwaError as exc:
                if exc.status >= 500:
                    log.warning("request %s failed: %s", rid, exc.code)
                response = error_response(exc)
            except Exception as exc:
                outage = store_outage(exc)
                if outage is None:
                    raise  # ServerErrorMiddleware answers (the app's 500 handler) and logs it
                log.warning("request %s failed: %s (%s)", rid, outage.code, type(exc).__name__)
                response = error_response(outage)
            if response is None:
                return  # the client left while sending its body
            response.raw_headers.append((b"x-request-id", rid.encode()))
            await response(scope, receive, send)

    async def _answer(self, scope: Scope, receive: Receive, rid: str) -> Response | None:
        authorization = locale = None
        length: int | None = None
        for name, value in scope["headers"]:
            if name == b"authorization":
                authorization = value.decode("latin-1")
            elif name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
            elif name == b"accept-language":
                locale = value.decode("latin-1")
        if length is not None and length > self.max_bytes:
            raise self._too_large()
        raw = await self._read_body(receive)
        if raw is None:
            return None
        if may_hold_escapes(raw):
            with suppress(ValueError):  # not JSON: said below
                check_json(json.loads(raw))
        state = scope["app"].state
        if not authorization:
            raise AuthenticationError(MISSING_API_KEY, code="missing_api_key")
        user = await user_for_authorization(state.accounts, authorization)
        return await complete(state, _parse_request(raw), user, request_id=rid, locale=locale)

    async def _read_body(self, receive: Receive) -> bytes | None:
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None  # http.disconnect
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                raise self._too_large()
            chunks.append(chunk)
            if not message.get("more_body", False):
                return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    def _too_large(self) -> _TooLarge:
        return _TooLarge(f"The request body is larger than {self.max_bytes} bytes (DAEHWA_MAX_REQUEST_BYTES).")


def _parse_request(raw: bytes) -> ChatCompletionRequest:
    """The request model from the raw body, with the errors FastAPI's validation gives (``validation_message``)."""
    if not raw.strip():
        raise InvalidRequest("The request needs a JSON body.")
    try:
        data = json.loads(raw)
    except ValueError as exc:
        detail = exc.msg if isinstance(exc, json.JSONDecodeError) else str(exc)
        raise InvalidRequest(
            f"The request body is not valid JSON ({detail}): send a JSON object.", code="invalid_json"
        ) from None
    try:
        return ChatCompletionRequest.model_validate(data)
    except ValidationError as exc:
        message, param, code = validation_message(exc.errors())
        raise InvalidRequest(message, param=param, code=code) from None


def _stream_response(handle: TurnHandle, include_usage: bool, n: int) -> EventStreamResponse:
    cid = _completion_id(handle.started.reply_id)
    created = int(time.time())
    model = handle.started.model

    def chunk(choices: list[dict[str, Any]], **more: Any) -> bytes:
        data: dict[str, Any] = {
            "id": cid,
            "object": "chat.completion.chunk",
            "created": created,
            "model": model,
            "system_fingerprint": None,
            "choices": choices,
        }
        if include_usage:
            data["usage"] = None
        data.update(more)
        return b"data: " + json.dumps(data, ensure_ascii=False, separators=(",", ":")).encode() + b"\n\n"

    # What is ready at the same moment goes out as one write: a delta with the role chunk that opens its choice, and
    # the end (finish chunks, usage, [DONE]); each write is a syscall here and a wake-up of the client.
    async def produce(send: SendBytes) -> None:
        opened: set[int] = set()

        async def emit(delta: TurnDelta) -> None:
            content = chunk(
                [{"index": delta.index, "delta": {"content": delta.text}, "logprobs": None, "finish_reason": None}]
            )
            if delta.index not in opened:
                opened.add(delta.index)
                content = _role_chunk(chunk, delta.index) + content
            await send(content)

        try:
            outcome = await handle.run(emit)
        except BaseException:
            await handle.aclose()
            raise
        finished = outcome.finished
        if finished is None or finished.error is not None:
            if finished is not None and finished.error is not None:
                error = b"data: " + json.dumps(error_event_json(finished.error)).encode() + b"\n\n"
                await send(error + b"data: [DONE]\n\n")
                return
            await send(b"data: [DONE]\n\n")
            return
        reason = _finish_reason(finished.finish_reason)
        end: list[bytes] = []
        for index in range(max(n, len(finished.texts))):
            if index not in opened:
                end.append(_role_chunk(chunk, index))
            end.append(chunk([{"index": index, "delta": {}, "logprobs": None, "finish_reason": reason}]))
        if include_usage:
            end.append(chunk([], usage=_usage(finished.usage)))
        end.append(b"data: [DONE]\n\n")
        await send(b"".join(end))

    return EventStreamResponse(produce)


def _role_chunk(chunk: Callable[[list[dict[str, Any]]], bytes], index: int) -> bytes:
    """The chunk that opens choice ``index``: its role and empty content, as OpenAI sends first."""
    return chunk(
        [{"index": index, "delta": {"role": "assistant", "content": ""}, "logprobs": None, "finish_reason": None}]
    )


class ModelObject(BaseModel):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str


class ModelList(BaseModel):
    object: Literal["list"] = "list"
    data: list[ModelObject]


async def _model_objects(request: Request) -> list[dict[str, Any]]:
    models = await request.app.state.services.providers.list_models()
    created = int(request.app.state.started_at)
    return [
        {"id": m.id, "object": "model", "created": created, "owned_by": m.provider}
        for m in models
        if m.available and not m.id.endswith("/*")
    ]


@router.get("/models", response_model=ModelList, responses=_ERRORS)
async def list_models(request: Request, user: ApiKeyUser) -> dict[str, Any]:
    """The models that can answer now (OpenAI's model list shape)."""
    return {"object": "list", "data": await _model_objects(request)}


@router.get("/models/{model_id:path}", response_model=ModelObject, responses=_ERRORS)
async def get_model(model_id: str, request: Request, user: ApiKeyUser) -> dict[str, Any]:
    """One model."""
    for model in await _model_objects(request):
        if model["id"] == model_id:
            return model
    raise NotFound(f"The model {model_id!r} does not exist: see GET /v1/models.", param="model", code="model_not_found")


__all__ = ["ChatCompletionRequest", "ChatCompletionsRoute", "complete", "router"]
