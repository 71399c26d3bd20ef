"""Plain ASGI middleware (no BaseHTTPMiddleware: it would buffer streams and add a task per request).

- ``RequestIdMiddleware``: takes a sane ``X-Request-ID`` or makes one, exposes it as ``request.state.request_id`` and
  returns it on every response.
- ``BodyLimitMiddleware``: refuses bodies over ``DAEHWA_MAX_REQUEST_BYTES`` with 413 before the app reads them, a
  NUL character in the URL's path or query with 400, and a JSON body whose strings hold a NUL or a lone surrogate
  (``daehwa.text``) with 400 ``invalid_text``, whatever the route and the store.
- ``SecretRedactingFilter``: server logs print request paths, and two paths carry secrets in the query string
  (``/api/ws?api_key=``, ``/auth/magic?token=``); the filter blanks them in uvicorn's log lines.
"""

from __future__ import annotations

import json
import logging
import re
import uuid
from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import InvalidRequest
from ..logs import bind_request_id
from ..text import check_json, may_hold_escapes

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_SECRET_QUERY = re.compile(r"((?:api_key|token|access_token|key)=)[^&\s\"']+", re.IGNORECASE)
REDACTED_LOGGERS = ("uvicorn.access", "uvicorn.error")


class RequestIdMiddleware:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)
            return
        rid = assign_request_id(scope)
        with bind_request_id(rid):  # every log line of this request (router, pipeline) carries its id
            if scope["type"] == "websocket":
                await self.app(scope, receive, send)
                return
            header = (b"x-request-id", rid.encode())

            async def send_with_id(message: Message) -> None:
                if message["type"] == "http.response.start":
                    message["headers"] = [*message.get("headers", ()), header]
                await send(message)

            await self.app(scope, receive, send_with_id)


def assign_request_id(scope: Scope) -> str:
    """The request's id: a sane ``X-Request-ID`` it brought, or a new one; kept as ``request.state.request_id``."""
    given = None
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            given = value.decode("latin-1")
            break
    rid = given if given and _REQUEST_ID.match(given) else uuid.uuid4().hex
    scope.setdefault("state", {})["request_id"] = rid
    return rid


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope.get("query_string", b""):
            # No id, title or cursor holds one, and PostgreSQL cannot even look one up: refuse it here, for every store.
            await self._reject(send, 400, "The URL contains a NUL character (%00): remove it.", "invalid_text")
            return
        length = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                try:
                    length = int(value)
                except ValueError:
                    length = None
                break
        if length is not None and length > self.max_bytes:
            await self._too_large(send)
            return
        if length is not None and not _is_json(scope):
            await self.app(scope, receive, send)
            return
        # A JSON body, or one without Content-Length (chunked): read it (up to the limit), check it, replay it.
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, _replay([], message, receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._too_large(send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        if may_hold_escapes(body):  # rare: only then is the body decoded here (the app decodes it again)
            try:
                check_json(json.loads(body))
            except InvalidRequest as exc:
                await self._reject(send, 400, exc.message, "invalid_text", param=exc.param)
                return
            except ValueError:
                pass  # not JSON: the app answers that
        await self.app(scope, _replay([body], None, receive), send)

    async def _too_large(self, send: Send) -> None:
        message = f"The request body is larger than {self.max_bytes} bytes (DAEHWA_MAX_REQUEST_BYTES)."
        await self._reject(send, 413, message, "request_too_large")

    @staticmethod
    async def _reject(send: Send, status: int, message: str, code: str, *, param: str | None = None) -> None:
        body = json.dumps(
            {"error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}}
        ).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())],
            }
        )
        await send({"type": "http.response.body", "body": body})


def _is_json(scope: Scope) -> bool:
    """Whether the app will decode the body as JSON (FastAPI also does so when there is no Content-Type)."""
    for name, value in scope.get("headers", ()):
        if name == b"content-type":
            return b"json" in value.lower()
    return True


def _replay(chunks: list[bytes], first: Message | None, receive: Receive) -> Receive:
    pending: list[Message] = [{"type": "http.request", "body": b"".join(chunks), "more_body": False}]
    if first is not None:
        pending = [first]

    async def replay() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replay


def redact(text: str) -> str:
    if "=" not in text:  # every match has one; most log arguments (addresses, methods, plain paths) have none
        return text
    return _SECRET_QUERY.sub(r"\1[redacted]", text)


class SecretRedactingFilter(logging.Filter):
    """Blanks ``api_key=`` / ``token=`` query values in log records (uvicorn logs paths with their query)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.args, tuple) and record.args:
            record.args = tuple(redact(a) if isinstance(a, str) else a for a in record.args)
        elif isinstance(record.msg, str):
            record.msg = redact(record.msg)
        return True


def install_log_redaction() -> tuple[SecretRedactingFilter, list[logging.Logger]]:
    flt = SecretRedactingFilter()
    loggers = [logging.getLogger(name) for name in REDACTED_LOGGERS]
    for logger in loggers:
        logger.addFilter(flt)
    return flt, loggers


def remove_log_redaction(installed: tuple[SecretRedactingFilter, list[logging.Logger]] | Any) -> None:
    flt, loggers = installed
    for logger in loggers:
        logger.removeFilter(flt)
