"""``WordFilter``: banned words from plain lists, matched with a double-array Aho-Corasick automaton (daachorse).

A check runs in two steps. ``fast_text`` normalises the whole text with C-level string operations and the automaton
looks for banned words, allowed words and *trigger* bigrams (places where composing jamo or folding a stretched
syllable could change the reading). Almost all ordinary text stops there. Only the lines with a hit are analysed
again with offsets (``analyze``), where the matching rules decide, and every match is mapped back to the exact span
of the original text.

Matching rules (they keep ordinary text clean):
* A match fully inside an allowed word does not count (시발점, 병신년, 새끼 고양이).
* A match that crosses a space must start a word and end one (or be followed by a particle such as 아/놈):
  "시 발" and "씨 발 놈" count, "살며시 발라", "송윤아씨 바쁘게" and "시 발표" do not.
* Latin-letter edges need a word boundary (class, Scunthorpe, assassin stay clean).
* Leading digits must not continue a number and must touch the word they read as (18억, 2018년, 18% stay clean).
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import importlib.metadata
import itertools
import logging
import marshal
import operator
import os
import re
import threading
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import daachorse

from .base import Action, Match, ModerationResult, Moderator, StreamGuard
from .lists import DEFAULT_CATEGORY, ListEntry, builtin_lists, parse_lines, read_list
from .normalize import (
    GAP_NONE,
    GAP_SPACE,
    GAP_SYMBOL,
    Analyzed,
    Offsets,
    analyze,
    composable_sites,
    compose,
    composition_regions,
    fast_units,
    fold_stretches,
    folded_syllable,
    initials,
    is_latin,
    keyboard_form,
    lines_matching,
    normalize_many,
    normalize_words,
    stretch_folds,
    syllable_parts,
    trigger_patterns,
)

log = logging.getLogger(__name__)

_BAN, _ALLOW, _TRIGGER, _STRETCH = 0, 1, 2, 3  # _STRETCH: a trigger where a stretched syllable may fold
# Look-alike spellings generated from each banned word: 씨발 -> c발 / 18, 지랄 -> g랄, 십팔 -> 십8.
_SUBSTITUTES = {"씨": ("c",), "시": ("c",), "지": ("g",), "발": ("8",), "팔": ("8",), "빨": ("8",), "십": ("10",),
                "씹": ("10", "18")}  # fmt: skip
_PAIR_SUBSTITUTES = {"씨발": "18", "시발": "18", "씨팔": "18", "시팔": "18", "씹팔": "18", "십팔": "18"}
_MAX_VARIANTS = 16
_SUBSTITUTABLE = re.compile("[" + "".join(_SUBSTITUTES) + "]")
# Words a number is read with; "18" + one of these is a quantity (18년, 18억, 18세), never a generated variant.
_COUNTERS = frozenset("년억만천백원살세시분초명개번대일월주층호회등위점도차장권편골표배평리키")
# What may follow a spaced-out banned word inside the same word: 씨 발 놈아, 씨 발 놈이야.
_PARTICLES = frozenset("아야이놈년새들같")
# Initial-consonant forms are generated only from words this long; shorter ones (ㅅㅂ, ㅂㅅ) come from the lists,
# because two-letter abbreviations collide with everyday ones (ㄱㅅ = 감사, ㅈㅅ = 죄송).
_INITIALS_MIN_SYLLABLES = 3
_KEYBOARD_MIN_KEYS = 4
_MASK = "*"
# Letters outside Hangul, ASCII and the compatibility jamo in a list entry: full-width, enclosed, look-alike forms.
_OTHER_LETTERS = re.compile(r"[^\x00-\x7f\u3131-\u3163\uac00-\ud7a3\s]")


# Patterns: (kind, word as listed, category, edges). Plain tuples: a build makes a few hundred thousand of them.
_Pattern = tuple[int, str, str, int]
_LEFT_LATIN, _RIGHT_LATIN = 1, 2  # edges: the pattern needs a word boundary on that side (it has a Latin letter there)


@dataclass(frozen=True, slots=True)
class FilterStats:
    """What a build loaded: list entries (and ones skipped), automaton patterns with variants, build seconds."""

    words: int
    skipped: int
    allowed: int
    patterns: int
    longest: int
    build_seconds: float
    files: tuple[str, ...]
    cached: bool = False  # loaded from the compiled cache instead of built

    def as_dict(self) -> dict[str, object]:
        return {
            "cached": self.cached,
            "words": self.words,
            "skipped": self.skipped,
            "allowed": self.allowed,
            "patterns": self.patterns,
            "longest": self.longest,
            "build_seconds": round(self.build_seconds, 3),
            "files": list(self.files),
        }


class _Compiled:
    """An immutable automaton with its pattern table; ``WordFilter.reload`` swaps one for another in one store."""

    def __init__(
        self,
        patterns: list[_Pattern],
        automaton: daachorse.CharwiseDoubleArrayAhoCorasick,
        longest: int,
        compose_by_search: bool,
        stats: FilterStats,
    ) -> None:
        self.patterns = patterns
        self._kinds = bytes(map(operator.itemgetter(0), patterns))
        self.automaton = automaton
        self.longest = longest
        self._compose_by_search = compose_by_search
        self.stats = stats

    @classmethod
    def build(
        cls, banned: Sequence[ListEntry], allowed: Sequence[ListEntry], files: tuple[str, ...]
    ) -> tuple[_Compiled, list[tuple[int, str]]]:
        """Normalise the lists, derive the variants and build the automaton; also returns the skipped entries."""
        started = time.perf_counter()
        allowed_table: dict[str, _Pattern] = {}
        for entry, (norm, _) in zip(allowed, normalize_words([e.word for e in allowed]), strict=True):
            if norm:
                allowed_table[norm] = (_ALLOW, entry.word, entry.category, 0)
        allow_norms = allowed_table.keys()
        skipped: list[tuple[int, str]] = []  # (index in banned, reason), logged by _log_skipped
        words = list(map(operator.itemgetter(0), banned))
        joined = "\n".join(words)
        if joined.count("\n") == len(words) - 1:
            evasive = set(lines_matching(_OTHER_LETTERS, joined))
        else:  # a word given through the API holds a line break: check one by one
            evasive = {i for i, word in enumerate(words) if _OTHER_LETTERS.search(word)}
        norms, decomposed = normalize_many(words)
        reasons = dict.fromkeys(sorted(evasive.union(decomposed)), _EVASION)
        # "ㅆ1", "ㄷㅐ출" or "㉻㉶" are evasion spellings the normaliser undoes itself; normalised they would be plain
        # words (씨, 대출, 하자) that fire on ordinary text. List the plain word instead.
        reasons.update(dict.fromkeys(itertools.compress(itertools.count(), map(operator.not_, norms)), _NO_LETTERS))
        if reasons:
            skipped = sorted(reasons.items())
            keep = bytearray(b"\x01") * len(norms)
            for i in reasons:
                keep[i] = 0
            norms, banned = list(itertools.compress(norms, keep)), list(itertools.compress(banned, keep))
        # Patterns, first come first served: allowed words, then listed words, then variants (so a listed spelling
        # keeps its own entry and category). Built as dicts from reversed sequences, where the first one wins.
        variant_owners, variants, variant_edges = _variants(norms)
        owners = map(banned.__getitem__, variant_owners)
        table = _first_wins(variants, _records(owners, variant_edges))
        table.update(_first_wins(norms, _records(banned, _edges_of(norms))))
        table.update(allowed_table)
        jamo_triggers, stretch_triggers = trigger_patterns([text for text in table if text not in allow_norms])
        listed = len(table)  # banned and allowed spellings; the triggers come next
        # A jamo pair that is itself a listed pattern would hide its trigger; then every hit is checked for one.
        compose_by_search = any(trigger in table for trigger in jamo_triggers)
        for trigger in jamo_triggers:
            table.setdefault(trigger, (_TRIGGER, "", "", 0))
        for trigger in stretch_triggers:
            table.setdefault(trigger, (_STRETCH, "", "", 0))
        strings = list(table)
        patterns = list(table.values())
        automaton = daachorse.CharwiseDoubleArrayAhoCorasick(strings)
        longest = max(map(len, strings))
        stats = FilterStats(
            words=len(norms),
            skipped=len(skipped),
            allowed=len(allow_norms),
            patterns=listed,
            longest=longest,
            build_seconds=time.perf_counter() - started,
            files=files,
        )
        return cls(patterns, automaton, longest, compose_by_search, stats), skipped

    def dump(self, skipped: list[tuple[int, str]]) -> bytes:
        """The compiled filter as bytes for ``load`` (marshal and daachorse's own format: no code is unpickled)."""
        stats = self.stats
        meta = (stats.words, stats.allowed, stats.patterns, skipped, self.longest, self._compose_by_search)
        return marshal.dumps((_CACHE_FORMAT, meta, self.patterns, self.automaton.serialize()))

    @classmethod
    def load(cls, data: bytes, files: tuple[str, ...], started: float) -> tuple[_Compiled, list[tuple[int, str]]]:
        """The inverse of ``dump``; raises ValueError (or what marshal or daachorse raise) on foreign data."""
        version, meta, patterns, automaton = marshal.loads(data)
        if version != _CACHE_FORMAT:
            raise ValueError(f"cache format {version}")
        words, allowed, count, skipped, longest, compose_by_search = meta
        stats = FilterStats(words, len(skipped), allowed, count, longest, time.perf_counter() - started, files, True)
        automaton = daachorse.CharwiseDoubleArrayAhoCorasick.deserialize(automaton)
        return cls(patterns, automaton, longest, compose_by_search, stats), skipped

    def find(self, text: str) -> list[Match]:
        """Matches in ``text``: normalised in C-level passes, offsets and context looked up only around hits."""
        fast = fast_units(text)
        if fast is None:
            return self.evaluate(analyze(text))  # a character expands to several letters (ﬁ, ㈜): the full analysis
        norm, flags = fast
        hits = self.automaton.find_overlapping(norm)
        if not hits:
            return []
        units: _Units = _FastUnits(norm, text, flags)
        kinds = self._kinds
        sites = [start for start, _, index in hits if kinds[index] == _TRIGGER]
        if self._compose_by_search:
            sites = composable_sites(norm)
        if sites:
            units = _composed(units, sites)
            hits = self.automaton.find_overlapping(units.text)
        return self._evaluate(units, hits)

    def evaluate(self, units: Analyzed) -> list[Match]:
        """Apply the matching rules to analysed units (and their folded view); maximal matches, original offsets."""
        return self.evaluate_views(units)[0]

    def evaluate_views(self, units: Analyzed) -> tuple[list[Match], Analyzed]:
        """``evaluate``, plus the view whose units count towards the longest match (folded when anything folds).

        Short texts (a stream's held text, a line with ﬁ or ㈜): the whole folded view is searched, no windows.
        """
        allowed: list[tuple[int, int]] = []
        candidates: list[tuple[int, int, _Pattern]] = []
        seconds = self._collect(_ListUnits.of(units), self.automaton.find_overlapping(units.text), allowed, candidates)
        folded = fold_stretches(units, seconds) if seconds else None
        if folded is not None:
            hits = self.automaton.find_overlapping(folded.text)
            self._collect(_ListUnits.of(folded), hits, allowed, candidates)
        return _decide(allowed, candidates), folded or units

    def _evaluate(self, units: _Units, hits: list[tuple[int, int, int]]) -> list[Match]:
        """The rules over the hits in ``units`` and in windows of its folded view (see ``_windows``)."""
        allowed: list[tuple[int, int]] = []
        candidates: list[tuple[int, int, _Pattern]] = []
        seconds = self._collect(units, hits, allowed, candidates)
        if seconds:
            folds = stretch_folds(units.text, units.gap, seconds)
            for window in _windows(units, folds, self.longest + 1):
                self._collect(window, self.automaton.find_overlapping(window.text), allowed, candidates)
        return _decide(allowed, candidates)

    def _collect(
        self,
        units: _Units | _Window,
        hits: list[tuple[int, int, int]],
        allowed: list[tuple[int, int]],
        candidates: list[tuple[int, int, _Pattern]],
    ) -> list[int]:
        """Sort ``hits`` into allowed spans and accepted candidates; return where stretched syllables may fold."""
        kinds, patterns = self._kinds, self.patterns
        seconds: list[int] = []
        folds = units.folds
        for start, end, index in hits:
            kind = kinds[index]
            if kind == _STRETCH:
                seconds += (start + 1, start + 2)
            elif folds is not None and _untouched(folds, start, end):
                continue  # a window's hit that neither has nor touches a folded unit: the plain view has it too
            elif kind == _BAN:
                pattern = patterns[index]
                first, stop, solid = units.span(start, end)
                if _accept(pattern[3], start, end, units, solid):
                    candidates.append((first, stop, pattern))
            elif kind == _ALLOW:
                allowed.append((units.start(start), units.end(end - 1)))
        return seconds


def _decide(allowed: list[tuple[int, int]], candidates: list[tuple[int, int, _Pattern]]) -> list[Match]:
    """Drop candidates inside an allowed word, then keep the maximal ones (longest first at each start)."""
    if not candidates:
        return []
    if allowed:
        candidates = [c for c in candidates if not any(a <= c[0] and c[1] <= b for a, b in allowed)]
    candidates.sort(key=_by_start_then_longest)
    out: list[Match] = []
    reach = -1
    for start, end, pattern in candidates:
        if end <= reach:
            continue  # inside a longer match that starts no later (or the same match in the folded view)
        reach = end
        out.append(Match(pattern[1], pattern[2], start, end))
    return out


def _first_wins(keys: list[str], values: Iterable[_Pattern]) -> dict[str, _Pattern]:
    """``{key: value}`` where a repeated key keeps its first value (one C-level pass instead of a test per key)."""
    return dict(zip(reversed(keys), reversed(list(values)), strict=True))


def _records(entries: Iterable[ListEntry], edges: Iterable[int]) -> Iterator[_Pattern]:
    """Banned pattern records for ``entries`` (word, category) with their ``edges``, built by C-level iterators."""
    entries = list(entries)
    words, categories = map(operator.itemgetter(0), entries), map(operator.itemgetter(1), entries)
    return zip(itertools.repeat(_BAN), words, categories, edges)


def _edges_of(norms: list[str]) -> list[int]:
    """``_edges`` of every word in ``norms`` (none empty), by C-level maps over their first and last letters."""
    left = map(_LATIN.__contains__, map(operator.itemgetter(0), norms))
    right = map(_LATIN.__contains__, map(operator.itemgetter(-1), norms))
    return list(map(operator.or_, left, map(operator.lshift, right, itertools.repeat(1))))


_LATIN = frozenset("abcdefghijklmnopqrstuvwxyz")
assert (_LEFT_LATIN, _RIGHT_LATIN) == (1, 2)  # _edges_of builds the bits as left | right << 1


def _untouched(folds: list[int], start: int, end: int) -> bool:
    """Whether none of the (sorted) ``folds`` lies in ``start - 1 .. end``, the hit and its context."""
    i = bisect.bisect_left(folds, start - 1)
    return i == len(folds) or folds[i] > end


def _by_start_then_longest(candidate: tuple[int, int, _Pattern]) -> tuple[int, int]:
    return candidate[0], -candidate[1]


class _FastUnits:
    """The units of a fast text: ``text[i]`` is one character of ``source``, at ``start(i)``.

    No map is built: ``Offsets`` finds a unit's offset when a hit needs it, and the gap before a unit is read from
    the characters removed between it and the one before.
    """

    __slots__ = ("_flags", "_offsets", "source", "start", "text")
    folds = None  # a plain view has no folded units (see _Window)

    def __init__(self, text: str, source: str, flags: bytes) -> None:
        self.text = text
        self.source = source
        self._flags = flags
        self._offsets = Offsets(flags, len(text))
        self.start = self._offsets.original

    def end(self, i: int) -> int:
        return self._offsets.original(i) + 1

    def span(self, start: int, end: int) -> tuple[int, int, bool]:
        """Where units ``start..end-1`` lie in the source, and whether nothing was removed among them (solid)."""
        first = self._offsets.original(start)
        width = end - start
        if self._flags.count(1, first, first + width) == width:
            return first, first + width, True  # the next `width` characters are all kept: they are these units
        return first, self._offsets.original(end - 1) + 1, False

    def gap(self, i: int) -> int:
        """The gap before unit ``i``: none, removed symbols, or a word boundary (space, line break, text start)."""
        text = self.text
        if i == 0 or text[i] == "\n" or text[i - 1] == "\n":
            return GAP_SPACE
        start = self._offsets.original(i)
        flags = self._flags
        if flags[start - 1]:
            return GAP_NONE  # the character before is unit i - 1
        before = flags.rfind(1, 0, start) + 1
        return GAP_SPACE if _WHITESPACE.search(self.source, before, start) else GAP_SYMBOL

    def lists(self) -> tuple[list[int], list[int]]:
        """Every unit's start and end (built when composition rewrites the units)."""
        starts = self._offsets.all()
        return starts, list(map(operator.add, starts, itertools.repeat(1)))


class _ListUnits:
    """Units with their offsets in lists: analysed (with gaps) or composed (gaps read from ``source``)."""

    __slots__ = ("_ends", "_gaps", "_starts", "end", "source", "start", "text")
    folds = None

    def __init__(
        self, text: str, starts: list[int], ends: list[int], *, gaps: list[int] | None = None, source: str = ""
    ) -> None:
        self.text = text
        self.source = source
        self._starts = starts
        self._ends = ends
        self._gaps = gaps
        self.start = starts.__getitem__
        self.end = ends.__getitem__

    @classmethod
    def of(cls, units: Analyzed) -> _ListUnits:
        return cls(units.text, units.starts, units.ends, gaps=units.gaps)

    def span(self, start: int, end: int) -> tuple[int, int, bool]:
        return self._starts[start], self._ends[end - 1], False  # units may span several characters: not known

    def lists(self) -> tuple[list[int], list[int]]:
        return self._starts, self._ends

    def gap(self, i: int) -> int:
        if self._gaps is not None:
            return self._gaps[i]
        text = self.text
        if i == 0 or text[i] == "\n" or text[i - 1] == "\n":
            return GAP_SPACE
        before, start = self._ends[i - 1], self._starts[i]
        if before == start:
            return GAP_NONE
        return GAP_SPACE if _WHITESPACE.search(self.source, before, start) else GAP_SYMBOL


_Units = _FastUnits | _ListUnits


_WHITESPACE = re.compile(r"\s")


def _composed(units: _Units, sites: list[int]) -> _Units:
    """``units`` with the jamo runs around ``sites`` composed (ㄱㅐㅅㅐㄲㅣ -> 개새끼); offsets become lists."""
    text = units.text
    starts, ends = units.lists()
    pieces: list[str] = []
    new_starts: list[int] = []
    new_ends: list[int] = []
    done = 0
    for lo, hi in composition_regions(text, sites):
        region = compose(Analyzed(text[lo:hi], starts[lo:hi], ends[lo:hi], [units.gap(i) for i in range(lo, hi)]))
        pieces += (text[done:lo], region.text)
        new_starts += starts[done:lo]
        new_starts += region.starts
        new_ends += ends[done:lo]
        new_ends += region.ends
        done = hi
    pieces.append(text[done:])
    new_starts += starts[done:]
    new_ends += ends[done:]
    return _ListUnits("".join(pieces), new_starts, new_ends, source=units.source)


class _Window:
    """A stretch of the folded view of some units (조오오온나 -> 존나), from base unit ``lo`` on.

    ``folds`` are the window's folded units, the only places it differs from the plain view; folded unit ``folds[j]``
    spans ``widths[j] + 1`` base units. Other units map to base units by counting the units folded away before them.
    """

    __slots__ = ("_base", "_lo", "_widths", "folds", "text")

    def __init__(self, base: _Units, text: str, lo: int, folds: list[int], widths: list[int]) -> None:
        self._base = base
        self.text = text
        self._lo = lo
        self.folds: list[int] | None = folds
        self._widths = widths

    def _span(self, i: int) -> tuple[int, int]:
        """The first and last base unit of window unit ``i``."""
        folds, widths = self._folds(), self._widths
        j = bisect.bisect_left(folds, i)
        first = self._lo + i + sum(widths[:j])
        return first, first + widths[j] if j < len(folds) and folds[j] == i else first

    def _folds(self) -> list[int]:
        assert self.folds is not None
        return self.folds

    def start(self, i: int) -> int:
        return self._base.start(self._span(i)[0])

    def end(self, i: int) -> int:
        return self._base.end(self._span(i)[1])

    def gap(self, i: int) -> int:
        return self._base.gap(self._span(i)[0])

    def span(self, start: int, end: int) -> tuple[int, int, bool]:
        return self.start(start), self.end(end - 1), False


def _windows(units: _Units, folds: list[int], reach: int) -> Iterator[_Window]:
    """Windows of the folded view around each run of ``folds``, ``reach`` units either side.

    A match in the folded view that differs from the plain view's contains a folded unit or touches one, so it lies
    inside a window with a unit of context either side (``reach`` exceeds the longest pattern). Searching windows
    instead of the whole folded text keeps ordinary text, where 재미있 (-> 재밌) or 가아 are common, cheap.
    """
    text, n = units.text, len(units.text)
    chains: list[list[int]] = []  # [head, last]: units head..last fold into one
    for k in folds:
        if chains and chains[-1][1] == k - 1:
            chains[-1][1] = k
        else:
            chains.append([k - 1, k])
    i = 0
    while i < len(chains):
        lo = max(chains[i][0] - reach, 0)
        j = i
        while j + 1 < len(chains) and chains[j + 1][0] - reach <= chains[j][1] + 1 + reach:
            j += 1
        hi = min(chains[j][1] + 1 + reach, n)
        pieces: list[str] = []
        window_folds: list[int] = []
        widths: list[int] = []
        done = lo
        size = 0
        for head, last in chains[i : j + 1]:
            pieces += (text[done:head], folded_syllable(text[head], text[last]))
            size += head - done
            window_folds.append(size)
            widths.append(last - head)
            size += 1
            done = last + 1
        pieces.append(text[done:hi])
        yield _Window(units, "".join(pieces), lo, window_folds, widths)
        i = j + 1


def _edges(norm: str) -> int:
    if norm[0] > "z" and norm[-1] > "z":
        return 0  # Hangul at both ends: the usual case, decided without the calls below
    return (_LEFT_LATIN if is_latin(norm[0]) else 0) | (_RIGHT_LATIN if is_latin(norm[-1]) else 0)


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _accept(edges: int, start: int, end: int, units: _Units | _Window, solid: bool = False) -> bool:
    """The context rules of the module docstring, for one candidate match ``units.text[start:end]``.

    ``solid``: the caller knows nothing was removed inside the match (so it crosses no space).
    """
    text, gap = units.text, units.gap
    n = len(text)
    if edges:
        if edges & _LEFT_LATIN and start > 0 and is_latin(text[start - 1]) and gap(start) == GAP_NONE:
            return False
        if edges & _RIGHT_LATIN and end < n and is_latin(text[end]) and gap(end) == GAP_NONE:
            return False
    if _is_digit(text[start]):
        if start > 0 and _is_digit(text[start - 1]) and gap(start) != GAP_SPACE:
            return False  # 2018년: the digits continue a number
        k = start + 1
        while k < end and _is_digit(text[k - 1]):
            if gap(k) != GAP_NONE:
                return False  # 18% 새끼, 1.8: the digits do not touch the word they would read as
            k += 1
    if _is_digit(text[end - 1]) and end < n and _is_digit(text[end]) and gap(end) != GAP_SPACE:
        return False
    if solid:
        return True
    last_space = -1
    for k in range(start + 1, end):
        if gap(k) == GAP_SPACE:
            last_space = k
    if last_space >= 0:
        if gap(start) != GAP_SPACE:
            return False  # 살며시 발라: starts inside a word
        ends_word = end >= n or gap(end) != GAP_NONE or text[end] in _PARTICLES
        if not ends_word and end - last_space < 2:
            return False  # 시 발표: the last piece is the start of another word
    return True


def _variants(norms: Sequence[str]) -> tuple[list[int], list[str], list[int]]:
    """Spellings derived from the banned words: the word's index, the variant and its edges, as three lists.

    Look-alike spellings first, then keyboard forms, then initial consonants, each in word order. The three kinds
    never share a spelling (a look-alike keeps a syllable, a keyboard form is Latin, initials are jamo), so only the
    order within a kind decides which word a spelling belongs to. The scans and the keyboard and initial-consonant
    forms run once over the joined list (C-level ``str.translate`` and ``re`` passes) rather than per word.
    """
    joined = "\n".join(norms)
    owners: list[int] = []
    variants: list[str] = []
    edges: list[int] = []
    for i in lines_matching(_SUBSTITUTABLE, joined):
        for variant in _lookalike_variants(norms[i]):
            owners.append(i)
            variants.append(variant)
            edges.append(_edges(variant))
    not_hangul = _HANGUL_RUN.sub("", joined).split("\n")  # "" for an all-Hangul word
    keys = keyboard_form(joined, strict=False).split("\n")
    typed = [i for i, (rest, key) in enumerate(zip(not_hangul, keys, strict=True))
             if not rest and len(key) >= _KEYBOARD_MIN_KEYS and len(norms[i]) >= 2]  # fmt: skip
    owners += typed
    variants += map(keys.__getitem__, typed)
    edges += itertools.repeat(_LEFT_LATIN, len(typed))  # typed from a Korean word: a boundary on the left only
    consonants = initials(joined, strict=False).split("\n")
    spelled = [i for i in typed if len(norms[i]) >= _INITIALS_MIN_SYLLABLES and len(set(consonants[i])) > 1]
    owners += spelled
    variants += map(consonants.__getitem__, spelled)
    edges += itertools.repeat(0, len(spelled))
    return owners, variants, edges


# Deleting the Hangul syllables of a word leaves "" when it was all Hangul.
_HANGUL_RUN = re.compile("[\uac00-\ud7a3]+")


def _lookalike_variants(norm: str) -> list[str]:
    return [v for v in _substituted(norm, _SUBSTITUTES, _PAIR_SUBSTITUTES) if _keep_variant(v)]


def _substituted(norm: str, singles: dict[str, tuple[str, ...]], pairs: dict[str, str]) -> list[str]:
    """Up to ``_MAX_VARIANTS`` spellings of ``norm`` with characters (or pairs) replaced by their look-alikes."""
    options: list[list[tuple[str, int]]] = []  # per position: (replacement, characters consumed)
    for i, c in enumerate(norm):
        here = [(c, 1)] + [(s, 1) for s in singles.get(c, ())]
        pair = pairs.get(norm[i : i + 2])
        if pair:
            here.append((pair, 2))
        options.append(here)
    if all(len(o) == 1 for o in options):
        return []
    out: list[str] = []

    def walk(i: int, prefix: str) -> None:
        if len(out) >= _MAX_VARIANTS:
            return
        if i >= len(norm):
            if prefix != norm:
                out.append(prefix)
            return
        for replacement, width in options[i]:
            walk(i + width, prefix + replacement)

    walk(0, "")
    return out


def _keep_variant(variant: str) -> bool:
    if not any(syllable_parts(c) for c in variant):
        return False  # "18" or "c8" alone would fire on ordinary numbers and words
    digits = len(variant) - len(variant.lstrip("0123456789"))
    return not (digits and variant[digits] in _COUNTERS)


# -- the moderator -------------------------------------------------------------------------------------------------
class WordFilter(Moderator):
    """Banned-word filter over several lists plus allow-lists; ``reload()`` re-reads them without a restart."""

    def __init__(
        self,
        word_files: Sequence[Path | str] = (),
        allow_files: Sequence[Path | str] = (),
        *,
        builtin: bool = True,
        words: Iterable[str | tuple[str, str]] = (),
        allowed: Iterable[str] = (),
        cache_dir: Path | str | None = None,
    ) -> None:
        """``cache_dir``: where compiled filters are kept, keyed by the lists' content and this code's version, so a
        restart or a reload with unchanged lists skips the build (about 0.3 s instead of 2 s for 100k words)."""
        self._cache_dir = Path(cache_dir) if cache_dir is not None else None
        self._word_files = [Path(p) for p in word_files]
        self._allow_files = [Path(p) for p in allow_files]
        self._builtin = builtin
        self._words = [(w, DEFAULT_CATEGORY) if isinstance(w, str) else w for w in words]
        self._allowed = list(allowed)
        self._reload_lock = threading.Lock()
        self._compiled = self._build()

    def _build(self) -> _Compiled:
        word_files, allow_files = list(self._word_files), list(self._allow_files)
        if self._builtin:
            builtin_words, builtin_allow = builtin_lists()
            word_files, allow_files = builtin_words + word_files, builtin_allow + allow_files
        banned = list(itertools.chain.from_iterable(read_list(p) for p in word_files))
        banned += [ListEntry(w, c, "<words>") for w, c in self._words]
        allowed = list(itertools.chain.from_iterable(read_list(p) for p in allow_files))
        allowed += list(parse_lines(self._allowed, source="<allowed>"))
        files = tuple(str(p) for p in (*word_files, *allow_files))
        cache = _CompiledCache(self._cache_dir) if self._cache_dir is not None else None
        loaded = cache.get(banned, allowed, files) if cache is not None else None
        if loaded is None:
            compiled, skipped = _Compiled.build(banned, allowed, files)
            if cache is not None:
                cache.put(banned, allowed, compiled, skipped)
        else:
            compiled, skipped = loaded
        _log_skipped(banned, skipped)
        log.info(
            "word filter %s: %d words, %d allowed, %d patterns in %.2fs",
            "loaded from the cache" if compiled.stats.cached else "built",
            compiled.stats.words,
            compiled.stats.allowed,
            compiled.stats.patterns,
            compiled.stats.build_seconds,
        )
        return compiled

    @property
    def stats(self) -> FilterStats:
        return self._compiled.stats

    def reload(self) -> dict[str, object]:
        """Re-read every list and swap the automaton; on a bad list the old one stays and ConfigError is raised.

        Blocking (about a second for 100k words): call it from a worker thread, e.g. ``asyncio.to_thread``.
        """
        with self._reload_lock:
            compiled = self._build()
            # One attribute store: checks running now finish on the old automaton, later ones use the new one.
            self._compiled = compiled
        return compiled.stats.as_dict()

    def check(self, text: str) -> ModerationResult:
        matches = self._compiled.find(text)
        return ModerationResult(text=text, matches=tuple(matches), masked=mask_text(text, matches))

    def guard(self, action: Action) -> StreamGuard:
        return WordStreamGuard(self._compiled, action)


_NO_LETTERS, _EVASION = "no letters", "evasion"


def _log_skipped(banned: Sequence[ListEntry], skipped: list[tuple[int, str]]) -> None:
    for index, reason in skipped:
        entry = banned[index]
        if reason == _NO_LETTERS:
            log.warning("%s: %r has no letters after normalisation and is ignored", entry.source, entry.word)
        else:
            log.info("%s: %r is an evasion spelling (jamo or look-alikes) and is skipped", entry.source, entry.word)


# Bump when the cache file layout changes; changes to the code are covered by hashing its source (see _code_version).
_CACHE_FORMAT = 1
_CACHE_KEEP = 3  # compiled filters kept in the cache directory (each is about 25 MB for 100k words)


class _CompiledCache:
    """Compiled filters on disk, named by a hash of the lists' words and categories and of the filter's own code.

    A file is a SHA-256 of its payload followed by the payload (``_Compiled.dump``); a file that fails the check or
    does not load is ignored and rebuilt. Writes go to a temporary file renamed into place, so a reader never sees
    half a file, and only the newest few files are kept.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, banned: Sequence[ListEntry], allowed: Sequence[ListEntry]) -> Path:
        digest = hashlib.sha256(_code_version())
        for entries in (banned, allowed):
            # word and category only: where an entry came from does not change the automaton
            digest.update("\x1e".join(e[0] + "\x1f" + e[1] for e in entries).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1d")
        return self.directory / f"{digest.hexdigest()[:32]}.filter"

    def get(
        self, banned: Sequence[ListEntry], allowed: Sequence[ListEntry], files: tuple[str, ...]
    ) -> tuple[_Compiled, list[tuple[int, str]]] | None:
        started = time.perf_counter()
        path = self.path(banned, allowed)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            if hashlib.sha256(raw[32:]).digest() != raw[:32]:
                raise ValueError("checksum mismatch")
            return _Compiled.load(raw[32:], files, started)
        except Exception as exc:  # a damaged or foreign file: rebuild, never fail the start
            log.warning("word filter cache %s is unusable (%s); rebuilding", path, exc)
            return None

    def put(
        self,
        banned: Sequence[ListEntry],
        allowed: Sequence[ListEntry],
        compiled: _Compiled,
        skipped: list[tuple[int, str]],
    ) -> None:
        path = self.path(banned, allowed)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            payload = compiled.dump(skipped)
            temporary = path.with_suffix(f".tmp{threading.get_ident()}")
            temporary.write_bytes(hashlib.sha256(payload).digest() + payload)
            os.replace(temporary, path)
            old = sorted(self.directory.glob("*.filter"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in old[_CACHE_KEEP:]:
                stale.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or full disk costs the next start a build, nothing more
            log.warning("word filter cache %s cannot be written (%s): the next start builds again", path, exc)


@functools.cache
def _code_version() -> bytes:
    """What the compiled form depends on besides the lists: this package's filter code and the daachorse version."""
    here = Path(__file__).parent
    digest = hashlib.sha256(importlib.metadata.version("daachorse").encode())
    for name in ("wordfilter.py", "normalize.py", "lists.py"):
        digest.update((here / name).read_bytes())
    return digest.digest()


def mask_text(text: str, matches: Iterable[Match], *, base: int = 0) -> str:
    """``text`` with every non-space character inside a match replaced by ``*``; ``base`` is text's offset."""
    spans = sorted((max(m.start - base, 0), min(m.end - base, len(text))) for m in matches)
    if not spans:
        return text
    parts: list[str] = []
    done = 0
    for lo, hi in spans:
        lo = max(lo, done)
        if lo >= hi:
            continue
        parts.append(text[done:lo])
        piece = text[lo:hi]
        parts.append(_SPACE_OR_NOT.sub(_MASK, piece) if _WHITESPACE.search(piece) else _MASK * len(piece))
        done = hi
    parts.append(text[done:])
    return "".join(parts)


_SPACE_OR_NOT = re.compile(r"\S")


class WordStreamGuard(StreamGuard):
    """Checks a streamed reply against one automaton (a reload does not change a running stream).

    Text is released once no banned word can still reach into it: everything before the last ``longest + 2``
    normalised units (a unit is a letter or syllable; spaces and symbols between units are held with them).
    A match found before that point is final; when one reaches past it, the release extends to the match's end.
    """

    _MAX_HOLD = 4096  # characters; beyond this (a flood of symbols) text is released as it is checked

    def __init__(self, compiled: _Compiled, action: Action) -> None:
        self._compiled = compiled
        self._action = action
        self.matches = []
        self._text = ""  # fed text from self._base on (older text is released and no longer needed)
        self._base = 0
        self._decided = 0  # absolute offset up to which matches are final and text is released (or passed)
        self._seen: set[tuple[int, int]] = set()
        self._blocked = False
        self._done = False

    @property
    def blocked(self) -> bool:
        return self._blocked

    def feed(self, text: str) -> str:
        if self._blocked or self._done:
            return ""
        if self._action == "off":
            return text
        self._text += text
        released = self._step(final=False)
        return text if self._action == "flag" else released

    def finish(self) -> str:
        if self._blocked or self._done:
            return ""
        self._done = True
        if self._action == "off":
            return ""
        released = self._step(final=True)
        return "" if self._action == "flag" else released

    def _step(self, *, final: bool) -> str:
        base, text = self._base, self._text
        end = base + len(text)
        units = analyze(text, base)
        found, view = self._compiled.evaluate_views(units)
        if final:
            boundary = end
        else:
            # Count units in the folded view: a stretched word (조오오오온나) is few folded units but many plain ones.
            hold = len(view.text) - self._compiled.longest - 2
            boundary = view.starts[hold] if hold > 0 else base
            newline = text.rfind("\n")
            if newline >= 0:
                boundary = max(boundary, base + newline + 1)  # no match crosses a line break
            if end - max(boundary, self._decided) > self._MAX_HOLD:
                boundary = end - self._MAX_HOLD
        decided = [m for m in found if m.start < boundary]
        boundary = max([boundary, self._decided, *(m.end for m in decided)])
        released_from = self._decided
        out = ""
        fresh = [m for m in decided if (m.start, m.end) not in self._seen]
        for m in fresh:
            self._seen.add((m.start, m.end))
            self.matches.append(m)
        if self._action == "block" and fresh:
            self._blocked = True
            stop = max(min(m.start for m in fresh), released_from)
            out = text[released_from - base : stop - base]
        elif boundary > released_from:
            chunk = text[released_from - base : boundary - base]
            out = mask_text(chunk, decided, base=released_from) if self._action == "mask" else chunk
        self._decided = max(boundary, released_from)
        self._trim(units)
        return out

    def _trim(self, units: Analyzed) -> None:
        """Drop text well before the decided point, keeping enough units for context."""
        first_open = bisect.bisect_left(units.starts, self._decided)
        keep_from = first_open - self._compiled.longest - 4
        if keep_from > 0:
            new_base = units.starts[keep_from]
            self._text = self._text[new_base - self._base :]
            self._base = new_base
