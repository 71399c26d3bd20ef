"""Normalisation that undoes the usual ways of slipping a banned word past a filter, keeping every character's origin.

Two paths produce the same normalised text:

* ``fast_text(text)`` is what the filter runs on every message: C-level string operations only (ASCII through a
  byte table, other characters through a per-character cache). It keeps no offsets, so it is used to *find* lines
  worth a closer look.
* ``analyze(text)`` walks the characters in Python and keeps, for every normalised unit, the span of the original
  text it came from and the kind of gap before it. It also composes decomposed jamo (ㄱㅐ -> 개), and
  ``fold_stretches`` gives a second view with stretched syllables folded (조오오온 -> 존); ``fast_text`` leaves both
  to the trigger patterns (see ``trigger_patterns``).

What is folded: Unicode NFKC, case, accents on Latin letters, a few Cyrillic/Greek look-alikes, conjoining and
half-width jamo to compatibility jamo; spaces, punctuation, symbols, emoji and invisible characters are removed
(recorded as gaps, so the matcher can tell "시 발" from "살며시 발라"); a newline is a hard break no match crosses.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Literal, overload

# Gap kinds recorded before each unit.
GAP_NONE = 0  # letters touch
GAP_SYMBOL = 1  # punctuation, symbols, emoji or invisible characters were removed
GAP_SPACE = 2  # whitespace was removed, or the unit starts a line: a word boundary

CHO = "ㄱㄲㄴㄷㄸㄹㅁㅂㅃㅅㅆㅇㅈㅉㅊㅋㅌㅍㅎ"
JUNG = "ㅏㅐㅑㅒㅓㅔㅕㅖㅗㅘㅙㅚㅛㅜㅝㅞㅟㅠㅡㅢㅣ"
JONG = ("", *"ㄱㄲㄳㄴㄵㄶㄷㄹㄺㄻㄼㄽㄾㄿㅀㅁㅂㅄㅅㅆㅇㅈㅊㅋㅌㅍㅎ")
_CHO_INDEX = {c: i for i, c in enumerate(CHO)}
_JUNG_INDEX = {c: i for i, c in enumerate(JUNG)}
_JONG_INDEX = {c: i for i, c in enumerate(JONG) if c}
_VOWEL_PAIRS = {("ㅗ", "ㅏ"): "ㅘ", ("ㅗ", "ㅐ"): "ㅙ", ("ㅗ", "ㅣ"): "ㅚ", ("ㅜ", "ㅓ"): "ㅝ", ("ㅜ", "ㅔ"): "ㅞ",
                ("ㅜ", "ㅣ"): "ㅟ", ("ㅡ", "ㅣ"): "ㅢ"}  # fmt: skip
_FINAL_PAIRS = {("ㄱ", "ㅅ"): "ㄳ", ("ㄴ", "ㅈ"): "ㄵ", ("ㄴ", "ㅎ"): "ㄶ", ("ㄹ", "ㄱ"): "ㄺ", ("ㄹ", "ㅁ"): "ㄻ",
                ("ㄹ", "ㅂ"): "ㄼ", ("ㄹ", "ㅅ"): "ㄽ", ("ㄹ", "ㅌ"): "ㄾ", ("ㄹ", "ㅍ"): "ㄿ", ("ㄹ", "ㅎ"): "ㅀ",
                ("ㅂ", "ㅅ"): "ㅄ"}  # fmt: skip
# Latin letters and digits people type for the vowel ㅣ right after a lone consonant (ㅅl발, ㅆ1발).
_VOWEL_LOOKALIKES = {"l": "ㅣ", "1": "ㅣ", "i": "ㅣ"}
_O = _CHO_INDEX["ㅇ"]
_SYLLABLE_BASE, _SYLLABLE_LAST = 0xAC00, 0xD7A3

# Look-alikes NFKC leaves alone. Cyrillic and Greek letters that look Latin; 十 reads 십.
_LOOKALIKES = dict(zip("аеорсухіјѕԁɡкмтнвαορικντυεχ", "aeopcyxijsdgkmthbaopikvtuex", strict=True)) | {"十": "십"}
# Characters Korean writers use as punctuation although Unicode calls them letters (ㆍ is the old vowel arae-a).
_SYMBOL_LETTERS = frozenset("ㆍᆞ\u119e\u318d")
# The compatibility jamo NFKC turns into conjoining jamo; we keep the compatibility form people type.
_JAMO_TO_COMPAT = (
    {chr(0x1100 + i): c for i, c in enumerate(CHO)}
    | {chr(0x1161 + i): c for i, c in enumerate(JUNG)}
    | {chr(0x11A8 + i): c for i, c in enumerate(JONG[1:])}
)


def _canon_uncached(char: str) -> str:
    """One character's normal form: letters, "" for a symbol, " " for whitespace, "\\n" for a newline."""
    if char == "\n":
        return "\n"
    if char.isspace():
        return " "
    if _SYLLABLE_BASE <= ord(char) <= _SYLLABLE_LAST:
        return char
    if char in _SYMBOL_LETTERS:
        return ""
    out = []
    for part in unicodedata.normalize("NFKC", char):
        part = _JAMO_TO_COMPAT.get(part, part).lower()
        for piece in part:
            if not ("ㄱ" <= piece <= "ㅣ" or _SYLLABLE_BASE <= ord(piece) <= _SYLLABLE_LAST):
                # Strip accents (fück -> fuck); NFD is safe here because Hangul syllables were handled above.
                piece = "".join(p for p in unicodedata.normalize("NFD", piece) if not unicodedata.combining(p))
            for p in piece:
                p = _LOOKALIKES.get(p, p)
                if p.isspace():
                    continue  # NFKC of e.g. U+3000 is handled by isspace above; spaces inside expansions are noise
                if unicodedata.category(p)[0] in "PSCZM" or p in _SYMBOL_LETTERS:
                    continue
                out.append(p)
    return "".join(out)


class _CanonTable(dict[int, str]):
    """``str.translate``-style cache: code point -> normal form, filled on first sight of each character."""

    def __missing__(self, key: int) -> str:
        value = _canon_uncached(chr(key))
        self[key] = value
        return value


@cache
def _tables() -> tuple[_CanonTable, bytes, bytes, re.Pattern[str]]:
    """The per-character cache, the ASCII byte table and deletions for ``bytes.translate``, the non-fast regex."""
    table = _CanonTable()
    ascii_map = bytearray(range(256))
    delete = bytearray()
    for code in range(128):
        value = table[code]
        if value in ("", " "):
            delete.append(code)
        else:
            ascii_map[code] = ord(value)
    # Everything except ASCII, Hangul syllables and compatibility jamo needs the per-character cache. Those three are
    # their own normal form (ASCII via the byte table), which is what keeps the common path in C.
    other = re.compile("[^\x00-\x7f\u3131-\u3163\uac00-\ud7a3]")
    return table, bytes(ascii_map), bytes(delete), other


def canon_char(char: str) -> str:
    """The normal form of one character (see ``_canon_uncached``)."""
    return _tables()[0][ord(char)]


def fast_text(text: str) -> str:
    """The normalised text without offsets, composition or stretch folding; newlines are kept as hard breaks."""
    table, ascii_map, delete, other = _tables()
    if other.search(text) is not None:
        text = other.sub(lambda m: table[ord(m.group())].strip(" "), text)
    text = text.encode("utf-8").translate(ascii_map, delete).decode("utf-8")
    return _LEET_RUN.sub(_unleet, text) if _DIGIT.search(text) else text


# Digits between Latin letters read as letters (sh1t, f4g, b1tch): a one-to-one change, so offsets stay put. The run
# is matched with the letter before it (a look-behind at every position costs more than the whole byte pass).
_DIGIT = re.compile("[0-9]")
_LEET_RUN = re.compile("[a-z][013457]+(?=[a-z])")
_LEET = str.maketrans("013457", "oieast")


def _unleet(match: re.Match[str]) -> str:
    run = match.group()
    return run[0] + run[1:].translate(_LEET)


def fast_units(text: str) -> tuple[str, bytes] | None:
    """``fast_text(text)`` and one byte per character of ``text``: 1 if it became a letter there, 0 if removed.

    The flags let ``Offsets`` map letters back to the text with C-level counting. None when some character's normal
    form is several letters (ﬁ, ㈜); callers then use ``analyze``.
    """
    table, ascii_map, delete, other = _tables()
    expanded = False

    def one(match: re.Match[str]) -> str:
        nonlocal expanded
        value = table[ord(match.group())]
        if len(value) > 1:
            expanded = True
        return value or "\x01"  # a removed symbol stays one (deleted) character: offsets keep their place

    # One pass either way: without such characters ``sub`` costs what ``search`` would.
    text = other.sub(one, text)
    if expanded:
        return None
    raw = text.encode("utf-8")
    norm = raw.translate(ascii_map, delete).decode("utf-8")
    if _LEET_RUN.search(norm):
        norm = _LEET_RUN.sub(_unleet, norm)
    flags, continuation = _flag_table()
    return norm, raw.translate(flags, continuation)


@cache
def _flag_table() -> tuple[bytes, bytes]:
    """``bytes.translate`` arguments turning UTF-8 into one byte per character: 1 kept, 0 removed (ASCII only)."""
    delete = _tables()[2]
    flags = bytearray(b"\x01" * 256)
    for code in delete:
        flags[code] = 0
    return bytes(flags), bytes(range(0x80, 0xC0))


class Offsets:
    """Where letter ``k`` of a text's fast form lies in the text, from the flags of ``fast_units``.

    A cursor moves with C-level ``bytes.count`` over the flags. A forward jump of ``d`` letters is stretched by the
    text's share of removed characters (spaces, mostly), so it usually lands within a character or two; what is left
    is closed with exact steps back. Building the whole map instead would cost a Python step per character, and most
    texts need a handful of lookups.
    """

    __slots__ = ("_k", "_p", "_stretch", "flags")

    def __init__(self, flags: bytes, letters: int) -> None:
        self.flags = flags
        self._k = 0  # letters in flags[:_p]; flags[_p] is letter _k
        self._p = flags.find(1)
        self._stretch = (len(flags) - letters) / max(letters, 1)  # removed characters per letter

    def original(self, k: int) -> int:
        """The character offset of letter ``k`` (0-based) of the fast text."""
        kc = self._k
        if kc == k:
            return self._p
        flags, p = self.flags, self._p
        while kc < k:  # forward, estimating the removed characters on the way: may overshoot
            q = min(p + (k - kc) + int((k - kc) * self._stretch), len(flags))
            kc += flags.count(1, p, q)
            p = q
        while kc > k:  # back: removing kc - k characters removes at most that many letters, so never undershoots
            q = p - (kc - k)
            kc -= flags.count(1, q, p)
            p = q
        p = flags.find(1, p)
        self._k, self._p = kc, p
        return p

    def all(self) -> list[int]:
        """The offset of every letter (C-level, for texts that need a full map)."""
        return list(itertools.compress(range(len(self.flags)), self.flags))


@dataclass(slots=True)
class Analyzed:
    """Normalised units of a text: ``text[i]`` came from ``source[starts[i]:ends[i]]``, after a gap ``gaps[i]``."""

    text: str
    starts: list[int]
    ends: list[int]
    gaps: list[int]


# Characters that are their own normal form once lowercased: most of any Korean or English text. ``analyze`` takes
# them a run at a time and looks at the characters between runs one by one.
_PLAIN_RUN = re.compile("[0-9A-Za-z\u3131-\u3163\uac00-\ud7a3]+")
_ASCII_SPACE = re.compile("[ \t\r\x0b\x0c\x1c-\x1f]")
_COMPOSABLE = re.compile("[\u3131-\u314e][\u314f-\u3163l1i]")


def analyze(source: str, offset: int = 0) -> Analyzed:
    """Normalise ``source`` keeping offsets (plus ``offset``) and composing decomposed jamo."""
    table = _tables()[0]
    pieces: list[str] = []
    starts: list[int] = []
    ends: list[int] = []
    gaps: list[int] = []
    gap = GAP_SPACE
    pos = 0

    def between(stop: int) -> None:
        nonlocal gap
        chunk = source[pos:stop]
        if chunk.isascii() and "\n" not in chunk:
            # Only separators: the usual case (" ", ". ", "!!").
            gap = GAP_SPACE if gap == GAP_SPACE or _ASCII_SPACE.search(chunk) else GAP_SYMBOL
            return
        for i, char in enumerate(chunk, offset + pos):
            value = table[ord(char)]
            if not value:
                gap = max(gap, GAP_SYMBOL)
            elif value == " ":
                gap = GAP_SPACE
            elif value == "\n":
                # A newline is kept as a unit no pattern contains, so no match spans two lines.
                pieces.append("\n")
                starts.append(i)
                ends.append(i + 1)
                gaps.append(GAP_SPACE)
                gap = GAP_SPACE
            else:
                for piece in value:
                    pieces.append(piece)
                    starts.append(i)
                    ends.append(i + 1)
                    gaps.append(gap)
                    gap = GAP_NONE

    for run in _PLAIN_RUN.finditer(source):
        begin, stop = run.span()
        if begin > pos:
            between(begin)
        pieces.append(run.group().lower())
        starts.extend(range(offset + begin, offset + stop))
        ends.extend(range(offset + begin + 1, offset + stop + 1))
        gaps.append(gap)
        gaps.extend([GAP_NONE] * (stop - begin - 1))
        gap = GAP_NONE
        pos = stop
    if pos < len(source):
        between(len(source))
    text = "".join(pieces)
    if _DIGIT.search(text):
        text = _LEET_RUN.sub(_unleet, text)
    units = Analyzed(text, starts, ends, gaps)
    return _compose(units) if _COMPOSABLE.search(units.text) else units


def normalize_word(word: str) -> tuple[str, bool]:
    """The normal form of a list entry (spaces inside it dropped), and whether it was written in decomposed jamo."""
    plain = fast_text(word.replace("\n", " "))
    if not _COMPOSABLE.search(plain):
        return plain, False
    units = analyze(plain)
    return units.text, units.text != plain


def normalize_words(words: Sequence[str]) -> list[tuple[str, bool]]:
    """``normalize_word`` for many entries at once: one ``fast_text`` over all of them, a line each."""
    norms, decomposed = normalize_many(words)
    out = list(zip(norms, itertools.repeat(False)))
    for row in decomposed:
        out[row] = (norms[row], True)
    return out


def normalize_many(words: Sequence[str]) -> tuple[list[str], list[int]]:
    """The normal forms of ``words`` and the rows that were written in decomposed jamo (see ``normalize_word``)."""
    if not words:
        return [], []
    joined = "\n".join(words)
    if joined.count("\n") != len(words) - 1:  # a word holds a line break (only through the API): one line each
        joined = "\n".join(word.replace("\n", " ") for word in words)
    plains = fast_text(joined)
    norms = plains.split("\n")
    decomposed: list[int] = []
    for row in lines_matching(_COMPOSABLE, plains):
        plain = norms[row]
        norms[row] = analyze(plain).text
        if norms[row] != plain:
            decomposed.append(row)
    return norms, decomposed


def lines_matching(pattern: re.Pattern[str], text: str) -> list[int]:
    """The (0-based) numbers of the lines of ``text`` where ``pattern`` matches: one scan for a whole list."""
    rows: list[int] = []
    row = pos = 0
    for match in pattern.finditer(text):
        row += text.count("\n", pos, match.start())
        pos = match.start()
        if not rows or rows[-1] != row:
            rows.append(row)
    return rows


# -- jamo composition ------------------------------------------------------------------------------------------------
# What composition reads: compatibility jamo and the letters typed for ㅣ. A syllable is built from one run of these,
# so a run can be composed on its own.
_COMPOSITION_CHARS = frozenset(map(chr, range(0x3131, 0x3164))) | frozenset(_VOWEL_LOOKALIKES)


def composable_sites(text: str) -> list[int]:
    """Where a consonant jamo is followed by a vowel (or a letter typed for ㅣ): where ``compose`` may act."""
    return [match.start() for match in _COMPOSABLE.finditer(text)]


def composition_regions(text: str, sites: Iterable[int]) -> list[tuple[int, int]]:
    """The runs of jamo (and ㅣ look-alikes) of ``text`` around ``sites``, merged: all that ``compose`` can change."""
    chars = _COMPOSITION_CHARS
    regions: list[tuple[int, int]] = []
    for site in sorted(sites):
        if regions and site < regions[-1][1]:
            continue
        start, stop = site, site + 1
        while start > 0 and text[start - 1] in chars:
            start -= 1
        while stop < len(text) and text[stop] in chars:
            stop += 1
        regions.append((start, stop))
    return regions


def compose(units: Analyzed) -> Analyzed:
    """Compose runs of compatibility jamo (ㄱㅐㅅㅐㄲㅣ -> 개새끼) the way a Korean keyboard would."""
    return _compose(units)


def _compose(units: Analyzed) -> Analyzed:
    """Compose runs of compatibility jamo (ㄱㅐㅅㅐㄲㅣ -> 개새끼) the way a Korean keyboard would."""
    text, gaps = units.text, units.gaps
    n = len(text)
    out = Analyzed("", [], [], [])
    chars: list[str] = []

    def vowel_at(k: int) -> str | None:
        if k >= n or gaps[k] == GAP_SPACE:
            return None
        c = text[k]
        return c if c in _JUNG_INDEX else _VOWEL_LOOKALIKES.get(c) if k > 0 and text[k - 1] in _CHO_INDEX else None

    def consonant_at(k: int) -> str | None:
        if k >= n or gaps[k] == GAP_SPACE:
            return None
        return text[k] if text[k] in _JONG_INDEX or text[k] in _CHO_INDEX else None

    i = 0
    while i < n:
        c = text[i]
        vowel = vowel_at(i + 1) if c in _CHO_INDEX else None
        if vowel is None:
            chars.append(c)
            out.starts.append(units.starts[i])
            out.ends.append(units.ends[i])
            out.gaps.append(gaps[i])
            i += 1
            continue
        j = i + 2
        second = vowel_at(j)
        if second is not None and (vowel, second) in _VOWEL_PAIRS:
            vowel = _VOWEL_PAIRS[(vowel, second)]
            j += 1
        final = ""
        first_final = consonant_at(j)
        if first_final is not None and first_final in _JONG_INDEX and vowel_at(j + 1) is None:
            final = first_final
            j += 1
            second_final = consonant_at(j)
            if second_final is not None and (final, second_final) in _FINAL_PAIRS and vowel_at(j + 1) is None:
                final = _FINAL_PAIRS[(final, second_final)]
                j += 1
        code = _SYLLABLE_BASE + (_CHO_INDEX[c] * 21 + _JUNG_INDEX[vowel]) * 28 + (_JONG_INDEX[final] if final else 0)
        chars.append(chr(code))
        out.starts.append(units.starts[i])
        out.ends.append(units.ends[j - 1])
        out.gaps.append(gaps[i])
        i = j
    out.text = "".join(chars)
    return out


# -- stretched syllables ---------------------------------------------------------------------------------------------
def _split(c: str) -> tuple[int, int, int] | None:
    code = ord(c) - _SYLLABLE_BASE
    if not 0 <= code <= _SYLLABLE_LAST - _SYLLABLE_BASE:
        return None
    return code // 588, (code // 28) % 21, code % 28


def fold_stretches(units: Analyzed, seconds: Iterable[int] | None = None) -> Analyzed | None:
    """Fold a syllable's vowel repeated with a silent ㅇ into it: 씨이발 -> 씨발, 조오오온나 -> 존나, 바알 -> 발.

    A second view of the text (None when nothing folds): words such as 애액 have the same shape, so the filter
    matches both the plain and the folded view rather than folding the lists too. ``seconds`` are candidate
    positions of the silent syllable (the filter gets them from its trigger patterns); by default all are tried.
    """
    text, gaps = units.text, units.gaps
    folds = stretch_folds(text, gaps.__getitem__, range(1, len(text)) if seconds is None else seconds)
    if not folds:
        return None
    out = Analyzed("", [], [], [])
    chars: list[str] = []
    done = 0  # units before this index are copied
    i = 0
    while i < len(folds):
        first = folds[i]
        last = first
        # A chain (조오오온): each folded syllable is open again, so the next one folds into the same unit.
        while i + 1 < len(folds) and folds[i + 1] == last + 1:
            i += 1
            last = folds[i]
        i += 1
        head = first - 1
        chars.append(text[done:head])
        out.starts.extend(units.starts[done:head])
        out.ends.extend(units.ends[done:head])
        out.gaps.extend(gaps[done:head])
        chars.append(folded_syllable(text[head], text[last]))
        out.starts.append(units.starts[head])
        out.ends.append(units.ends[last])
        out.gaps.append(gaps[head])
        done = last + 1
    chars.append(text[done:])
    out.starts.extend(units.starts[done:])
    out.ends.extend(units.ends[done:])
    out.gaps.extend(gaps[done:])
    out.text = "".join(chars)
    return out


def stretch_folds(text: str, gap: Callable[[int], int], seconds: Iterable[int]) -> list[int]:
    """The positions (sorted) of the silent syllables that fold into the one before, starting from ``seconds``."""
    found: set[int] = set()
    pairs = _stretch_pairs()
    for k in seconds:  # any order: each start follows its own chain, and `found` is their union
        # Follow the chain (조오오오온): each folded syllable is open again, so the next one folds into it too.
        while k > 0 and k not in found and text[k - 1 : k + 1] in pairs and gap(k) != GAP_SPACE:
            found.add(k)
            k += 1
    return sorted(found)


def folded_syllable(head: str, last: str) -> str:
    """``head`` with the final consonant of ``last``: the syllable a stretch folds into (조 + 온 -> 존)."""
    lead, tail = _split(head), _split(last)
    assert lead is not None and tail is not None
    return chr(_SYLLABLE_BASE + (lead[0] * 21 + lead[1]) * 28 + tail[2])


@cache
def _stretch_pairs() -> frozenset[str]:
    """Every open syllable followed by a silent ㅇ with the same vowel (가아, 가안, 조오, 씨잇): the folds."""
    return frozenset(
        chr(_SYLLABLE_BASE + (lead * 21 + vowel) * 28) + chr(_SYLLABLE_BASE + (_O * 21 + vowel) * 28 + tail)
        for lead in range(19)
        for vowel in range(21)
        for tail in range(28)
    )


def trigger_patterns(words: Iterable[str]) -> tuple[list[str], list[str]]:
    """Two-letter strings of ``fast_text`` after which ``analyze`` may read the text differently.

    Returns (jamo triggers, stretch triggers); the filter adds them to its automaton, and a line containing none of
    them (and no listed word) needs no closer look. Stretch triggers are made for the syllables of the banned
    ``words`` only (씨 -> 씨이, 존 -> 조온, 조오), so most everyday pairs (재미있, 지인) do not trigger.
    """
    _stretch_pairs()  # built here, with the filter, rather than in the first check
    jamo = [c + v for c in CHO for v in (*JUNG, *_VOWEL_LOOKALIKES)]
    syllables = set("".join(words))
    stretch: list[str] = []
    for syllable in syllables:
        parts = _split(syllable)
        if parts is None:
            continue
        lead, vowel, tail = parts
        open_ = chr(_SYLLABLE_BASE + (lead * 21 + vowel) * 28)
        stretch.append(open_ + chr(_SYLLABLE_BASE + (_O * 21 + vowel) * 28 + tail))
        if tail:
            stretch.append(open_ + chr(_SYLLABLE_BASE + (_O * 21 + vowel) * 28))
    return jamo, sorted(set(stretch))


# -- forms derived from a word (used by the filter to add variants) -----------------------------------------------
_KEYS_CHO = ["r", "R", "s", "e", "E", "f", "a", "q", "Q", "t", "T", "d", "w", "W", "c", "z", "x", "v", "g"]
_KEYS_JUNG = ["k", "o", "i", "O", "j", "p", "u", "P", "h", "hk", "ho", "hl", "y", "n", "nj", "np", "nl", "b", "m",
              "ml", "l"]  # fmt: skip
_KEYS_JONG = ["", "r", "R", "rt", "s", "sw", "sg", "e", "f", "fr", "fa", "fq", "ft", "fx", "fv", "fg", "a", "q", "qt",
              "t", "T", "d", "w", "c", "z", "x", "v", "g"]  # fmt: skip


@cache
def _syllable_tables() -> tuple[dict[int, str], dict[int, str]]:
    keys, initials_ = {}, {}
    for code in range(_SYLLABLE_BASE, _SYLLABLE_LAST + 1):
        lead, vowel, tail = _split(chr(code))  # type: ignore[misc]
        keys[code] = (_KEYS_CHO[lead] + _KEYS_JUNG[vowel] + _KEYS_JONG[tail]).lower()
        initials_[code] = CHO[lead]
    return keys, initials_


_ALL_SYLLABLES = re.compile("[\uac00-\ud7a3]+")


@overload
def keyboard_form(word: str) -> str | None: ...
@overload
def keyboard_form(word: str, *, strict: Literal[False]) -> str: ...
def keyboard_form(word: str, *, strict: bool = True) -> str | None:
    """What typing ``word`` on a Korean (dubeolsik) keyboard in Latin mode gives, lowercased: 시발 -> tlqkf.

    None for a word that is not all Hangul; with ``strict=False`` other characters are kept as they are.
    """
    if strict and not _ALL_SYLLABLES.fullmatch(word):
        return None
    return word.translate(_syllable_tables()[0])


@overload
def initials(word: str) -> str | None: ...
@overload
def initials(word: str, *, strict: Literal[False]) -> str: ...
def initials(word: str, *, strict: bool = True) -> str | None:
    """The initial consonants of an all-Hangul word: 개새끼 -> ㄱㅅㄲ (``strict=False``: other characters kept)."""
    if strict and not _ALL_SYLLABLES.fullmatch(word):
        return None
    return word.translate(_syllable_tables()[1])


def syllable_parts(c: str) -> tuple[int, int, int] | None:
    """(initial, vowel, final) indices of a Hangul syllable, or None."""
    return _split(c)


def is_hangul(c: str) -> bool:
    return _SYLLABLE_BASE <= ord(c) <= _SYLLABLE_LAST or "ㄱ" <= c <= "ㅣ"


def is_latin(c: str) -> bool:
    return "a" <= c <= "z"
