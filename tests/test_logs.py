"""The log redactor's fast path (patterns run only where their key words start a word) masks exactly what a full scan
masks: a secret must never slip through an optimisation."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from daehwa.logs import MASK, SECRET_PATTERNS, Redactor


def full_scan(text: str) -> str:
    for pattern in SECRET_PATTERNS:
        text = pattern.sub(lambda m: (m.group(1) if m.groups() else "") + MASK, text)
    return text


PIECES = st.sampled_from(
    [
        "sk-",
        "sk-abcdefgh1234",
        "Bearer ",
        "bearer\t",
        "BEARER  ",
        "token=",
        "Token: ",
        "api_key=",
        "apikey:",
        "access_token='",
        'password = "',
        "x",
        "_",
        "-",
        " ",
        "=",
        ":",
        "&",
        "/",
        "abcdefghijk",
        "0123456789",
        "?",
        '"',
        "'",
        ",",
        "}",
        "é",
        "İ",
        "ı",
        "K",
        "토큰=",
        "\n",
    ]
)


@settings(max_examples=600, deadline=None)
@given(st.lists(PIECES, max_size=14).map("".join))
def test_fast_path_masks_exactly_what_a_full_scan_masks(text: str) -> None:
    assert Redactor()(text) == full_scan(text)


def test_known_secret_values_are_masked_wherever_they_stand() -> None:
    redact = Redactor(["dh-verysecretkey123"])
    assert redact("GET /api/ws?api_key=dh-verysecretkey123 HTTP/1.1") == f"GET /api/ws?api_key={MASK} HTTP/1.1"
    assert redact("key dh-verysecretkey123 here") == f"key {MASK} here"
    assert redact("Authorization: Bearer abcdefghijkl") == f"Authorization: Bearer {MASK}"
