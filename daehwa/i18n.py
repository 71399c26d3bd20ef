"""The few sentences the service itself says to users, in Korean and English, and how every ko/en table is kept.

A table of sentences is a TOML file shipped next to the code that says them (``messages.toml`` here, the Streamlit
app's ``texts.toml``, the Django room's ``messages.toml``, the form machine's ``forms.toml``, ...): one ``[key]``
table per sentence with a ``ko`` and an ``en`` string, ``{...}`` fields filled in by ``str.format``. The sentences are
data, apart from the code; ``load_texts`` reads one and ``pick`` looks a sentence up in the request's language.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from importlib.resources import files

from .errors import ConfigError

SUPPORTED_LOCALES = ("ko", "en")


def normalize_locale(locale: str | None) -> str:
    """``"ko-KR,ko;q=0.9,en;q=0.8"`` -> ``"ko"``; anything unknown -> ``"ko"`` (the service's home language)."""
    if not locale:
        return "ko"
    for part in locale.split(","):
        lang = part.split(";")[0].strip().lower()[:2]
        if lang in SUPPORTED_LOCALES:
            return lang
    return "ko"


def load_texts(package: str, resource: str) -> dict[str, dict[str, str]]:
    """The sentences of the TOML file ``resource`` shipped in ``package``: ``{key: {"ko": ..., "en": ...}}``."""
    where = f"{package.replace('.', '/')}/{resource}"
    try:
        data = tomllib.loads((files(package) / resource).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"Cannot read the sentences in {where} ({exc}): reinstall daehwa.") from None
    for key, table in data.items():
        if not (
            isinstance(table, dict)
            and set(table) == set(SUPPORTED_LOCALES)
            and all(isinstance(text, str) for text in table.values())
        ):
            raise ConfigError(f"{where}: [{key}] must hold exactly a ko and an en string.")
    return data


#: The service's own sentences (``messages.toml``): fallback replies, moderation, quotas.
MESSAGES: dict[str, dict[str, str]] = load_texts("daehwa", "messages.toml")


def pick(sentences: Mapping[str, Mapping[str, str]], key: str, locale: str | None, **values: object) -> str:
    """``sentences[key]`` in ``locale`` (see ``normalize_locale``; English where it lacks the language), with
    ``values`` filled into its fields: the lookup of every ko/en table (this module's, the Django room's, the
    Streamlit app's)."""
    table = sentences[key]
    text = table.get(normalize_locale(locale), table["en"])
    return text.format(**values) if values else text


def t(key: str, locale: str | None = None, **values: object) -> str:
    """The sentence ``key`` in ``locale`` (see ``normalize_locale``), with ``values`` filled into its fields."""
    return pick(MESSAGES, key, locale, **values)


def format_duration(seconds: float, locale: str | None = None) -> str:
    """A wait for people, rounded up (never promising less than ``Retry-After``): "12초", "9 hours 30 minutes"."""
    whole = max(1, math.ceil(seconds))  # never "0 seconds"
    ko = normalize_locale(locale) == "ko"
    if whole < 120:
        return f"{whole}초" if ko else _plural(whole, "second")
    minutes = math.ceil(whole / 60)
    if minutes < 120:
        return f"{minutes}분" if ko else _plural(minutes, "minute")
    hours, minutes = divmod(minutes, 60)
    if ko:
        return f"{hours}시간 {minutes}분" if minutes else f"{hours}시간"
    return f"{_plural(hours, 'hour')} {_plural(minutes, 'minute')}" if minutes else _plural(hours, "hour")


def _plural(count: int, unit: str) -> str:
    return f"{count} {unit}" if count == 1 else f"{count} {unit}s"
