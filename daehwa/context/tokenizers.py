"""Exact tokenizers: the embedded model's own vocabulary, and OpenAI's BPE offline.

Both cache counts (the same messages are counted on every turn of a conversation).
"""

from __future__ import annotations

import functools
import logging
import threading
import warnings
from collections.abc import Callable, Mapping, Sequence
from typing import Any, Protocol

from ..types import ChatMessage

log = logging.getLogger(__name__)

#: What to install for exact OpenAI counts.
TOKENS_HINT = "pip install 'daehwa[tokens]' (bpe-openai)"


class TemplateEngine(Protocol):
    """What ``LocalTokenizer`` needs of the embedded model (``daehwa.providers.local.LocalEngine``)."""

    def count_tokens(self, text: str) -> int: ...

    def count_prompt(self, messages: Sequence[Mapping[str, str]]) -> int: ...

    def apply_template(self, messages: Sequence[Mapping[str, str]]) -> str: ...


class LocalTokenizer:
    """The embedded model's tokenizer, with its chat template's overhead measured once from the template itself.

    A chat template puts fixed markers around each message's text (``<|im_start|>user\\n`` ... ``<|im_end|>\\n``) and
    around the whole prompt (the reply's opening, a default system prompt some models add when none is given). Those
    are measured by rendering a few probe conversations through the model's own template and tokenizer, so
    ``count_message_tokens`` equals the ``prompt_tokens`` the model reports.
    """

    exact = True
    blocking = True  # counting is a loopback HTTP call: build contexts off the event loop

    def __init__(self, engine: TemplateEngine, *, name: str) -> None:
        self.engine = engine
        self.name = name
        self._lock = threading.Lock()
        self._overheads: dict[str, int] | None = None
        self._prefix = ""
        self._prefix_tokens = 0

    def count(self, text: str) -> int:
        if not text:
            return 0
        self._calibrate()
        return self._raw(text)

    def _calibrate(self) -> dict[str, int]:
        if self._overheads is not None:
            return self._overheads
        with self._lock:
            if self._overheads is not None:
                return self._overheads
            e = self.engine
            a, b, c, d = "Alpha.", "Bravo.", "Charlie.", "Delta."
            rendered = e.apply_template([{"role": "system", "content": a}, {"role": "user", "content": b}])
            at = rendered.find(b)
            self._prefix = rendered[at - 1] if at > 0 and rendered[at - 1].isspace() else ""
            self._prefix_tokens = e.count_tokens(self._prefix) if self._prefix else 0
            ta, tb, tc, td = (self._raw(x) for x in (a, b, c, d))

            def prompt(*pairs: tuple[str, str]) -> int:
                return e.count_prompt([{"role": r, "content": x} for r, x in pairs])

            base = prompt(("system", a), ("user", b))
            two_users = prompt(("system", a), ("user", b), ("user", d))
            full = prompt(("system", a), ("user", b), ("assistant", c), ("user", d))
            no_system = prompt(("user", b))
            user = two_users - base - td
            assistant = full - two_users - tc
            # ChatML-like templates mark system messages as they mark user ones.
            fixed = base - ta - tb - 2 * user
            default_system = no_system - tb - user - fixed
            self._overheads = {
                "user": user,
                "assistant": assistant,
                "system": user,
                "fixed": fixed,
                "default_system": max(default_system, 0),
            }
            log.debug("chat template overheads of %s: %s", self.name, self._overheads)
            return self._overheads

    def _raw(self, text: str) -> int:
        # What the template puts right before a message's text (ChatML: "\n") can merge with the text's leading
        # whitespace into one token; counting them together and taking the prefix off again is exact.
        if self._prefix:
            return self.engine.count_tokens(self._prefix + text) - self._prefix_tokens
        return self.engine.count_tokens(text)

    def message_overhead(self, role: str) -> int:
        overheads = self._calibrate()
        return overheads.get(role, overheads["user"])

    def prompt_overhead(self, messages: Sequence[ChatMessage]) -> int:
        overheads = self._calibrate()
        has_system = bool(messages) and messages[0].role == "system"
        return overheads["fixed"] + (0 if has_system else overheads["default_system"])


#: OpenAI model families and their encodings (prefix match, longest first).
OPENAI_ENCODINGS: tuple[tuple[str, str], ...] = (
    ("gpt-4o", "o200k_base"),
    ("gpt-4.1", "o200k_base"),
    ("gpt-4.5", "o200k_base"),
    ("gpt-5", "o200k_base"),
    ("chatgpt-4o", "o200k_base"),
    ("o1", "o200k_base"),
    ("o3", "o200k_base"),
    ("o4", "o200k_base"),
    ("gpt-4", "cl100k_base"),
    ("gpt-3.5", "cl100k_base"),
    ("gpt-35", "cl100k_base"),
)


def openai_encoding_name(model: str) -> str | None:
    """The BPE encoding of an OpenAI model id (``gpt-4o-mini`` -> ``o200k_base``), or None."""
    name = model.rsplit("/", 1)[-1].lower()
    for prefix, encoding in OPENAI_ENCODINGS:
        if name == prefix or name.startswith((prefix + "-", prefix + ".")):
            return encoding
    return None


@functools.cache
def _encoding(name: str) -> Any:
    with warnings.catch_warnings():
        # bpe-openai reads its bundled data with a deprecated importlib.resources call: its business, not ours.
        warnings.simplefilter("ignore", DeprecationWarning)
        import bpe_openai

        return bpe_openai.get_encoding(name)


class OpenAITokenizer:
    """OpenAI's BPE (o200k_base / cl100k_base) from ``bpe-openai``: exact, offline, ~4 µs a message.

    Chat overhead follows OpenAI's published recipe: 3 tokens per message, 3 to prime the reply.
    """

    exact = True
    blocking = False

    def __init__(self, encoding: str) -> None:
        self.name = encoding
        self._encode: Callable[[str], list[int]] = _encoding(encoding).encode_ordinary
        self._count = functools.lru_cache(maxsize=8192)(self._count_uncached)

    def _count_uncached(self, text: str) -> int:
        return len(self._encode(text))

    def count(self, text: str) -> int:
        return self._count(text) if text else 0

    def message_overhead(self, role: str) -> int:
        return 3

    def prompt_overhead(self, messages: Sequence[ChatMessage]) -> int:
        return 3


_warned: set[str] = set()


def openai_tokenizer(model: str) -> OpenAITokenizer | None:
    """The exact tokenizer of an OpenAI-family model, or None (not OpenAI's, or ``bpe-openai`` not installed)."""
    encoding = openai_encoding_name(model)
    if encoding is None:
        return None
    try:
        return OpenAITokenizer(encoding)
    except ImportError:
        if encoding not in _warned:
            _warned.add(encoding)
            log.warning("token counts for %s are estimates: %s for exact ones", model, TOKENS_HINT)
        return None
