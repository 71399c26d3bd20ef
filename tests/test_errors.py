"""The error tree (daehwa/errors.py): each error's HTTP status and OpenAI error ``type``."""

from __future__ import annotations

import pytest

from daehwa import errors
from daehwa.context.embeddings import EmbeddingError
from daehwa.routing import FirstTokenTimeout, StreamStalled

# The OpenAI ``type`` each error answers with (/v1 error bodies, SSE and WebSocket error events).
TYPES: dict[type[errors.DaehwaError], tuple[int, str]] = {
    errors.DaehwaError: (500, "server_error"),
    errors.ConfigError: (500, "server_error"),
    errors.InvalidRequest: (400, "invalid_request_error"),
    errors.UnsupportedParameter: (400, "invalid_request_error"),
    errors.AuthenticationError: (401, "authentication_error"),
    errors.PermissionDenied: (403, "permission_error"),
    errors.NotFound: (404, "invalid_request_error"),
    errors.Conflict: (409, "invalid_request_error"),
    errors.ContentBlocked: (422, "invalid_request_error"),
    errors.RateLimited: (429, "rate_limit_error"),
    errors.ModelNotFound: (404, "invalid_request_error"),
    errors.ModelUnavailable: (503, "server_error"),
    errors.ProviderBusy: (503, "server_error"),
    errors.ProviderError: (502, "server_error"),
    errors.ProviderTimeout: (504, "server_error"),
    errors.StoreUnavailable: (503, "server_error"),
    FirstTokenTimeout: (504, "server_error"),
    StreamStalled: (504, "server_error"),
    EmbeddingError: (503, "server_error"),
}


@pytest.mark.parametrize("cls", list(TYPES), ids=lambda cls: cls.__name__)
def test_each_error_has_the_status_and_openai_type_of_its_kind(cls: type[errors.DaehwaError]) -> None:
    error = cls("went wrong", retry_after=1.0) if cls is errors.RateLimited else cls("went wrong")
    body = error.to_openai()["error"]
    assert (error.status, body["type"]) == TYPES[cls]
    assert body["message"] == "went wrong" and body["code"] == error.code
