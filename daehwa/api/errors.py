"""The edge where errors become HTTP: every error, on every route, is OpenAI's ``{"error": {...}}`` body.

Validation problems are 400 (not FastAPI's 422) with ``param`` naming the field, unknown routes 404, and anything
unexpected a 500 that names the request id to look for in the logs (the traceback goes to the log, not the client).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ..errors import DaehwaError, RateLimited
from ..stores.outage import outage_exception_types, store_outage
from ..types import PARAM_BOUNDS, bound_message

log = logging.getLogger("daehwa.api")


def error_body(message: str, type_: str, code: str | None, param: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": type_, "param": param, "code": code}}


def retry_after_seconds(exc: BaseException) -> int | None:
    """Whole seconds for a ``Retry-After`` header, for errors that carry a wait."""
    wait = getattr(exc, "retry_after", None)
    if isinstance(exc, RateLimited) or wait is not None:
        return max(1, math.ceil(wait or 1))
    return None


def error_response(exc: DaehwaError) -> JSONResponse:
    headers = {}
    retry = retry_after_seconds(exc)
    if retry is not None:
        headers["Retry-After"] = str(retry)
    return JSONResponse(exc.to_openai(), status_code=exc.status, headers=headers)


def validation_message(errors: Sequence[Any]) -> tuple[str, str | None, str]:
    """(message, param, code) for the first of pydantic's errors, phrased for a person."""
    if not errors:
        return "The request is not valid.", None, "invalid_request"
    first = errors[0]
    loc = [
        str(part)
        for part in first.get("loc", ())
        if part not in ("body", "query", "path", "header") and not _is_union_tag(part)
    ]
    param = ".".join(loc) or None
    kind = first.get("type", "")
    if kind == "json_invalid":
        detail = first.get("ctx", {}).get("error", "")
        return f"The request body is not valid JSON ({detail}): send a JSON object.", None, "invalid_json"
    if kind == "missing" and not loc:
        return "The request needs a JSON body.", None, "invalid_request"
    if (
        param is not None and param in PARAM_BOUNDS
    ):  # every numeric parameter's error names its bound, the same on every route
        more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
        return bound_message(param, first.get("input")) + more, param, "invalid_request"
    message = first.get("msg", "invalid value")
    more = f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})" if len(errors) > 1 else ""
    where = f"{param}: " if param else ""
    return f"{where}{message}{more}", param, "invalid_request"


_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "dict", "list", "none", "null"})


def _is_union_tag(part: object) -> bool:
    """pydantic names the union member in an error's location (``content.str``); a person wants ``content``."""
    return isinstance(part, str) and (part in _TYPE_TAGS or "[" in part or part[:1].isupper())


_STATUS_CODES = {
    401: ("authentication_error", "not_authenticated"),
    403: ("permission_error", "permission_denied"),
    404: ("invalid_request_error", "not_found"),
    405: ("invalid_request_error", "method_not_allowed"),
    413: ("invalid_request_error", "request_too_large"),
}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(DaehwaError)
    async def _daehwa(request: Request, exc: DaehwaError) -> JSONResponse:
        if exc.status >= 500:
            log.warning("request %s failed: %s", _request_id(request), exc.code)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        message, param, code = validation_message(exc.errors())
        return JSONResponse(error_body(message, "invalid_request_error", code, param), status_code=400)

    @app.exception_handler(HTTPException)
    async def _http(request: Request, exc: HTTPException) -> JSONResponse:
        type_, code = _STATUS_CODES.get(exc.status_code, ("invalid_request_error", "http_error"))
        if exc.status_code == 404:
            message = f"There is no route {request.method} {request.url.path}: see /openapi.json for the API."
        elif exc.status_code == 405:
            message = f"{request.method} is not allowed on {request.url.path}: see /openapi.json for the API."
        else:
            message = str(exc.detail)
        return JSONResponse(
            error_body(message, type_, code), status_code=exc.status_code, headers=getattr(exc, "headers", None)
        )

    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        if getattr(exc, "sqlstate", None) == _SQLSTATE_UNTRANSLATABLE:
            # PostgreSQL refused a NUL character in some text the pipeline does not check (a name, a rename).
            message = "The request contains a NUL character (U+0000), which cannot be stored: remove it."
            return JSONResponse(error_body(message, "invalid_request_error", "invalid_text"), status_code=400)
        if isinstance(exc, UnicodeEncodeError) and "surrogate" in exc.reason:
            # A lone surrogate in some text no check saw (the JSON bodies and the pipeline are checked): still a 400.
            message = (
                "The request contains a lone surrogate (half of a UTF-16 pair), which cannot be stored: remove it."
            )
            return JSONResponse(error_body(message, "invalid_request_error", "invalid_text"), status_code=400)
        rid = _request_id(request)
        outage = store_outage(exc)
        if outage is not None:  # Redis or PostgreSQL down or restarting: a 503 naming it, and no traceback
            log.warning("request %s failed: %s (%s)", rid, outage.code, type(exc).__name__)
            return error_response(outage)
        log.error("unexpected error in request %s", rid, exc_info=exc)
        return JSONResponse(
            error_body(
                f"An internal error occurred (request id {rid}); it was logged. Please report it if it persists.",
                "server_error",
                "internal_error",
            ),
            status_code=500,
        )

    app.add_exception_handler(Exception, _unexpected)
    # Handled below ServerErrorMiddleware too (which re-raises what it handles), so an outage is answered as a
    # handled error: the connection-level exception types a store driver raises, told apart by store_outage().
    for kind in outage_exception_types():
        app.add_exception_handler(kind, _unexpected)


_SQLSTATE_UNTRANSLATABLE = "22021"  # character_not_in_repertoire: asyncpg's error for U+0000 in text


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or "-"
