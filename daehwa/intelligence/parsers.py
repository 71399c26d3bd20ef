"""Deterministic parsers for form answers, Korean first and English: dates, times, numbers, phones, emails, choices.

Each parser looks for its kind of value anywhere in a free answer ("다음 주 화요일 저녁 7시에 두 명이요") and returns a
``Parsed`` (the value, where it was found, and whether the reading is unambiguous), a ``Rejected`` (the text looks
like such a value but is not a valid one: "2월 30일", "010-123-456"; ``reason`` is a key of ``REASONS``), or
``None`` (nothing of the kind). They never call a model and never raise on user text.

Reading rules worth knowing (docs/forms.md lists them all):

- "다음 주 화요일" / "next tuesday" is the Tuesday of next calendar week (weeks start on Monday); "이번 주 화요일" that
  of this week; a bare "화요일" the next one from today (today included).
- A month and day without a year is the next such day (today included): on 3 December "1월 5일" is next January.
- "3시" without 오전/오후 is ``sure=False``: the form decides with the field's opening hours (``min``/``max``).
- Korean native numerals count only before a counter ("두 명", "세 시") or as the whole answer ("둘이요"), because
  "네" is also "yes" and "한" starts many words.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, time, timedelta
from typing import Generic, TypeVar

from ..i18n import load_texts

T = TypeVar("T")

#: Why a value was rejected, by reason key (the form re-asks with this text): ``parser_reasons.toml``.
REASONS: dict[str, dict[str, str]] = load_texts("daehwa.intelligence", "parser_reasons.toml")


@dataclass(frozen=True, slots=True)
class Parsed(Generic[T]):
    """A value found in the text: ``span`` is where, ``sure`` False when another reading is plausible."""

    value: T
    span: tuple[int, int]
    sure: bool = True


@dataclass(frozen=True, slots=True)
class Rejected:
    """Text that looks like a value of the kind but is not a valid one; ``reason`` is a key of ``REASONS``."""

    reason: str
    span: tuple[int, int] = (0, 0)


# -- numbers -----------------------------------------------------------------------------------------------------
_NATIVE_UNITS = {
    "하나": 1, "한": 1, "둘": 2, "두": 2, "셋": 3, "세": 3, "석": 3, "서": 3, "넷": 4, "네": 4, "넉": 4, "너": 4,
    "다섯": 5, "닷": 5, "여섯": 6, "엿": 6, "일곱": 7, "여덟": 8, "아홉": 9,
}  # fmt: skip
_NATIVE_TENS = {"열": 10, "스물": 20, "스무": 20, "서른": 30, "마흔": 40, "쉰": 50}
_SINO_DIGITS = {"영": 0, "공": 0, "일": 1, "이": 2, "삼": 3, "사": 4, "오": 5, "육": 6, "칠": 7, "팔": 8, "구": 9}
_SINO_UNITS = {"십": 10, "백": 100, "천": 1000}
_ENGLISH_NUMBERS = {
    "one": 1, "two": 2, "three": 3, "four": 4, "five": 5, "six": 6, "seven": 7, "eight": 8, "nine": 9, "ten": 10,
    "eleven": 11, "twelve": 12, "thirteen": 13, "fourteen": 14, "fifteen": 15, "sixteen": 16, "seventeen": 17,
    "eighteen": 18, "nineteen": 19, "twenty": 20, "a couple of": 2, "a couple": 2, "couple": 2,
}  # fmt: skip

_UNITS_ALT = "|".join(sorted(_NATIVE_UNITS, key=len, reverse=True))
_TENS_ALT = "|".join(sorted(_NATIVE_TENS, key=len, reverse=True))
_NATIVE = rf"(?:(?:{_TENS_ALT})(?:{_UNITS_ALT})?|(?:{_UNITS_ALT}))"
_SINO = r"[일이삼사오육칠팔구십백천]+"
_ENGLISH_ALT = "|".join(sorted(_ENGLISH_NUMBERS, key=len, reverse=True))
_ENGLISH = rf"\b(?:{_ENGLISH_ALT})\b"
#: Counters that follow a count of people or things ("두 명", "4인", "세 사람").
PEOPLE_COUNTERS = ("명", "분", "사람", "인", "people", "persons", "person", "guests", "guest", "pax")
#: Native numerals that only come before a counter; alone, "네" is "yes" and "한" is no answer.
_PRENOMINAL = frozenset({"한", "두", "세", "네", "석", "서", "넉", "너", "닷", "엿", "스무"})
_SOLO = {"혼자": 1, "혼자서": 1, "둘이서": 2, "둘이": 2, "셋이서": 3, "셋이": 3, "넷이서": 4, "넷이": 4}


def native_number(word: str) -> int | None:
    """A Korean native numeral ("스물다섯", "두", "열한") as an int, else None."""
    for tens_word, tens in sorted(_NATIVE_TENS.items(), key=lambda kv: -len(kv[0])):
        if word.startswith(tens_word):
            rest = word[len(tens_word) :]
            if not rest:
                return tens
            unit = _NATIVE_UNITS.get(rest)
            return None if unit is None else tens + unit
    return _NATIVE_UNITS.get(word)


def sino_number(word: str) -> int | None:
    """A Sino-Korean numeral ("이십사", "십이", "백") as an int, else None."""
    if not word or any(ch not in _SINO_DIGITS and ch not in _SINO_UNITS for ch in word):
        return None
    total, digit = 0, None
    for ch in word:
        if ch in _SINO_UNITS:
            total += (digit if digit is not None else 1) * _SINO_UNITS[ch]
            digit = None
        else:
            if digit is not None:
                return None  # two digits in a row ("이삼") is not a numeral
            digit = _SINO_DIGITS[ch]
    return total + (digit or 0)


def _number_word(word: str) -> int | None:
    word = word.strip().lower()
    if word.isdigit():
        return int(word)
    if word in _ENGLISH_NUMBERS:
        return _ENGLISH_NUMBERS[word]
    return native_number(word) if native_number(word) is not None else sino_number(word)


_ANSWER_TAIL = re.compile(r"(?:\s*(?:이요|요|입니다|이에요|예요|에요|이야|야|이|요\.|[.!~?,]))+$")


def strip_answer(text: str) -> str:
    """The answer without polite endings and punctuation: "둘이요." -> "둘", "김민수입니다" -> "김민수"."""
    return _ANSWER_TAIL.sub("", text.strip()).strip()


def parse_number(
    text: str, *, counters: Sequence[str] = PEOPLE_COUNTERS, bare: bool = True
) -> Parsed[int] | Rejected | None:
    """A count: "4명", "두 명", "스물다섯 분", "party of 4", "혼자"; with ``bare`` also a lone "4" / "둘이요".

    Two different numbers with a counter ("2명이나 3명") are ``Rejected("ambiguous_number")``.
    """
    counter_alt = "|".join(re.escape(c) for c in sorted(counters, key=len, reverse=True))
    found: list[Parsed[int]] = []
    span = re.search(
        rf"(\d+|{_NATIVE})\s*(?:~|-|에서|or|내지)\s*(\d+|{_NATIVE})\s*(?:{counter_alt or '$'})", text, re.I
    )
    if span:
        return Rejected("ambiguous_number", span.span())
    if counter_alt:
        pattern = re.compile(
            rf"(?<![가-힣])(\d+|{_NATIVE}|{_SINO}|{_ENGLISH})\s*(?:{counter_alt})(?![a-z]|위기|간|석)", re.I
        )
        for m in pattern.finditer(text):
            value = _number_word(m.group(1))
            if value is not None:
                found.append(Parsed(value, m.span()))
        party = re.search(r"(?:party|table) (?:of|for) (\d+|" + _ENGLISH_ALT + r")\b", text, re.I)
        if party:
            value = _number_word(party.group(1))
            if value is not None:
                found.append(Parsed(value, party.span()))
    for word, value in _SOLO.items():
        solo = re.search(rf"(?<![가-힣]){word}(?![가-힣])|(?<![가-힣]){word}(?=서|요|\s|$)", text)
        if solo and not any(p.span[0] <= solo.start() < p.span[1] for p in found):
            found.append(Parsed(value, solo.span()))
            break
    values = {p.value for p in found}
    if len(values) > 1:
        return Rejected("ambiguous_number", found[0].span)
    if found:
        return found[0]
    if not bare:
        return None
    whole = strip_answer(text)
    value = _number_word(whole) if whole and whole not in _PRENOMINAL else None
    if value is not None:
        start = text.find(whole)
        return Parsed(value, (start, start + len(whole)))
    digits = re.findall(r"(?<![\d:./-])\d{1,6}(?![\d:./-])", text)
    if len(set(digits)) == 1:
        first = re.search(r"(?<![\d:./-])\d{1,6}(?![\d:./-])", text)
        assert first is not None
        return Parsed(int(digits[0]), first.span(), sure=len(digits) == 1)
    if len(set(digits)) > 1:
        return Rejected("ambiguous_number")
    return None


# -- dates -------------------------------------------------------------------------------------------------------
_WEEKDAYS_KO = "월화수목금토일"
_WEEKDAYS_EN = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_MONTHS_EN = (
    "january", "february", "march", "april", "may", "june",
    "july", "august", "september", "october", "november", "december",
)  # fmt: skip
_RELATIVE_KO = {
    "그저께": -2,
    "그제": -2,
    "어제": -1,
    "오늘": 0,
    "금일": 0,
    "내일": 1,
    "낼": 1,
    "명일": 1,
    "내일모레": 2,
    "모레": 2,
    "낼모레": 2,
    "글피": 3,
}
_RELATIVE_EN = {
    "yesterday": -1,
    "today": 0,
    "tonight": 0,
    "tomorrow": 1,
    "the day after tomorrow": 2,
    "day after tomorrow": 2,
}
_WEEK_KO = re.compile(
    r"(?:(?P<week>이번\s*주|이번주|금주|이주|다음\s*주|담주|차주|다다음\s*주|저번\s*주|지난\s*주)\s*)?"
    r"(?P<day>[월화수목금토일])\s*(?:요일|욜)"
)
_WEEK_EN = re.compile(
    r"\b(?:(?P<week>this|next|coming)\s+(?:week\s+)?)?(?P<day>mon|tue|wed|thu|fri|sat|sun)[a-z]*\b", re.I
)
_YMD = re.compile(r"(?<!\d)(?P<y>\d{4})\s*[-./년]\s*(?P<m>\d{1,2})\s*[-./월]\s*(?P<d>\d{1,2})\s*일?(?!\d)")
_MD_KO = re.compile(rf"(?P<m>\d{{1,2}}|{_SINO})\s*월\s*(?P<d>\d{{1,2}}|[일이삼사오육칠팔구십]{{1,4}})\s*일")
_MD_SLASH = re.compile(r"(?<![\d/.:-])(?P<m>\d{1,2})\s*[/.]\s*(?P<d>\d{1,2})(?![\d/.:-])(?!\s*(?:시|:|명|분))")
_MD_EN = re.compile(
    r"\b(?P<mon>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)[a-z]*\.?\s+(?P<d>\d{1,2})(?:st|nd|rd|th)?\b"
    r"|\b(?P<d2>\d{1,2})(?:st|nd|rd|th)?\s+(?:of\s+)?(?P<mon2>jan|feb|mar|apr|may|jun|jul|aug|sep|sept|oct|nov|dec)"
    r"[a-z]*\b",
    re.I,
)
_IN_DAYS = re.compile(
    r"(?<![가-힣])(?:(?P<n>\d+|[이삼사오육칠팔구십][일이삼사오육칠팔구십]*)\s*일|(?P<w>하루|이틀|사흘|나흘|닷새|엿새|이레|일주일|열흘))"
    r"\s*(?:후|뒤|있다가)"
    r"|\bin\s+(?P<en>\d+|a|one|two|three|four|five|six|seven)\s+(?P<unit>days?|weeks?)\b",
    re.I,
)
_DAYS_WORDS = {"하루": 1, "이틀": 2, "사흘": 3, "나흘": 4, "닷새": 5, "엿새": 6, "이레": 7, "일주일": 7, "열흘": 10}
_DAY_ONLY = re.compile(r"(?<![\d월/.])(?P<d>\d{1,2})\s*일(?![가-힣])|(?<![\d월/.])(?P<d2>\d{1,2})\s*일(?=에|이|요|로)")


def _monday(day: date) -> date:
    return day - timedelta(days=day.weekday())


def _month_day(
    today: date, month: int, day: int, span: tuple[int, int], year: int | None = None
) -> Parsed[date] | Rejected:
    if not 1 <= month <= 12:
        return Rejected("no_such_date", span)
    try:
        if year is not None:
            return Parsed(date(year, month, day), span)
        candidate = date(today.year, month, day)
    except ValueError:
        if year is None and month == 2 and day == 29:
            for y in range(today.year + 1, today.year + 5):
                try:
                    return Parsed(date(y, 2, 29), span)
                except ValueError:
                    continue
        return Rejected("no_such_date", span)
    if candidate < today:
        try:
            candidate = date(today.year + 1, month, day)
        except ValueError:
            return Rejected("no_such_date", span)
    return Parsed(candidate, span)


def parse_date(text: str, today: date) -> Parsed[date] | Rejected | None:
    """A day: "오늘", "내일", "모레", "다음 주 화요일", "금요일", "12월 24일", "십이월 이십사일", "12/24", "2026-12-24",
    "3일 후", "tomorrow", "next friday", "Dec 24", "24th of December", "in 3 days"."""
    lowered = text.lower()
    m = _YMD.search(text)
    if m:
        return _month_day(today, int(m["m"]), int(m["d"]), m.span(), year=int(m["y"]))
    m = _MD_KO.search(text)
    if m:
        month, day = _number_word(m["m"]), _number_word(m["d"])
        if month is None or day is None:
            return Rejected("no_such_date", m.span())
        year = today.year + 1 if "내년" in text else (today.year if "올해" in text else None)
        return _month_day(today, month, day, m.span(), year=year)
    m = _MD_EN.search(text)
    if m:
        mon = (m["mon"] or m["mon2"]).lower()
        month = next(i for i, name in enumerate(_MONTHS_EN, 1) if name.startswith(mon[:3]))
        return _month_day(today, month, int(m["d"] or m["d2"]), m.span())
    m = _IN_DAYS.search(text)
    if m:
        n: int | None
        if m["w"]:
            n = _DAYS_WORDS[m["w"]]
        elif m["n"]:
            n = _number_word(m["n"])
        else:
            n = 1 if m["en"].lower() in ("a", "one") else _number_word(m["en"])
            if n is not None and m["unit"].lower().startswith("week"):
                n *= 7
        if n is not None:
            return Parsed(today + timedelta(days=n), m.span())
    for word, offset in sorted(_RELATIVE_KO.items(), key=lambda kv: -len(kv[0])):
        i = text.find(word)
        if i >= 0:
            return Parsed(today + timedelta(days=offset), (i, i + len(word)))
    for word, offset in sorted(_RELATIVE_EN.items(), key=lambda kv: -len(kv[0])):
        m = re.search(rf"\b{word}\b", lowered)
        if m:
            return Parsed(today + timedelta(days=offset), m.span())
    m = _WEEK_KO.search(text)
    weekday: int | None = None
    week = ""
    if m:
        weekday, week = _WEEKDAYS_KO.index(m["day"]), re.sub(r"\s", "", m["week"] or "")
    else:
        m = _WEEK_EN.search(text)
        if m and _is_weekday_word(m.group(0)):
            weekday = [d[:3] for d in _WEEKDAYS_EN].index(m["day"].lower()[:3])
            week = {"this": "이번주", "next": "다음주", "coming": ""}.get((m["week"] or "").lower(), "")
    if m is not None and weekday is not None:
        offset_weeks = {
            "이번주": 0, "금주": 0, "이주": 0, "다음주": 1, "담주": 1, "차주": 1, "다다음주": 2, "저번주": -1,
            "지난주": -1,
        }.get(week)  # fmt: skip
        if offset_weeks is None:
            ahead = (weekday - today.weekday()) % 7
            return Parsed(today + timedelta(days=ahead), m.span())
        return Parsed(_monday(today) + timedelta(weeks=offset_weeks, days=weekday), m.span())
    m = _MD_SLASH.search(text)
    if m:
        return _month_day(today, int(m["m"]), int(m["d"]), m.span())
    m = _DAY_ONLY.search(text)
    if m:
        day = int(m["d"] or m["d2"])
        try:
            candidate = today.replace(day=day)
        except ValueError:
            return Rejected("no_such_date", m.span())
        if candidate < today:
            nxt = (today.replace(day=1) + timedelta(days=32)).replace(day=1)
            try:
                candidate = nxt.replace(day=day)
            except ValueError:
                return Rejected("no_such_date", m.span())
        return Parsed(candidate, m.span(), sure=False)
    return None


def _is_weekday_word(word: str) -> bool:
    last = word.split()[-1].lower()
    return any(d.startswith(last) or last == d[:3] for d in _WEEKDAYS_EN) or last in ("tues", "thur", "thurs")


# -- times -------------------------------------------------------------------------------------------------------
_HOUR_WORDS = "열두|열한|열|한|두|세|네|다섯|여섯|일곱|여덟|아홉"
_MERIDIEM_KO = r"오전|오후|아침|낮|점심|저녁|밤|새벽"
_TIME_KO = re.compile(
    rf"(?:(?P<mer>{_MERIDIEM_KO})\s*)?(?P<h>\d{{1,2}}|{_HOUR_WORDS}|{_SINO})\s*시(?!간|작|계|험|도|장|청|기|대)"
    r"\s*(?:(?P<half>반)|(?P<min>\d{1,2}|[일이삼사오육칠팔구십]+)\s*분)?"
)
_TIME_COLON = re.compile(
    r"(?:(?P<mer>오전|오후|아침|낮|저녁|밤|새벽)\s*)?(?<![\d:])(?P<h>\d{1,2}):(?P<min>\d{2})(?![\d:])\s*(?P<ampm>[ap]\.?m\.?)?",
    re.I,
)
_TIME_EN = re.compile(
    r"\b(?P<h>\d{1,2}|one|two|three|four|five|six|seven|eight|nine|ten|eleven|twelve)(?:[:.](?P<min>\d{2}))?"
    r"\s*(?P<ampm>[ap]\.?m\b\.?|o'?clock|in the (?:morning|afternoon|evening)|at night)",
    re.I,
)
_TIME_NAMED = {"정오": time(12, 0), "자정": time(0, 0), "noon": time(12, 0), "midnight": time(0, 0)}


def _with_meridiem(hour: int, meridiem: str | None) -> tuple[int, bool]:
    """The 24-hour hour and whether the reading is sure."""
    if meridiem is None:
        return (hour, hour == 0 or hour >= 13)
    m = meridiem.lower().replace(".", "")
    if m in ("오후", "저녁", "pm", "in the afternoon", "in the evening", "at night"):
        return (hour + 12 if hour < 12 else hour, True)
    if m == "밤":
        return ((hour + 12) % 24 if hour < 12 and hour >= 6 else (0 if hour == 12 else hour), True)
    if m in ("낮", "점심"):
        return (hour + 12 if 1 <= hour <= 6 else hour, True)
    if m in ("오전", "아침", "새벽", "am", "in the morning"):
        return (0 if hour == 12 else hour, True)
    return (hour, False)  # "o'clock"


def parse_time(text: str) -> Parsed[time] | Rejected | None:
    """A time of day: "3시 반", "오후 7시", "저녁 일곱 시", "7시 30분", "19:30", "7pm", "7:30 p.m.", "정오"."""
    for word, value in _TIME_NAMED.items():
        i = text.lower().find(word)
        if i >= 0:
            return Parsed(value, (i, i + len(word)))
    for pattern in (_TIME_COLON, _TIME_KO, _TIME_EN):
        m = pattern.search(text)
        if not m:
            continue
        hour = _number_word(m["h"])
        groups = m.groupdict()
        minute_word = groups.get("min")
        minute = 30 if groups.get("half") else (_number_word(minute_word) if minute_word else 0)
        if hour is None or minute is None:
            return Rejected("no_such_time", m.span())
        if hour > 24 or minute > 59 or (hour == 24 and minute):
            return Rejected("no_such_time", m.span())
        meridiem = groups.get("mer") or groups.get("ampm")
        if meridiem and hour > 12:
            meridiem = None  # "오후 19시": the 24-hour number decides
        hour24, sure = _with_meridiem(hour % 24 if hour == 24 else hour, meridiem)
        return Parsed(time(hour24, minute), m.span(), sure=sure)
    return None


def resolve_hour(value: time, earliest: time | None, latest: time | None) -> time:
    """An hour read without 오전/오후 ("3시"): the PM reading when only it falls in the opening hours."""
    if value.hour >= 12 or earliest is None or latest is None:
        return value
    pm = value.replace(hour=value.hour + 12)
    fits = earliest <= value <= latest
    pm_fits = earliest <= pm <= latest
    return pm if pm_fits and not fits else value


# -- phones and emails -------------------------------------------------------------------------------------------
_PHONE = re.compile(r"(?<![\d+])(?:\+?82[-.\s]?)?\(?0?\d{1,3}\)?(?:[-.\s]?\d{3,4}){1,2}(?!\d)")
_PHONE_LIKE = re.compile(r"(?<!\d)(?:\+?82|0)\d?[\d\-.\s]{5,}\d(?!\d)")


def format_phone(digits: str) -> str | None:
    """Korean phone digits in their usual dashes ("01012345678" -> "010-1234-5678"), or None if not a number."""
    if digits.startswith("82"):
        digits = "0" + digits[2:].lstrip("0")
    if re.fullmatch(r"01[016789]\d{7,8}", digits):
        return f"{digits[:3]}-{digits[3:-4]}-{digits[-4:]}"
    if re.fullmatch(r"02\d{7,8}", digits):
        return f"02-{digits[2:-4]}-{digits[-4:]}"
    if re.fullmatch(r"0(?:[3-6][1-5]|70|50\d)\d{7,8}", digits):
        head = 4 if digits.startswith("050") else 3
        return f"{digits[:head]}-{digits[head:-4]}-{digits[-4:]}"
    if re.fullmatch(r"1[5-9]\d{6}", digits):  # 1588-1234
        return f"{digits[:4]}-{digits[4:]}"
    return None


def parse_phone(text: str) -> Parsed[str] | Rejected | None:
    """A Korean phone number: "010-1234-5678", "01012345678", "010 1234 5678", "+82 10-1234-5678", "02-123-4567"."""
    for m in _PHONE_LIKE.finditer(text):
        raw = m.group(0)
        digits = re.sub(r"\D", "", raw)
        formatted = format_phone(digits)
        if formatted is not None:
            return Parsed(formatted, m.span())
        if digits.startswith(("01", "02", "03", "04", "05", "06", "07", "82")) and len(digits) >= 7:
            return Rejected("phone_digits", m.span())
    service = re.search(r"(?<!\d)1[5-9]\d{2}-\d{4}(?!\d)", text)
    if service:
        return Parsed(service.group(0), service.span())
    return None


_EMAIL = re.compile(r"[A-Za-z0-9._%+-]+@[A-Za-z0-9-]+(?:\.[A-Za-z0-9-]+)*\.[A-Za-z]{2,}")
_EMAIL_LIKE = re.compile(r"\S+@\S*")


def parse_email(text: str) -> Parsed[str] | Rejected | None:
    """An email address (lower-cased domain); "@" without a valid address around it is rejected."""
    m = _EMAIL.search(text)
    if m:
        local, _, domain = m.group(0).partition("@")
        if ".." in local or local.startswith(".") or local.endswith("."):
            return Rejected("email_invalid", m.span())
        return Parsed(f"{local}@{domain.lower()}", m.span())
    m = _EMAIL_LIKE.search(text)
    if m:
        return Rejected("email_invalid", m.span())
    return None


# -- choices and intents -----------------------------------------------------------------------------------------
def _fold(text: str) -> str:
    return re.sub(r"\s+", "", text.casefold())


def parse_choice(text: str, options: Sequence[tuple[str, Sequence[str]]]) -> Parsed[str] | None:
    """The option (value, its words) whose word occurs in the text; None when none or several do."""
    folded = _fold(text)
    hits = {value for value, words in options if any(_fold(w) and _fold(w) in folded for w in (value, *words))}
    if len(hits) == 1:
        return Parsed(hits.pop(), (0, len(text)))
    return None


_YES = re.compile(
    r"^\s*(?:네(?!\s*(?:명|분|시|사람|개|번))|넵|넹|예(?!약)|응|ㅇㅇ|어\s*맞아|맞아|맞습니다|맞아요|좋아요|좋습니다|그래요|그렇습니다"
    r"|확인|진행|예약\s*해\s*주세요|예약할게요|오케이|ok|okay|yes|yep|yeah|sure|correct|confirm|right)",
    re.I,
)
_NO = re.compile(r"^\s*(?:아니|아뇨|아니요|아닙니다|틀려|틀렸|no\b|nope|not\b|wrong|incorrect)", re.I)
_SKIP = re.compile(
    r"^\s*(?:없어요|없습니다|없음|없어|없네요|딱히\s*없|특별히\s*없|괜찮습니다|건너뛰|패스|스킵|skip|none|nothing|no\b|n/a|아니요|아뇨|아니)",
    re.I,
)
_CANCEL = re.compile(r"(?:예약\s*)?(?:취소|그만\s*할래|그만할게|그만둘|cancel|stop\b|never\s*mind)", re.I)
_RESTART = re.compile(
    r"(?:새\s*예약|새로\s*(?:예약|시작)|다시\s*(?:시작|예약)|처음부터|another|new\s+(?:one|booking|reservation)|start\s+over|restart)",
    re.I,
)
_CORRECTION = re.compile(
    r"(?:바꿔|바꿀|변경|수정|고쳐|고칠|말고|아니라|정정|change|instead|actually|correct(?:ion)?\b|make it)", re.I
)


def is_yes(text: str) -> bool:
    return bool(_YES.search(text)) and not _NO.search(text)


def is_no(text: str) -> bool:
    return bool(_NO.search(text))


def is_skip(text: str) -> bool:
    return bool(_SKIP.search(text))


def is_cancel(text: str) -> bool:
    return bool(_CANCEL.search(text))


def is_restart(text: str) -> bool:
    return bool(_RESTART.search(text))


def is_correction(text: str) -> bool:
    return bool(_CORRECTION.search(text))


_NAME_PREFIX = re.compile(
    r"^(?:제\s*이름은|저는|전|이름은|성함은|예약자는|예약자\s*이름은|예약자명은"
    r"|my name is|i am|i'm|it's|name is|this is)\s*",
    re.I,
)
_NAME_SUFFIX = re.compile(
    r"(?:\s*(?:입니다|이에요|예요|이요|요|이고요|이구요|으로\s*해\s*주세요|로\s*해\s*주세요|이라고\s*합니다|라고\s*합니다|[.!~,]))+$"
)


def parse_text(text: str, *, name_like: bool = False) -> str:
    """A free-text answer cleaned of what frames it; with ``name_like``, "제 이름은 김민수입니다" -> "김민수"."""
    value = text.strip()
    if name_like:
        value = _NAME_PREFIX.sub("", value)
        value = _NAME_SUFFIX.sub("", value).strip()
    return value.strip()
