"""One error tree for the whole service. Each error knows its HTTP status and says how to fix what went wrong.

    DaehwaError (500)
    ├── ConfigError (500)              a setting or file is wrong; the message names the setting
    ├── InvalidRequest (400)           bad input from the caller; ``param`` names the field
    │   └── UnsupportedParameter (400) a Chat Completions parameter the provider cannot honour
    ├── AuthenticationError (401)      missing, invalid or revoked credentials
    ├── PermissionDenied (403)         authenticated, but not allowed (e.g. admin-only, CSRF)
    ├── NotFound (404)                 no such thing, or it belongs to someone else
    ├── Conflict (409)                 e.g. a user name that is taken
    ├── ContentBlocked (422)           moderation refused the message
    ├── RateLimited (429)              a per-user quota; carries ``retry_after`` seconds
    ├── ModelNotFound (404)            no such model or provider
    ├── ModelUnavailable (503)         the model exists but cannot run now (missing files, no key, breaker open)
    │   └── ProviderBusy (503)         too many concurrent requests to one provider
    └── ProviderError (502)            the upstream failed; ``retryable`` tells the retry layer what to do
        └── ProviderTimeout (504)

A subclass gives its status and code in its header (``class NotFound(DaehwaError, status=404, code="not_found")``);
its OpenAI error ``type`` follows from the status. Errors are translated to HTTP, OpenAI JSON or CLI output only at
the edge (``daehwa.api`` and ``daehwa.cli``).
"""

from __future__ import annotations

from typing import Any

#: OpenAI's error ``type`` of the 4xx statuses that are not an ``invalid_request_error``.
_CLIENT_ERROR_TYPES = {401: "authentication_error", 403: "permission_error", 429: "rate_limit_error"}


class DaehwaError(Exception):
    """Base of every error the service raises on purpose."""

    status: int = 500
    code: str = "internal_error"  # stable machine-readable code

    def __init_subclass__(cls, *, status: int | None = None, code: str | None = None, **kwargs: Any) -> None:
        """A subclass names its status and code in its header: ``class NotFound(DaehwaError, status=404, ...)``."""
        super().__init_subclass__(**kwargs)
        if status is not None:
            cls.status = status
        if code is not None:
            cls.code = code

    def __init__(self, message: str, *, param: str | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        if code is not None:
            self.code = code

    @property
    def type(self) -> str:
        """OpenAI's error ``type``, which follows from the status."""
        if self.status >= 500:
            return "server_error"
        return _CLIENT_ERROR_TYPES.get(self.status, "invalid_request_error")

    def to_openai(self) -> dict[str, dict[str, str | None]]:
        """OpenAI's error body: ``{"error": {"message", "type", "param", "code"}}``."""
        return {"error": {"message": self.message, "type": self.type, "param": self.param, "code": self.code}}


class ConfigError(DaehwaError, code="config_error"): ...


class InvalidRequest(DaehwaError, status=400, code="invalid_request"): ...


class UnsupportedParameter(InvalidRequest, code="unsupported_parameter"): ...


class AuthenticationError(DaehwaError, status=401, code="invalid_api_key"): ...


class PermissionDenied(DaehwaError, status=403, code="permission_denied"): ...


class NotFound(DaehwaError, status=404, code="not_found"): ...


class Conflict(DaehwaError, status=409, code="conflict"): ...


class ContentBlocked(DaehwaError, status=422, code="content_blocked"): ...


class RateLimited(DaehwaError, status=429, code="rate_limit_exceeded"):
    def __init__(self, message: str, *, retry_after: float, code: str | None = None) -> None:
        super().__init__(message, code=code)
        self.retry_after = retry_after


class ModelNotFound(DaehwaError, status=404, code="model_not_found"):
    def __init__(self, message: str, *, param: str | None = "model", code: str | None = None) -> None:
        super().__init__(message, param=param, code=code)


class ModelUnavailable(DaehwaError, status=503, code="model_unavailable"): ...


class ProviderBusy(ModelUnavailable, code="provider_busy"): ...


class ProviderError(DaehwaError, status=502, code="upstream_error"):
    """The upstream model failed. ``retryable`` is true for connection errors, 429 and 5xx."""

    def __init__(
        self,
        message: str,
        *,
        retryable: bool = False,
        retry_after: float | None = None,
        upstream_status: int | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, code=code)
        self.retryable = retryable
        self.retry_after = retry_after
        self.upstream_status = upstream_status


class ProviderTimeout(ProviderError, status=504, code="upstream_timeout"):
    def __init__(self, message: str, *, retryable: bool = True) -> None:
        super().__init__(message, retryable=retryable)


class StoreUnavailable(DaehwaError, status=503, code="store_unavailable"):
    """The conversation store (Redis, PostgreSQL) cannot be reached; ``code`` names it: ``redis_unavailable``..."""

    retry_after: float | None = 1.0
