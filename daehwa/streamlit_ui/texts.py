"""What the Streamlit app says, in Korean and English (the server's own messages come localised from the server)."""

from __future__ import annotations

from ..i18n import load_texts, pick

LANGUAGES = {"ko": "한국어", "en": "English"}

TEXTS: dict[str, dict[str, str]] = load_texts("daehwa.streamlit_ui", "texts.toml")


def text(key: str, language: str, **values: object) -> str:
    """The sentence ``key`` in ``language`` (Korean when the language is unknown), with ``values`` filled in."""
    return pick(TEXTS, key, language, **values)
