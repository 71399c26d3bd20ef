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

from .base import Action, ModerationResult, Moderator, StreamGuard
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

    Text is released once no banned word can still reach into it: everything before the last ``longest + 2``
    normalised units (a unit is a letter or syllable; spaces and symbols between units are held with them).
    A match found before that point is final; when one reaches past it, the release extends to the match's end.
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


__all__ = ["FilterStats", "WordFilter", "WordStreamGuard", "mask_text"]
