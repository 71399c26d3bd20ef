"""Remembered interests: the nouns and noun phrases a user keeps talking about, counted with decay over time.

Extraction: Korean with ``kiwipiepy`` (nouns NNG/NNP and foreign words SL; runs of them form noun phrases such as
"파이썬 성능"), English with a comparable light method (words that are not stop words, and adjacent pairs of them).

Decay without a clock in the store: an addition of ``c`` at time ``t`` is stored as ``c * 2 ** ((t - EPOCH) /
half_life)``, so a plain sum (``score = score + inc``, atomic in every backend) ranks exactly like decayed counts,
and the decayed weight at ``now`` is ``score / 2 ** ((now - EPOCH) / half_life)``. With a 30-day half-life the
scale stays a normal float for centuries.
"""

from __future__ import annotations

import functools
import itertools
import re
from collections import Counter
from collections.abc import Iterable, Sequence
from datetime import UTC, datetime
from typing import Any

from ..stores.base import InterestRecord

EPOCH = datetime(2026, 1, 1, tzinfo=UTC)
HALF_LIFE_DAYS = 30.0

_CLAUSE = re.compile(r"[,.;:!?()\n]+")
_HANGUL = re.compile(r"[\uac00-\ud7a3]")
_EN_WORD = re.compile(r"[A-Za-z][A-Za-z0-9+#.\-]*[A-Za-z0-9+#]|[A-Za-z]{3,}")
# Words that say little about a person's interests (English function words and chat filler).
_EN_STOP_WORDS = """
a about above after again against all am an and any are aren't as at be because been before being below between
both but by can cannot could did do does doing don't down during each few for from further had has have having
he her here hers herself him himself his how i if in into is isn't it it's its itself just let me more most my
myself no nor not now of off on once only or other our ours ourselves out over own same she should so some such
than that the their theirs them themselves then there these they this those through to too under until up very
was we were what when where which while who whom why will with would you your yours yourself yourselves hi hello
hey thanks thank please yes yeah okay ok sure really much many lot lots thing things stuff something anything
everything way want need like know think tell help make get got use using used give show explain write try love
like loves liked enjoy going doing done today tomorrow yesterday time day week also still even well good bad
great new old one two first last can't i'm i've you're that's there's what's how's let's could would should
"""
EN_STOP = frozenset(_EN_STOP_WORDS.split())
# Korean nouns too general to be an interest.
_KO_STOP_WORDS = """
것 수 때 거 등 좀 저 제 나 너 우리 이것 그것 저것 여기 거기 오늘 내일 어제 요즘 지금 정도
관심 질문 답변 설명 방법 생각 사람 경우 부분 문제 내용 사용 이번 다음 하나 뭐 무엇 누구 어디
언제 감사 안녕
"""
KO_STOP = frozenset(_KO_STOP_WORDS.split())
_KO_NOUN_TAGS = frozenset({"NNG", "NNP", "SL", "SH"})


@functools.cache
def _kiwi() -> Any:
    """One Kiwi per process (read-only model, ~200 MB, 5 s to load): shared by every service in the process."""
    from kiwipiepy import Kiwi

    return Kiwi()


class InterestExtractor:
    """Terms of one message; ``kiwipiepy`` loads on first Korean use (about 5 s once, on the caller's thread)."""

    def __init__(self, *, max_terms: int = 12) -> None:
        self.max_terms = max_terms

    @staticmethod
    def available() -> bool:
        import importlib.util

        return importlib.util.find_spec("kiwipiepy") is not None

    def _tokenizer(self) -> Any:
        return _kiwi()

    def extract(self, text: str) -> Counter[str]:
        """Term -> count for one message (noun phrases count as well as their nouns)."""
        text = text[:1000]
        terms: Counter[str] = Counter()
        if _HANGUL.search(text) and self.available():
            terms.update(self._korean(text))
        else:
            terms.update(english_terms(text))
        return Counter(dict(terms.most_common(self.max_terms)))

    def _korean(self, text: str) -> list[str]:
        out: list[str] = []
        run: list[str] = []
        for token in [*self._tokenizer().tokenize(text), None]:
            tag = getattr(token, "tag", None)
            if token is not None and tag == "XSN" and run:  # 최적 + 화 -> 최적화
                run[-1] += token.form
                continue
            if token is not None and tag in _KO_NOUN_TAGS:
                form = token.form.lower() if tag == "SL" else token.form
                if (len(form) >= 2 or tag == "NNP") and form not in KO_STOP and form not in EN_STOP:
                    run.append(form)
                    continue
            if run:
                out.extend(run)
                out.extend(f"{a} {b}" for a, b in itertools.pairwise(run))  # noun phrases: adjacent pairs...
                if len(run) == 3:
                    out.append(" ".join(run))  # ...and a run of three
                run = []
        return out


def english_terms(text: str) -> list[str]:
    """Content words (not stop words, 3+ letters) and adjacent pairs of them ("query planner") within a clause."""
    out: list[str] = []
    for clause in _CLAUSE.split(text):
        run: list[str] = []
        for match in _EN_WORD.finditer(clause):
            word = match.group(0).lower().strip(".-")
            if len(word) >= 3 and word not in EN_STOP and not word.isdigit():
                run.append(word)
            else:
                _flush(run, out)
        _flush(run, out)
    return out


def _flush(run: list[str], out: list[str]) -> None:
    if not run:
        return
    out.extend(run)
    out.extend(f"{a} {b}" for a, b in itertools.pairwise(run))
    run.clear()


def scale(now: datetime, half_life_days: float = HALF_LIFE_DAYS) -> float:
    """The factor an addition made at ``now`` is stored with (see the module docstring)."""
    return float(2.0 ** ((now - EPOCH).total_seconds() / 86400.0 / half_life_days))


def increments(counts: Counter[str], now: datetime, half_life_days: float = HALF_LIFE_DAYS) -> dict[str, float]:
    f = scale(now, half_life_days)
    return {term: n * f for term, n in counts.items()}


def decayed(records: Iterable[InterestRecord], now: datetime, half_life_days: float = HALF_LIFE_DAYS) -> list[Any]:
    """``(term, weight now)`` of stored records, strongest first."""
    f = scale(now, half_life_days)
    return sorted(((r.term, r.score / f) for r in records), key=lambda x: -x[1])


def top_terms(records: Sequence[InterestRecord], n: int, *, min_weight: float = 1.5) -> list[str]:
    """The strongest ``n`` terms worth mentioning, longer phrases preferred over the nouns they contain."""
    now = datetime.now(UTC)
    picked: list[str] = []
    ranked = sorted(decayed(records, now), key=lambda x: (-round(x[1], 6), -x[0].count(" ")))
    for term, weight in ranked:
        if weight < min_weight:
            break
        if any(term in p.split(" ") for p in picked if " " in p):
            continue
        picked.append(term)
        if len(picked) >= n:
            break
    return picked


def interests_sentence(terms: Sequence[str], locale: str) -> str:
    if locale == "ko":
        return f"사용자는 {', '.join(terms)}에 관심이 많습니다. 도움이 될 때 자연스럽게 참고하세요."
    return f"The user is very interested in {', '.join(terms)}. Draw on this when it helps, without forcing it."
