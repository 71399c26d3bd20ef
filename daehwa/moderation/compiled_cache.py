"""The compiled cache: compiled filters on disk, so a restart or reload with unchanged lists skips the build."""

from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import logging
import marshal
import os
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import daachorse

from .lists import ListEntry
from .matching import CompiledFilter, FilterStats

log = logging.getLogger(__name__)

# Bump when the cache file layout changes; changes to the code are covered by hashing its source (see code_version).
CACHE_FORMAT = 2
CACHE_KEEP = 3  # compiled filters kept in the cache directory (each is about 25 MB for 100k words)


def dump(compiled: CompiledFilter, skipped: list[tuple[int, str]]) -> bytes:
    """A compiled filter as bytes for ``load`` (marshal and daachorse's own format: no code is unpickled)."""
    stats = compiled.stats
    meta = (stats.words, stats.allowed, stats.patterns, skipped, compiled.longest, compiled.compose_by_search)
    return marshal.dumps((CACHE_FORMAT, meta, compiled.patterns, compiled.reach, compiled.automaton.serialize()))


def load(data: bytes, files: tuple[str, ...], started: float) -> tuple[CompiledFilter, list[tuple[int, str]]]:
    """The inverse of ``dump``; raises ValueError (or what marshal or daachorse raise) on foreign data."""
    loaded = marshal.loads(data)
    if loaded[0] != CACHE_FORMAT:
        raise ValueError(f"cache format {loaded[0]}")
    _, meta, patterns, reach, automaton = loaded
    words, allowed, count, skipped, longest, compose_by_search = meta
    stats = FilterStats(words, len(skipped), allowed, count, longest, time.perf_counter() - started, files, True)
    automaton = daachorse.CharwiseDoubleArrayAhoCorasick.deserialize(automaton)
    return CompiledFilter(patterns, automaton, longest, compose_by_search, stats, reach), skipped


class CompiledCache:
    """Compiled filters on disk, named by a hash of the lists' words and categories and of the filter's own code.

    A file is a SHA-256 of its payload followed by the payload (``dump``); a file that fails the check or does not
    load is ignored and rebuilt. Writes go to a temporary file renamed into place, so a reader never sees
    half a file, and only the newest few files are kept.
    """

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def path(self, banned: Sequence[ListEntry], allowed: Sequence[ListEntry]) -> Path:
        digest = hashlib.sha256(code_version())
        for entries in (banned, allowed):
            # word and category only: where an entry came from does not change the automaton
            digest.update("\x1e".join(e[0] + "\x1f" + e[1] for e in entries).encode("utf-8", "surrogatepass"))
            digest.update(b"\x1d")
        return self.directory / f"{digest.hexdigest()[:32]}.filter"

    def get(
        self, banned: Sequence[ListEntry], allowed: Sequence[ListEntry], files: tuple[str, ...]
    ) -> tuple[CompiledFilter, list[tuple[int, str]]] | None:
        started = time.perf_counter()
        path = self.path(banned, allowed)
        try:
            raw = path.read_bytes()
        except OSError:
            return None
        try:
            if hashlib.sha256(raw[32:]).digest() != raw[:32]:
                raise ValueError("checksum mismatch")
            return load(raw[32:], files, started)
        except Exception as exc:  # a damaged or foreign file: rebuild, never fail the start
            log.warning("word filter cache %s is unusable (%s); rebuilding", path, exc)
            return None

    def put(
        self,
        banned: Sequence[ListEntry],
        allowed: Sequence[ListEntry],
        compiled: CompiledFilter,
        skipped: list[tuple[int, str]],
    ) -> None:
        path = self.path(banned, allowed)
        try:
            self.directory.mkdir(parents=True, exist_ok=True)
            payload = dump(compiled, skipped)
            temporary = path.with_suffix(f".tmp{threading.get_ident()}")
            temporary.write_bytes(hashlib.sha256(payload).digest() + payload)
            os.replace(temporary, path)
            old = sorted(self.directory.glob("*.filter"), key=lambda p: p.stat().st_mtime, reverse=True)
            for stale in old[CACHE_KEEP:]:
                stale.unlink(missing_ok=True)
        except OSError as exc:  # a read-only or full disk costs the next start a build, nothing more
            log.warning("word filter cache %s cannot be written (%s): the next start builds again", path, exc)


@functools.cache
def code_version() -> bytes:
    """What the compiled form depends on besides the lists: the filter's code and the daachorse version."""
    here = Path(__file__).parent
    digest = hashlib.sha256(importlib.metadata.version("daachorse").encode())
    for name in ("compile.py", "matching.py", "variants.py", "compiled_cache.py", "normalize.py", "lists.py"):
        digest.update((here / name).read_bytes())
    return digest.digest()
