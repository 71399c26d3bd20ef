"""What counts as storable text: no NUL (U+0000) and no lone surrogate (U+D800..U+DFFF).

Both arrive only through escapes (``"\\u0000"``, ``"\\ud800"`` in JSON), never as raw UTF-8, and no store keeps them
the same way: PostgreSQL refuses NUL, SQLite and PostgreSQL cannot encode a lone surrogate to UTF-8, Redis keeps it
escaped. So input holding one is refused (400 ``invalid_text``) before anything is stored, and model output has them
dropped. A surrogate *pair* in JSON (``"\\ud83d\\ude00"``) decodes to one character and is fine.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidRequest

_SURROGATE = re.compile("[\ud800-\udfff]")
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def invalid_char(text: str) -> str | None:
    """A description of the first character of ``text`` that cannot be stored, or None when all can."""
    found = _UNSTORABLE.search(text)
    if found is None:
        return None
    char = found.group()
    if char == "\x00":
        return "a NUL character (U+0000)"
    return f"a lone surrogate (U+{ord(char):04X}, half of a UTF-16 pair)"


def check_text(param: str, text: str | None) -> None:
    """Raise ``InvalidRequest`` (code ``invalid_text``) when ``text`` holds a character no store can keep."""
    if text is None:
        return
    what = invalid_char(text)
    if what is not None:
        raise InvalidRequest(
            f"The {param} contains {what}, which cannot be stored: remove it.", param=param, code="invalid_text"
        )


def find_invalid(value: Any, path: str = "") -> tuple[str, str] | None:
    """(path, description) of the first unstorable character in a decoded JSON value (keys included), or None."""
    if isinstance(value, str):
        what = invalid_char(value)
        return (path or "body", what) if what is not None else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            here = f"{path}.{key}" if path else str(key)
            what = invalid_char(str(key))
            if what is not None:
                return here, what
            found = find_invalid(item, here)
            if found is not None:
                return found
    elif isinstance(value, list):
        for i, item in enumerate(value):
            found = find_invalid(item, f"{path}.{i}" if path else str(i))
            if found is not None:
                return found
    return None


def check_json(value: Any) -> None:
    """``check_text`` for every string of a decoded JSON value (keys too).

    ``param`` is the top-level field (``messages``), as the pipeline names it; the message gives the whole path.
    """
    found = find_invalid(value)
    if found is not None:
        path, what = found
        raise InvalidRequest(
            f"The field {path} contains {what}, which cannot be stored: remove it.",
            param=path.split(".", 1)[0],
            code="invalid_text",
        )


def drop_unstorable(text: str) -> str:
    """``text`` without NUL characters and lone surrogates (for model output, which we cannot send back)."""
    return _UNSTORABLE.sub("", text) if _UNSTORABLE.search(text) else text


def may_hold_escapes(body: bytes) -> bool:
    """Cheap pre-check on a raw JSON body: only ``\\u0000`` or ``\\uD8xx..\\uDFxx`` escapes can carry such a char."""
    return b"\\u" in body and _ESCAPE.search(body) is not None


_ESCAPE = re.compile(rb"\\u(?:0000|[dD][89a-fA-F][0-9a-fA-F]{2})")
