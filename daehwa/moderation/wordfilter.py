"""``WordFilter``: banned words from plain lists, matched with a double-array Aho-Corasick automaton (daachorse).

The filter is four modules besides this one: ``compile`` turns the lists into a ``CompiledFilter`` (with the
spellings ``variants`` derives), ``matching`` searches it and applies the matching rules, and ``compiled_cache``
keeps compiled filters on disk. This module holds the moderator and its stream guard.
"""

from __future__ import annotations

import bisect
import itertools
import logging
import threading
from collections.abc import Iterable, Sequence
from pathlib import Path

from .base import Action, Match, ModerationResult, Moderator, StreamGuard
from .compile import compile_lists, log_skipped
from .compiled_cache import CompiledCache
from .lists import DEFAULT_CATEGORY, ListEntry, builtin_lists, parse_lines, read_list
from .matching import CompiledFilter, FilterStats, mask_text
from .normalize import Analyzed, analyze

log = logging.getLogger(__name__)


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

    def _build(self) -> CompiledFilter:
        word_files, allow_files = list(self._word_files), list(self._allow_files)
        if self._builtin:
            builtin_words, builtin_allow = builtin_lists()
            word_files, allow_files = builtin_words + word_files, builtin_allow + allow_files
        banned = list(itertools.chain.from_iterable(read_list(p) for p in word_files))
        banned += [ListEntry(w, c, "<words>") for w, c in self._words]
        allowed = list(itertools.chain.from_iterable(read_list(p) for p in allow_files))
        allowed += list(parse_lines(self._allowed, source="<allowed>"))
        files = tuple(str(p) for p in (*word_files, *allow_files))
        cache = CompiledCache(self._cache_dir) if self._cache_dir is not None else None
        loaded = cache.get(banned, allowed, files) if cache is not None else None
        if loaded is None:
            compiled, skipped = compile_lists(banned, allowed, files)
            if cache is not None:
                cache.put(banned, allowed, compiled, skipped)
        else:
            compiled, skipped = loaded
        log_skipped(banned, skipped)
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


class WordStreamGuard(StreamGuard):
    """Checks a streamed reply against one automaton (a reload does not change a running stream).

    Text is released as soon as no listed word (banned or allowed) can still start in it. The units (letters or
    syllables) at the end that the next chunk may still change are *unsettled*: the last one when it is jamo, an
    open syllable (조 + 온 may fold to 존) or composed from several characters (ㄱㅏㄴ + ㅏ -> 가나), and a run of
    digits after a Latin letter (sh1 + t -> shit). Before them, the release stops at the first unit from which the
    settled text could still be the beginning of a listed spelling (``CompiledFilter.reach``: the longest spelling
    per first one or two letters), in the plain and in the folded view. A match starting before that point is final
    (its right-hand context is settled text); when one reaches past it, the release extends to the match's end.
    So the guard holds at most ``longest`` units plus the unsettled ones, and usually far less.
    """

    _MAX_HOLD = 4096  # characters; beyond this (a flood of symbols) text is released as it is checked

    def __init__(self, compiled: CompiledFilter, action: Action) -> None:
        self._compiled = compiled
        self._action = action
        self.matches = []
        self._text = ""  # fed text from self._base on (older text is released and no longer needed)
        self._base = 0
        self._decided = 0  # absolute offset up to which matches are final and text is released (or passed)
        self._seen: set[tuple[int, int]] = set()
        self._settled = 0  # every match that starts before this offset is in self.matches
        self._reach = 0  # the end of the furthest match in self.matches
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
            boundary = self._open_from(units, end)
            if view is not units:  # a stretched word (조오오오온나) may be under way in the folded view only
                boundary = min(boundary, self._open_from(view, end))
            newline = text.rfind("\n")
            if newline >= 0:
                boundary = max(boundary, base + newline + 1)  # no match crosses a line break
            if end - max(boundary, self._decided) > self._MAX_HOLD:
                boundary = end - self._MAX_HOLD
        # Every match that starts before the point settled in an earlier step is known: one found again now is the
        # same match, or one that only looks new because the text before it was trimmed (fucking inside a released
        # motherfucking, 새끼 inside a released 새끼 고양이); a new one inside a known match is not maximal.
        seen = self._seen
        decided = [m for m in found if m.start < boundary and ((m.start, m.end) in seen or self._unknown(m))]
        self._settled = max(self._settled, boundary)
        boundary = max([boundary, self._decided, *(m.end for m in decided)])
        released_from = self._decided
        out = ""
        fresh = [m for m in decided if (m.start, m.end) not in seen]
        for m in fresh:
            seen.add((m.start, m.end))
            self.matches.append(m)
            self._reach = max(self._reach, m.end)
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

    def _unknown(self, m: Match) -> bool:
        return m.start >= self._settled and m.end > self._reach

    def _open_from(self, units: Analyzed, end: int) -> int:
        """The offset of the first unit at which a listed spelling may still be under way (``end`` if at none)."""
        text = units.text
        settled = len(text) - _unsettled(units)
        reach = self._compiled.reach
        for start in range(max(settled - self._compiled.longest, 0), settled):
            known = settled - start
            # A spelling this long or longer may begin with text[start:settled] (a complete one still needs the
            # unit after it: its right-hand context). Keyed by at most two letters: sound, if not always tight.
            if reach.get(text[start : start + 2] if known > 1 else text[start], 0) >= known:
                return units.starts[start]
        return units.starts[settled] if settled < len(text) else end

    def _trim(self, units: Analyzed) -> None:
        """Drop text well before the settled point, keeping enough units for context (allowed words, rules)."""
        first_open = bisect.bisect_left(units.starts, self._settled)
        keep_from = first_open - self._compiled.longest - 4
        if keep_from > 0:
            new_base = units.starts[keep_from]
            self._text = self._text[new_base - self._base :]
            self._base = new_base


def _unsettled(units: Analyzed) -> int:
    """How many units at the end of ``units`` the next characters may still change (see ``WordStreamGuard``)."""
    text = units.text
    if not text:
        return 0
    digits = len(text) - len(text.rstrip(_LEET_DIGITS))
    if digits and digits < len(text) and "a" <= text[-digits - 1] <= "z":
        return digits  # digits after a Latin letter read as letters once a letter follows (normalize._LEET_RUN)
    last = text[-1]
    code = ord(last) - _SYLLABLE_BASE
    if "\u3131" <= last <= "\u3163" or units.ends[-1] - units.starts[-1] > 1 or (0 <= code < 11172 and code % 28 == 0):
        return 1  # jamo, composed or folded from several characters, or an open syllable
    return 0


_LEET_DIGITS = "013457"
_SYLLABLE_BASE = 0xAC00


__all__ = ["FilterStats", "WordFilter", "WordStreamGuard", "mask_text"]
