"""Spellings derived from each banned word: look-alikes (c발, 18, 십8), keyboard forms (tlqkf), initial consonants.

Each spelling gets *edges*: the sides on which it has a Latin letter and so needs a word boundary to match.
"""

from __future__ import annotations

import itertools
import operator
import re
from collections.abc import Sequence

from .normalize import initials, is_latin, keyboard_form, lines_matching, syllable_parts

# Look-alike spellings generated from each banned word: 씨발 -> c발 / 18, 지랄 -> g랄, 십팔 -> 십8.
_SUBSTITUTES = {"씨": ("c",), "시": ("c",), "지": ("g",), "발": ("8",), "팔": ("8",), "빨": ("8",), "십": ("10",),
                "씹": ("10", "18")}  # fmt: skip
_PAIR_SUBSTITUTES = {"씨발": "18", "시발": "18", "씨팔": "18", "시팔": "18", "씹팔": "18", "십팔": "18"}
_MAX_VARIANTS = 16
_SUBSTITUTABLE = re.compile("[" + "".join(_SUBSTITUTES) + "]")
# Words a number is read with; "18" + one of these is a quantity (18년, 18억, 18세), never a generated variant.
_COUNTERS = frozenset("년억만천백원살세시분초명개번대일월주층호회등위점도차장권편골표배평리키")
# Initial-consonant forms are generated only from words this long; shorter ones (ㅅㅂ, ㅂㅅ) come from the lists,
# because two-letter abbreviations collide with everyday ones (ㄱㅅ = 감사, ㅈㅅ = 죄송).
_INITIALS_MIN_SYLLABLES = 3
_KEYBOARD_MIN_KEYS = 4

LEFT_LATIN, RIGHT_LATIN = 1, 2  # edges: the pattern needs a word boundary on that side (it has a Latin letter there)


def derive_variants(norms: Sequence[str]) -> tuple[list[int], list[str], list[int]]:
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
    edges += itertools.repeat(LEFT_LATIN, len(typed))  # typed from a Korean word: a boundary on the left only
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


def _edges(norm: str) -> int:
    if norm[0] > "z" and norm[-1] > "z":
        return 0  # Hangul at both ends: the usual case, decided without the calls below
    return (LEFT_LATIN if is_latin(norm[0]) else 0) | (RIGHT_LATIN if is_latin(norm[-1]) else 0)


def edges_of(norms: list[str]) -> list[int]:
    """``_edges`` of every word in ``norms`` (none empty), by C-level maps over their first and last letters."""
    left = map(_LATIN.__contains__, map(operator.itemgetter(0), norms))
    right = map(_LATIN.__contains__, map(operator.itemgetter(-1), norms))
    return list(map(operator.or_, left, map(operator.lshift, right, itertools.repeat(1))))


_LATIN = frozenset("abcdefghijklmnopqrstuvwxyz")
assert (LEFT_LATIN, RIGHT_LATIN) == (1, 2)  # edges_of builds the bits as left | right << 1
