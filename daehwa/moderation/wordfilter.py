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
import itertools
import logging
import re
import threading
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import daachorse

from .base import Action, Match, ModerationResult, Moderator, StreamGuard
from .lists import DEFAULT_CATEGORY, ListEntry, builtin_lists, parse_lines, read_list
from .normalize import (
    GAP_NONE,
    GAP_SPACE,
    Analyzed,
    Locator,
    analyze,
    fast_text,
    fold_stretches,
    initials,
    is_latin,
    keyboard_form,
    normalize_word,
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


@dataclass(frozen=True, slots=True)
class _Pattern:
    word: str  # the list entry as written; reported in matches
    category: str
    kind: int
    left_latin: bool = False  # needs a word boundary on the left (pattern starts with a Latin letter)
    right_latin: bool = False


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

    def as_dict(self) -> dict[str, object]:
        return {
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

    def __init__(self, banned: Sequence[ListEntry], allowed: Sequence[ListEntry], files: tuple[str, ...]) -> None:
        started = time.perf_counter()
        table: dict[str, _Pattern] = {}
        allow_norms: set[str] = set()
        for entry in allowed:
            norm, _ = normalize_word(entry.word)
            if norm:
                table[norm] = _Pattern(entry.word, entry.category, _ALLOW)
                allow_norms.add(norm)
        bases: list[tuple[str, ListEntry]] = []
        skipped = 0
        for entry in banned:
            norm, decomposed = normalize_word(entry.word)
            if not norm:
                log.warning("%s: %r has no letters after normalisation and is ignored", entry.source, entry.word)
                skipped += 1
                continue
            if decomposed or _OTHER_LETTERS.search(entry.word):
                # "ㅆ1", "ㄷㅐ출" or "㉻㉶" are evasion spellings the normaliser undoes itself; normalised they would be
                # plain words (씨, 대출, 하자) that fire on ordinary text. List the plain word instead.
                log.info("%s: %r is an evasion spelling (jamo or look-alikes) and is skipped", entry.source, entry.word)
                skipped += 1
                continue
            bases.append((norm, entry))
            if norm not in table:
                table[norm] = _latin_edges(norm, _Pattern(entry.word, entry.category, _BAN))
        # Variants come after every listed word, so a listed spelling keeps its own entry and category.
        for norm, entry in bases:
            for variant, keyboard in _variants(norm):
                if variant not in table and variant not in allow_norms:
                    pattern = _Pattern(entry.word, entry.category, _BAN, left_latin=keyboard)
                    table[variant] = pattern if keyboard else _latin_edges(variant, pattern)
        jamo_triggers, stretch_triggers = trigger_patterns(text for text, p in table.items() if p.kind == _BAN)
        for trigger in jamo_triggers:
            table.setdefault(trigger, _Pattern("", "", _TRIGGER))
        for trigger in stretch_triggers:
            table.setdefault(trigger, _Pattern("", "", _STRETCH))
        strings = list(table)
        self.patterns = [table[s] for s in strings]
        self.automaton = daachorse.CharwiseDoubleArrayAhoCorasick(strings)
        self.longest = max(map(len, strings))
        self.stats = FilterStats(
            words=len(bases),
            skipped=skipped,
            allowed=len(allow_norms),
            patterns=sum(p.kind in (_BAN, _ALLOW) for p in self.patterns),
            longest=self.longest,
            build_seconds=time.perf_counter() - started,
            files=files,
        )

    def find(self, text: str) -> list[Match]:
        """Matches in ``text``: the fast pass finds candidate places, only their surroundings are analysed."""
        fast = fast_text(text)
        hits = self.automaton.find_overlapping(fast)
        if not hits:
            return []
        found: list[Match] = []
        if "\n" not in fast:
            self._find_in_line(text, 0, fast, hits, found)
            return found
        # fast_text keeps every newline, so line k of ``fast`` is line k of ``text``.
        by_line: dict[int, list[tuple[int, int, int]]] = {}
        for hit in hits:
            by_line.setdefault(fast.count("\n", 0, hit[0]), []).append(hit)
        line, offset, fast_offset = 0, 0, 0
        for want in sorted(by_line):
            while line < want:
                offset = text.index("\n", offset) + 1
                fast_offset = fast.index("\n", fast_offset) + 1
                line += 1
            end, fast_end = text.find("\n", offset), fast.find("\n", fast_offset)
            end = len(text) if end < 0 else end
            fast_end = len(fast) if fast_end < 0 else fast_end
            line_hits = [(s - fast_offset, e - fast_offset, i) for s, e, i in by_line[want]]
            self._find_in_line(text[offset:end], offset, fast[fast_offset:fast_end], line_hits, found)
        return found

    def _find_in_line(
        self, line: str, offset: int, fast: str, hits: list[tuple[int, int, int]], found: list[Match]
    ) -> None:
        """Analyse the words around each hit (the whole line if it has characters that expand, such as ﬁ)."""
        locator = Locator.for_line(line)
        if locator is None:
            found.extend(self.evaluate(analyze(line, offset)))
            return
        # Segments widened to whole words: each match and everything its rules look at lies inside one. A listed
        # word is a hit itself and needs a neighbour either side; an allowed or longer word around it is a hit too,
        # and overlapping segments merge. Jamo composition and stretch folding never cross a space, and a decomposed
        # or stretched word is a chain of overlapping trigger hits; a match made by them can reach `longest` letters
        # beyond the chain.
        spans = []
        for start, end, index in hits:
            margin = 2
            kind = self.patterns[index].kind
            if kind == _STRETCH and " " in line[locator.original(start) : locator.original(start + 1)]:
                continue  # "가 아니라": fast text has no spaces, but stretches never cross one
            if kind >= _TRIGGER:
                margin = self.longest + 1
                while end < len(fast) and fast[end] == fast[end - 1]:
                    end += 1  # a stretch goes on (조오오오오): the match can begin only after it
            spans.append((max(start - margin, 0), min(end + margin, len(fast))))
        spans.sort()
        segments: list[list[int]] = []
        for lo, hi in spans:
            start = line.rfind(" ", 0, locator.original(lo)) + 1
            stop = line.find(" ", locator.original(hi - 1) + 1)
            stop = len(line) if stop < 0 else stop
            if segments and start <= segments[-1][1]:
                segments[-1][1] = max(segments[-1][1], stop)
            else:
                segments.append([start, stop])
        if not segments:
            return
        for start, stop in segments:
            found.extend(self.evaluate(analyze(line[start:stop], offset + start)))

    def evaluate(self, units: Analyzed) -> list[Match]:
        """Apply the matching rules to analysed units (and their folded view); maximal matches, original offsets."""
        return self.evaluate_views(units)[0]

    def evaluate_views(self, units: Analyzed) -> tuple[list[Match], Analyzed]:
        """``evaluate``, plus the view whose units count towards the longest match (folded when anything folds)."""
        hits = self.automaton.find_overlapping(units.text)
        seconds = [
            k for start, _, index in hits if self.patterns[index].kind == _STRETCH for k in (start + 1, start + 2)
        ]
        folded = fold_stretches(units, seconds) if seconds else None
        views = [(units, hits)]
        if folded is not None:
            views.append((folded, self.automaton.find_overlapping(folded.text)))
        allowed: list[tuple[int, int]] = []
        candidates: list[tuple[int, int, _Pattern]] = []
        for view, view_hits in views:
            for start, end, index in view_hits:
                pattern = self.patterns[index]
                if pattern.kind == _ALLOW:
                    allowed.append((view.starts[start], view.ends[end - 1]))
                elif pattern.kind == _BAN and _accept(pattern, start, end, view):
                    candidates.append((view.starts[start], view.ends[end - 1], pattern))
        if allowed:
            candidates = [c for c in candidates if not any(a <= c[0] and c[1] <= b for a, b in allowed)]
        candidates.sort(key=lambda c: (c[0], -c[1]))
        out: list[Match] = []
        reach = -1
        for start, end, pattern in candidates:
            if end <= reach:
                continue  # inside a longer match that starts no later (or the same match in the folded view)
            reach = end
            out.append(Match(pattern.word, pattern.category, start, end))
        return out, folded or units


def _latin_edges(norm: str, pattern: _Pattern) -> _Pattern:
    left, right = is_latin(norm[0]), is_latin(norm[-1])
    if not (left or right):
        return pattern
    return _Pattern(pattern.word, pattern.category, pattern.kind, left_latin=left, right_latin=right)


def _is_digit(c: str) -> bool:
    return "0" <= c <= "9"


def _accept(pattern: _Pattern, start: int, end: int, units: Analyzed) -> bool:
    """The context rules of the module docstring, for one candidate match ``units.text[start:end]``."""
    text, gaps = units.text, units.gaps
    n = len(text)
    if pattern.left_latin and start > 0 and gaps[start] == GAP_NONE and is_latin(text[start - 1]):
        return False
    if pattern.right_latin and end < n and gaps[end] == GAP_NONE and is_latin(text[end]):
        return False
    if _is_digit(text[start]):
        if start > 0 and _is_digit(text[start - 1]) and gaps[start] != GAP_SPACE:
            return False  # 2018년: the digits continue a number
        k = start + 1
        while k < end and _is_digit(text[k - 1]):
            if gaps[k] != GAP_NONE:
                return False  # 18% 새끼, 1.8: the digits do not touch the word they would read as
            k += 1
    if _is_digit(text[end - 1]) and end < n and _is_digit(text[end]) and gaps[end] != GAP_SPACE:
        return False
    last_space = -1
    for k in range(start + 1, end):
        if gaps[k] == GAP_SPACE:
            last_space = k
    if last_space >= 0:
        if gaps[start] != GAP_SPACE:
            return False  # 살며시 발라: starts inside a word
        ends_word = end >= n or gaps[end] != GAP_NONE or text[end] in _PARTICLES
        if not ends_word and end - last_space < 2:
            return False  # 시 발표: the last piece is the start of another word
    return True


def _variants(norm: str) -> Iterable[tuple[str, bool]]:
    """Spellings derived from a banned word: (variant, is_keyboard_form)."""
    if _SUBSTITUTABLE.search(norm):
        yield from ((v, False) for v in _lookalike_variants(norm))
    if len(norm) >= 2:
        keys = keyboard_form(norm)
        if keys is not None and len(keys) >= _KEYBOARD_MIN_KEYS:
            yield keys, True
            if len(norm) >= _INITIALS_MIN_SYLLABLES:
                consonants = initials(norm)
                if consonants and len(set(consonants)) > 1:
                    yield consonants, False


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
    ) -> None:
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
        compiled = _Compiled(banned, allowed, files)
        log.info(
            "word filter built: %d words, %d allowed, %d patterns in %.2fs",
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
        parts.append(_SPACE_OR_NOT.sub(_MASK, text[lo:hi]))
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
