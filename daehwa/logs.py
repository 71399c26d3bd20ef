"""Structured logs: one JSON object per line, with the request id, and no secrets or conversation text by default.

    configure_logging(settings)            # once, at process start (``daehwa serve``)
    with bind_request_id("r-123"): ...     # every log line inside carries "request_id": "r-123"
    log.info("turn finished", extra={"model": "local", "outcome": "ok"})   # extra fields become JSON keys

Message text stays out of the logs unless ``DAEHWA_LOG_MESSAGE_TEXT`` is on: fields named like text (``content``,
``text``, ``messages``, ...) are dropped from every record. Secrets are masked wherever they appear in a line: the
configured API keys by value, and anything shaped like a key (``sk-...``, ``Bearer ...``, ``api_key=...``).
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
import sys
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from typing import IO, TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .config import Settings

request_id_var: ContextVar[str | None] = ContextVar("daehwa_request_id", default=None)

#: Record fields that would carry what users wrote or models answered.
TEXT_FIELDS = frozenset({"content", "text", "messages", "prompt", "reply", "delta", "body", "system"})
#: Key-shaped strings, masked even when we do not know the key's value.
SECRET_PATTERNS = (
    re.compile(r"\bsk-[A-Za-z0-9_\-]{8,}"),
    re.compile(r"(?i)\b(bearer\s+)[A-Za-z0-9._\-~+/=]{8,}"),
    re.compile(r"(?i)\b((?:api_key|apikey|token|access_token|password)[\"']?\s*[=:]\s*[\"']?)[^\s&\"',}]+"),
)
MASK = "[redacted]"
#: For each of SECRET_PATTERNS: whether it is case-sensitive, and the words a match starts with, right after a word
#: boundary (``\b``). An ASCII line where none of them starts a word cannot match and skips the regex: a scan costs
#: 15-30 µs per line, looking for the words about 1 µs, and most lines hold no secret.
_PATTERN_WORDS = (
    (True, ("sk-",)),
    (False, ("bearer",)),
    (False, ("api_key", "apikey", "token", "access_token", "password")),
)

# Attributes every LogRecord has; anything else on a record came from ``extra=``.
_STANDARD = frozenset(vars(logging.LogRecord("x", logging.INFO, "x", 0, "x", None, None))) | {"message", "asctime"}
_PLAIN = (str, int, float, bool, type(None))


@contextlib.contextmanager
def bind_request_id(request_id: str | None) -> Iterator[None]:
    """Tag every log line written inside (in this task and tasks it starts) with ``request_id``."""
    token = request_id_var.set(request_id)
    try:
        yield
    finally:
        request_id_var.reset(token)


class Redactor:
    """Masks known secret values and key-shaped strings in text."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        # Longest first, so a key that contains another is masked whole; very short values would mask noise.
        self.secrets = sorted({s for s in secrets if s and len(s) >= 6}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        for secret in self.secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        if not text.isascii():  # re.IGNORECASE matches a few non-ASCII letters to ASCII ones: scan in full
            for pattern in SECRET_PATTERNS:
                text = pattern.sub(_mask_match, text)
            return text
        lowered = text.lower()
        for pattern, (case_sensitive, words) in zip(SECRET_PATTERNS, _PATTERN_WORDS, strict=True):
            probe = text if case_sensitive else lowered
            for word in words:
                if word in probe and _starts_word(probe, word):
                    masked = pattern.sub(_mask_match, text)
                    if masked != text:
                        text, lowered = masked, masked.lower()
                    break
        return text


def _starts_word(text: str, word: str) -> bool:
    """Whether ``word`` (starting with a letter) occurs in the ASCII ``text`` right after a word boundary."""
    at = text.find(word)
    while at != -1:
        if at == 0 or not (text[at - 1].isalnum() or text[at - 1] == "_"):
            return True
        at = text.find(word, at + 1)
    return False


def _mask_match(match: re.Match[str]) -> str:
    return (match.group(1) if match.groups() else "") + MASK


class JsonFormatter(logging.Formatter):
    """One JSON object per record: ts, level, logger, message, request_id, then the ``extra`` fields."""

    def __init__(self, *, include_text: bool = False, redactor: Redactor | None = None) -> None:
        super().__init__()
        self.include_text = include_text
        self.redact = redactor or Redactor()
        # Record attributes that never become keys of their own (one set lookup per attribute), without and with text.
        self._skip = (_STANDARD | {"request_id"} | TEXT_FIELDS, _STANDARD | {"request_id"})
        self._encode = json.JSONEncoder(ensure_ascii=False, default=str).encode  # json.dumps(...) without the setup

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None) or request_id_var.get()
        if request_id:
            data["request_id"] = request_id
        skip = self._skip[self.include_text]
        for key, value in record.__dict__.items():
            if key in skip or key.startswith("_"):
                continue
            data[key] = value if isinstance(value, _PLAIN) else _jsonable(value)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        return self.redact(self._encode(data))


def _jsonable(value: Any) -> Any:
    try:
        json.dumps(value)
    except (TypeError, ValueError):
        return repr(value)
    return value


def settings_secrets(settings: Settings) -> list[str]:
    """Secret values the settings know of: every SecretStr field and the API keys providers read from the env."""
    from pydantic import SecretStr

    found = []
    for name in type(settings).model_fields:
        value = getattr(settings, name, None)
        if isinstance(value, SecretStr):
            found.append(value.get_secret_value())
    for env in ("OPENAI_API_KEY", "DAEHWA_OPENAI_API_KEY"):
        secret = settings.secret(env)
        if secret is not None:
            found.append(secret.get_secret_value())
    return found


def configure_logging(
    settings: Settings, *, stream: IO[str] | None = None, extra_secrets: Iterable[str] = ()
) -> logging.Handler:
    """Send every log record to ``stream`` (stderr) as JSON lines at ``DAEHWA_LOG_LEVEL``; returns the handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        JsonFormatter(
            include_text=settings.log_message_text,
            redactor=Redactor([*settings_secrets(settings), *extra_secrets]),
        )
    )
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_daehwa", False):
            root.removeHandler(old)
    handler._daehwa = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    # The JSON line never shows the caller's file and line, thread or process: logging need not work them out for
    # every record (its documented optimisations; about a fifth of a record's cost, benchmarks/README.md).
    logging.logThreads = logging.logProcesses = logging.logMultiprocessing = False
    logging._srcfile = None
    root.setLevel(settings.log_level.upper())
    # uvicorn's loggers keep their own handlers unless told to propagate; route them through ours.
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers.clear()
        logger.propagate = True
    # The HTTP clients' "HTTP Request: POST ... 200" line per upstream call says again what the turn's own line says
    # (model, outcome, timings) and cost a tenth of a /v1 request's CPU: only at debug. Their warnings still show.
    quiet = logging.DEBUG if root.level <= logging.DEBUG else logging.WARNING
    for name in QUIET_LIBRARY_LOGGERS:
        logging.getLogger(name).setLevel(quiet)
    return handler


#: Libraries that log every request they send at info (the upstream calls); kept to warnings unless at debug.
QUIET_LIBRARY_LOGGERS = ("httpx", "httpx2", "httpcore", "httpcore2")
