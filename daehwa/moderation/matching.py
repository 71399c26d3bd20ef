"""Matching: a compiled automaton with its pattern table, searched over normalised text, and the matching rules.

A check runs in two steps. ``fast_units`` normalises the whole text with C-level string operations and the automaton
looks for banned words, allowed words and *trigger* bigrams (places where composing jamo or folding a stretched
syllable could change the reading). Almost all ordinary text stops there. Only the hits are looked at again with
offsets, where the matching rules decide, and every match is mapped back to the exact span of the original text.

Matching rules (they keep ordinary text clean):
* A match fully inside an allowed word does not count (시발점, 병신년, 새끼 고양이).
* A match that crosses a space must start a word and end one (or be followed by a particle such as 아/놈):
  "시 발" and "씨 발 놈" count, "살며시 발라", "송윤아씨 바쁘게" and "시 발표" do not.
* Latin-letter edges need a word boundary (class, Scunthorpe, assassin stay clean).
* Leading digits must not continue a number and must touch the word they read as (18억, 2018년, 18% stay clean).
"""

from __future__ import annotations

import bisect
import itertools
import operator
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import daachorse

from .base import Match
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
    is_latin,
    stretch_folds,
)
from .variants import LEFT_LATIN, RIGHT_LATIN

BAN, ALLOW, TRIGGER, STRETCH = 0, 1, 2, 3  # STRETCH: a trigger where a stretched syllable may fold
# What may follow a spaced-out banned word inside the same word: 씨 발 놈아, 씨 발 놈이야.
_PARTICLES = frozenset("아야이놈년새들같")
_MASK = "*"


# Patterns: (kind, word as listed, category, edges). Plain tuples: a build makes a few hundred thousand of them.
Pattern = tuple[int, str, str, int]


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


class CompiledFilter:
    """An immutable automaton with its pattern table; ``WordFilter.reload`` swaps one for another in one store."""

    def __init__(
        self,
        patterns: list[Pattern],
        automaton: daachorse.CharwiseDoubleArrayAhoCorasick,
        longest: int,
        compose_by_search: bool,
        stats: FilterStats,
        reach: dict[str, int],
    ) -> None:
        self.patterns = patterns
        self._kinds = bytes(map(operator.itemgetter(0), patterns))
        self.automaton = automaton
        self.longest = longest
        self.compose_by_search = compose_by_search
        self.stats = stats
        self.reach = reach  # see prefix_reach: how far a listed word starting with these letters may reach

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
        sites = [start for start, _, index in hits if kinds[index] == TRIGGER]
        if self.compose_by_search:
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
        candidates: list[tuple[int, int, Pattern]] = []
        seconds = self._collect(_ListUnits.of(units), self.automaton.find_overlapping(units.text), allowed, candidates)
        folded = fold_stretches(units, seconds) if seconds else None
        if folded is not None:
            hits = self.automaton.find_overlapping(folded.text)
            self._collect(_ListUnits.of(folded), hits, allowed, candidates)
        return _decide(allowed, candidates), folded or units

    def _evaluate(self, units: _Units, hits: list[tuple[int, int, int]]) -> list[Match]:
        """The rules over the hits in ``units`` and in windows of its folded view (see ``_windows``)."""
        allowed: list[tuple[int, int]] = []
        candidates: list[tuple[int, int, Pattern]] = []
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
        candidates: list[tuple[int, int, Pattern]],
    ) -> list[int]:
        """Sort ``hits`` into allowed spans and accepted candidates; return where stretched syllables may fold."""
        kinds, patterns = self._kinds, self.patterns
        seconds: list[int] = []
        folds = units.folds
        for start, end, index in hits:
            kind = kinds[index]
            if kind == STRETCH:
                seconds += (start + 1, start + 2)
            elif folds is not None and _untouched(folds, start, end):
                continue  # a window's hit that neither has nor touches a folded unit: the plain view has it too
            elif kind == BAN:
                pattern = patterns[index]
                first, stop, solid = units.span(start, end)
                if _accept(pattern[3], start, end, units, solid):
                    candidates.append((first, stop, pattern))
            elif kind == ALLOW:
                allowed.append((units.start(start), units.end(end - 1)))
        return seconds


def prefix_reach(strings: list[str]) -> dict[str, int]:
    """The longest listed spelling that starts with each first letter and each first two letters.

    What a stream guard needs to know whether a word may still be under way at the end of the text so far, without
    keeping every spelling: a few ten thousand keys, built by C-level passes (sorted by length, so that ``dict``,
    which keeps the last value of a repeated key, keeps the longest).
    """
    by_length = sorted(strings, key=len)
    reach = dict(zip(map(operator.itemgetter(slice(0, 2)), by_length), map(len, by_length), strict=True))
    # First letters from the two-letter keys (fewer than the spellings), by ascending reach so the longest wins; a
    # one-letter spelling's own key ("x"[:2] == "x") then holds the longest spelling that starts with it.
    pairs = sorted(reach.items(), key=operator.itemgetter(1))
    reach.update(
        zip(
            map(operator.itemgetter(0), map(operator.itemgetter(0), pairs)),
            map(operator.itemgetter(1), pairs),
            strict=True,
        )
    )
    return reach


def _decide(allowed: list[tuple[int, int]], candidates: list[tuple[int, int, Pattern]]) -> list[Match]:
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


def _untouched(folds: list[int], start: int, end: int) -> bool:
    """Whether none of the (sorted) ``folds`` lies in ``start - 1 .. end``, the hit and its context."""
    i = bisect.bisect_left(folds, start - 1)
    return i == len(folds) or folds[i] > end


def _by_start_then_longest(candidate: tuple[int, int, Pattern]) -> tuple[int, int]:
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


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _accept(edges: int, start: int, end: int, units: _Units | _Window, solid: bool = False) -> bool:
    """The context rules of the module docstring, for one candidate match ``units.text[start:end]``.

    ``solid``: the caller knows nothing was removed inside the match (so it crosses no space).
    """
    text, gap = units.text, units.gap
    n = len(text)
    if edges:
        if edges & LEFT_LATIN and start > 0 and is_latin(text[start - 1]) and gap(start) == GAP_NONE:
            return False
        if edges & RIGHT_LATIN and end < n and is_latin(text[end]) and gap(end) == GAP_NONE:
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
