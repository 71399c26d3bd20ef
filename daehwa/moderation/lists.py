"""Word list files: one word per line, an optional category after a tab, ``#`` comments.

    # category: insult        <- default category for the lines below (until the next such line)
    씨발
    병신<TAB>insult
    fuck<TAB>profanity
    미친 놈                    <- spaces inside an entry are allowed; the filter also finds "미친놈"

Files are UTF-8; a byte-order mark, Windows line endings, blank lines and duplicates are fine. Lines that cannot be
a word (very long lines, binary data, a malformed category) stop the load with an error naming the file and line.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from importlib import resources
from pathlib import Path
from typing import NamedTuple

from ..errors import ConfigError

MAX_WORD_CHARS = 100
DEFAULT_CATEGORY = "profanity"
_CATEGORY = re.compile(r"[a-z][a-z0-9_-]{0,31}")
_HEADER = re.compile(r"#\s*category\s*:\s*(\S*)\s*$", re.IGNORECASE)


class ListEntry(NamedTuple):
    """One line of a list: the word as written, its category, and where it came from (``file:line``).

    A named tuple: a 100,000-word list makes 100,000 of them, and a tuple is the cheapest immutable record.
    """

    word: str
    category: str
    source: str


def read_list(path: Path, *, default_category: str = DEFAULT_CATEGORY) -> list[ListEntry]:
    """Read one list file; raises ``ConfigError`` naming the file (and line) when it cannot be used."""
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(
            f"Word list {path} does not exist: fix the path in the filter settings or pass an existing file."
        ) from None
    except OSError as exc:
        raise ConfigError(f"Word list {path} cannot be read ({exc.strerror}): check its permissions.") from None
    if b"\x00" in raw:
        raise ConfigError(
            f"Word list {path} looks binary (it contains NUL bytes): a list is a UTF-8 text file, one word per line."
        )
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"Word list {path} is not UTF-8 (byte {exc.start}): save it as UTF-8, e.g. `iconv -f cp949 -t utf-8`."
        ) from None
    lines = text.splitlines()
    if "\t" in text or "#" in text or "\ufeff" in text:
        return list(parse_lines(lines, source=str(path), default_category=default_category))
    # Plain words only (most big lists): the same entries as parse_lines, built by C-level iterators.
    source = str(path)
    words = list(map(str.strip, lines))
    numbers: Iterable[int] = range(1, len(words) + 1)
    if "" in words:  # blank lines: drop them, keeping the line numbers of the others
        keep = list(map(bool, words))
        words, numbers = list(itertools.compress(words, keep)), list(itertools.compress(numbers, keep))
    sources = map(operator.add, itertools.repeat(source + ":"), map(str, numbers))  # no format(): a path may hold {}
    rows = zip(words, itertools.repeat(default_category), sources)
    # tuple.__new__ makes the named tuples without a Python-level __new__ call per line
    entries = list(map(tuple.__new__, itertools.repeat(ListEntry), rows))
    if words and max(map(len, words)) > MAX_WORD_CHARS:
        entry = next(e for e in entries if len(e.word) > MAX_WORD_CHARS)
        raise _too_long(entry.source, entry.word)
    return entries


def parse_lines(
    lines: Iterable[str], *, source: str = "<words>", default_category: str = DEFAULT_CATEGORY
) -> Iterator[ListEntry]:
    """Parse list lines (see the module docstring)."""
    category = default_category
    for number, line in enumerate(lines, 1):
        # A BOM may start the file or sit in the middle of files that were concatenated.
        line = line.replace("\ufeff", "").strip()
        if not line:
            continue
        if line[0] == "#":
            header = _HEADER.match(line)
            if header:
                category = _check_category(header.group(1), f"{source}:{number}")
            continue
        word, entry_category = line, category
        if "\t" in line:
            word, _, tagged = line.partition("\t")
            word = word.strip()
            entry_category = _check_category(tagged.strip(), f"{source}:{number}")
        if len(word) > MAX_WORD_CHARS:
            raise _too_long(f"{source}:{number}", word)
        if word:
            yield ListEntry(word, entry_category, f"{source}:{number}")


def _too_long(where: str, word: str) -> ConfigError:
    return ConfigError(
        f"Line {where} is {len(word)} characters long; a listed word may have at most {MAX_WORD_CHARS}. "
        "Is this a word list (one word per line, an optional tab and category)?"
    )


def _check_category(value: str, where: str) -> str:
    value = value.lower()
    if not _CATEGORY.fullmatch(value):
        raise ConfigError(
            f"Line {where} has the category {value!r}: a category is one lowercase word such as insult, sexual or "
            "hate, after a tab."
        )
    return value


def builtin_lists() -> tuple[list[Path], list[Path]]:
    """The product's own word lists and allow-lists (daehwa/moderation/data/)."""
    data = Path(str(resources.files("daehwa.moderation") / "data"))
    words = sorted(p for p in data.glob("*.txt") if not p.name.startswith("allow"))
    allow = sorted(data.glob("allow*.txt"))
    return words, allow
