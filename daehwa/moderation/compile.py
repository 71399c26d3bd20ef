"""Word lists compiled into a ``CompiledFilter``: normalise, skip unusable entries, add variants, build automaton."""

from __future__ import annotations

import itertools
import logging
import operator
import re
import time
from collections.abc import Iterable, Iterator, Sequence

import daachorse

from .lists import ListEntry
from .matching import ALLOW, BAN, STRETCH, TRIGGER, CompiledFilter, FilterStats, Pattern, prefix_reach
from .normalize import lines_matching, normalize_many, normalize_words, trigger_patterns
from .variants import derive_variants, edges_of

log = logging.getLogger(__name__)

# Letters outside Hangul, ASCII and the compatibility jamo in a list entry: full-width, enclosed, look-alike forms.
_OTHER_LETTERS = re.compile(r"[^\x00-\x7f\u3131-\u3163\uac00-\ud7a3\s]")

NO_LETTERS, EVASION = "no letters", "evasion"


def compile_lists(
    banned: Sequence[ListEntry], allowed: Sequence[ListEntry], files: tuple[str, ...]
) -> tuple[CompiledFilter, list[tuple[int, str]]]:
    """Normalise the lists, derive the variants and build the automaton; also returns the skipped entries."""
    started = time.perf_counter()
    allowed_table: dict[str, Pattern] = {}
    for entry, (norm, _) in zip(allowed, normalize_words([e.word for e in allowed]), strict=True):
        if norm:
            allowed_table[norm] = (ALLOW, entry.word, entry.category, 0)
    allow_norms = allowed_table.keys()
    skipped: list[tuple[int, str]] = []  # (index in banned, reason), logged by log_skipped
    words = list(map(operator.itemgetter(0), banned))
    joined = "\n".join(words)
    if joined.count("\n") == len(words) - 1:
        evasive = set(lines_matching(_OTHER_LETTERS, joined))
    else:  # a word given through the API holds a line break: check one by one
        evasive = {i for i, word in enumerate(words) if _OTHER_LETTERS.search(word)}
    norms, decomposed = normalize_many(words)
    reasons = dict.fromkeys(sorted(evasive.union(decomposed)), EVASION)
    # "ㅆ1", "ㄷㅐ출" or "㉻㉶" are evasion spellings the normaliser undoes itself; normalised they would be plain
    # words (씨, 대출, 하자) that fire on ordinary text. List the plain word instead.
    reasons.update(dict.fromkeys(itertools.compress(itertools.count(), map(operator.not_, norms)), NO_LETTERS))
    if reasons:
        skipped = sorted(reasons.items())
        keep = bytearray(b"\x01") * len(norms)
        for i in reasons:
            keep[i] = 0
        norms, banned = list(itertools.compress(norms, keep)), list(itertools.compress(banned, keep))
    # Patterns, first come first served: allowed words, then listed words, then variants (so a listed spelling
    # keeps its own entry and category). Built as dicts from reversed sequences, where the first one wins.
    variant_owners, variants, variant_edges = derive_variants(norms)
    owners = map(banned.__getitem__, variant_owners)
    table = _first_wins(variants, _records(owners, variant_edges))
    table.update(_first_wins(norms, _records(banned, edges_of(norms))))
    table.update(allowed_table)
    jamo_triggers, stretch_triggers = trigger_patterns([text for text in table if text not in allow_norms])
    listed = len(table)  # banned and allowed spellings; the triggers come next
    # A jamo pair that is itself a listed pattern would hide its trigger; then every hit is checked for one.
    compose_by_search = any(trigger in table for trigger in jamo_triggers)
    for trigger in jamo_triggers:
        table.setdefault(trigger, (TRIGGER, "", "", 0))
    for trigger in stretch_triggers:
        table.setdefault(trigger, (STRETCH, "", "", 0))
    strings = list(table)
    patterns = list(table.values())
    automaton = daachorse.CharwiseDoubleArrayAhoCorasick(strings)
    longest = max(map(len, strings))
    reach = prefix_reach(strings[:listed])  # banned and allowed spellings: what a stream guard waits for
    stats = FilterStats(
        words=len(norms),
        skipped=len(skipped),
        allowed=len(allow_norms),
        patterns=listed,
        longest=longest,
        build_seconds=time.perf_counter() - started,
        files=files,
    )
    return CompiledFilter(patterns, automaton, longest, compose_by_search, stats, reach), skipped


def _first_wins(keys: list[str], values: Iterable[Pattern]) -> dict[str, Pattern]:
    """``{key: value}`` where a repeated key keeps its first value (one C-level pass instead of a test per key)."""
    return dict(zip(reversed(keys), reversed(list(values)), strict=True))


def _records(entries: Iterable[ListEntry], edges: Iterable[int]) -> Iterator[Pattern]:
    """Banned pattern records for ``entries`` (word, category) with their ``edges``, built by C-level iterators."""
    entries = list(entries)
    words, categories = map(operator.itemgetter(0), entries), map(operator.itemgetter(1), entries)
    return zip(itertools.repeat(BAN), words, categories, edges)


def log_skipped(banned: Sequence[ListEntry], skipped: list[tuple[int, str]]) -> None:
    """Say which list entries a build skipped and why (``skipped`` holds indexes into ``banned``)."""
    for index, reason in skipped:
        entry = banned[index]
        if reason == NO_LETTERS:
            log.warning("%s: %r has no letters after normalisation and is ignored", entry.source, entry.word)
        else:
            log.info("%s: %r is an evasion spelling (jamo or look-alikes) and is skipped", entry.source, entry.word)
