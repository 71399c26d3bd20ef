"""The deterministic form parsers: many Korean (and English) forms, edge cases and invalid input."""

from __future__ import annotations

from datetime import date, time

import pytest

from daehwa.intelligence import parsers
from daehwa.intelligence.parsers import Parsed, Rejected

TODAY = date(2026, 12, 3)  # a Thursday


def value(result: object) -> object:
    assert isinstance(result, Parsed), result
    return result.value


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("오늘", date(2026, 12, 3)),
        ("내일이요", date(2026, 12, 4)),
        ("낼 갈게요", date(2026, 12, 4)),
        ("모레", date(2026, 12, 5)),
        ("내일모레 저녁", date(2026, 12, 5)),
        ("글피", date(2026, 12, 6)),
        ("다음 주 화요일", date(2026, 12, 8)),
        ("다음주 금욜", date(2026, 12, 11)),
        ("담주 월요일", date(2026, 12, 7)),
        ("다다음 주 수요일", date(2026, 12, 16)),
        ("이번 주 토요일", date(2026, 12, 5)),
        ("금요일에요", date(2026, 12, 4)),
        ("목요일", date(2026, 12, 3)),  # a bare weekday is the next one, today included
        ("수요일", date(2026, 12, 9)),
        ("12월 24일", date(2026, 12, 24)),
        ("12월24일 저녁", date(2026, 12, 24)),
        ("십이월 이십사일", date(2026, 12, 24)),
        ("십이월 삼십일일", date(2026, 12, 31)),
        ("일월 일일", date(2027, 1, 1)),
        ("1월 5일", date(2027, 1, 5)),  # no year: the next such day
        ("12월 1일", date(2027, 12, 1)),
        ("2026-12-25", date(2026, 12, 25)),
        ("2027년 3월 1일", date(2027, 3, 1)),
        ("2027.3.1", date(2027, 3, 1)),
        ("12/31", date(2026, 12, 31)),
        ("3일 후", date(2026, 12, 6)),
        ("이틀 뒤", date(2026, 12, 5)),
        ("일주일 후", date(2026, 12, 10)),
        ("tomorrow", date(2026, 12, 4)),
        ("the day after tomorrow", date(2026, 12, 5)),
        ("next friday", date(2026, 12, 11)),
        ("this saturday", date(2026, 12, 5)),
        ("Dec 24th", date(2026, 12, 24)),
        ("24 December", date(2026, 12, 24)),
        ("the 24th of december", date(2026, 12, 24)),
        ("in 2 weeks", date(2026, 12, 17)),
        ("2월 29일", date(2028, 2, 29)),  # the next leap day
    ],
)
def test_dates(text: str, expected: date) -> None:
    assert value(parsers.parse_date(text, TODAY)) == expected


def test_a_bare_day_of_month_is_not_sure_and_rolls_to_next_month() -> None:
    found = parsers.parse_date("15일에 갈게요", TODAY)
    assert isinstance(found, Parsed) and found.value == date(2026, 12, 15) and not found.sure
    assert value(parsers.parse_date("2일에요", TODAY)) == date(2027, 1, 2)


@pytest.mark.parametrize("text", ["2월 30일", "13월 1일", "4월 31일", "2026-02-30"])
def test_impossible_dates_are_rejected(text: str) -> None:
    assert parsers.parse_date(text, TODAY) == Rejected("no_such_date", parsers.parse_date(text, TODAY).span)  # type: ignore[union-attr]


@pytest.mark.parametrize("text", ["좋아요", "김민수", "010-1234-5678", "두 명", "", "월요병", "오후 6시 30분"])
def test_no_date(text: str) -> None:
    assert parsers.parse_date(text, TODAY) is None


@pytest.mark.parametrize(
    ("text", "expected", "sure"),
    [
        ("오후 7시", time(19, 0), True),
        ("저녁 일곱 시", time(19, 0), True),
        ("저녁 7시 반", time(19, 30), True),
        ("오전 11시 반", time(11, 30), True),
        ("낮 1시", time(13, 0), True),
        ("점심 12시", time(12, 0), True),
        ("밤 10시", time(22, 0), True),
        ("19:30", time(19, 30), True),
        ("18시 15분", time(18, 15), True),
        ("7pm", time(19, 0), True),
        ("7:30 p.m.", time(19, 30), True),
        ("11 am", time(11, 0), True),
        ("정오", time(12, 0), True),
        ("3시 반", time(3, 30), False),  # no 오전/오후: the form's opening hours decide
        ("7시 30분", time(7, 30), False),
        ("세 시", time(3, 0), False),
    ],
)
def test_times(text: str, expected: time, sure: bool) -> None:
    found = parsers.parse_time(text)
    assert isinstance(found, Parsed) and (found.value, found.sure) == (expected, sure)


def test_hours_without_meridiem_take_the_reading_inside_opening_hours() -> None:
    opens, closes = time(11, 30), time(21, 0)
    assert parsers.resolve_hour(time(7, 0), opens, closes) == time(19, 0)
    assert parsers.resolve_hour(time(11, 45), opens, closes) == time(11, 45)
    assert parsers.resolve_hour(time(3, 30), None, None) == time(3, 30)


@pytest.mark.parametrize("text", ["25시", "7시 75분", "24:30"])
def test_impossible_times_are_rejected(text: str) -> None:
    assert isinstance(parsers.parse_time(text), Rejected)


@pytest.mark.parametrize("text", ["한 시간 뒤에 갈게요", "시작할게요", "두 명"])
def test_no_time(text: str) -> None:
    assert parsers.parse_time(text) is None


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("두 명", 2),
        ("4명이요", 4),
        ("세 명 예약할게요", 3),
        ("인원은 네 명", 4),
        ("열두 명", 12),
        ("스물다섯 분", 25),
        ("4인이요", 4),
        ("혼자요", 1),
        ("둘이요", 2),
        ("둘이서 갈게요", 2),
        ("다섯", 5),
        ("4", 4),
        ("party of 4", 4),
        ("three people", 3),
        ("7시에 4명", 4),  # the hour is not a count
    ],
)
def test_counts(text: str, expected: int) -> None:
    assert value(parsers.parse_number(text)) == expected


def test_yes_is_not_four() -> None:
    assert parsers.parse_number("네") is None
    assert parsers.parse_number("한") is None


@pytest.mark.parametrize("text", ["2명이나 3명", "2~3명", "3 4"])
def test_two_counts_are_ambiguous(text: str) -> None:
    assert parsers.parse_number(text) == Rejected("ambiguous_number", parsers.parse_number(text).span)  # type: ignore[union-attr]


def test_bare_numbers_count_only_when_asked() -> None:
    assert parsers.parse_number("4", bare=False) is None
    assert value(parsers.parse_number("4명", bare=False)) == 4


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("010-1234-5678", "010-1234-5678"),
        ("01012345678", "010-1234-5678"),
        ("010 1234 5678", "010-1234-5678"),
        ("010.9876.5432 입니다", "010-9876-5432"),
        ("+82 10-1234-5678", "010-1234-5678"),
        ("82-10-1234-5678", "010-1234-5678"),
        ("011-123-4567", "011-123-4567"),
        ("02-123-4567", "02-123-4567"),
        ("031-123-4567", "031-123-4567"),
        ("번호는 1588-1234", "1588-1234"),
    ],
)
def test_phones(text: str, expected: str) -> None:
    assert value(parsers.parse_phone(text)) == expected


@pytest.mark.parametrize("text", ["010-123-456", "0101234567890", "010-12-5678"])
def test_phones_with_wrong_digits_are_rejected(text: str) -> None:
    found = parsers.parse_phone(text)
    assert isinstance(found, Rejected) and found.reason == "phone_digits"


@pytest.mark.parametrize("text", ["12월 24일", "두 명", "2026-12-24"])
def test_no_phone(text: str) -> None:
    assert parsers.parse_phone(text) is None


def test_emails() -> None:
    assert value(parsers.parse_email("kim@naver.com")) == "kim@naver.com"
    assert value(parsers.parse_email("제 메일은 Kim.Lee@Example.CO.KR 이에요")) == "Kim.Lee@example.co.kr"
    assert isinstance(parsers.parse_email("kim@naver"), Rejected)
    assert isinstance(parsers.parse_email("kim..lee@naver.com"), Rejected)
    assert parsers.parse_email("없어요") is None


def test_choices() -> None:
    options = [("hall", ("홀",)), ("window", ("창가", "창문")), ("room", ("룸", "방"))]
    assert value(parsers.parse_choice("창가 자리요", options)) == "window"
    assert value(parsers.parse_choice("ROOM please", options)) == "room"
    assert parsers.parse_choice("창가나 룸", options) is None  # two options: not a choice
    assert parsers.parse_choice("아무데나", options) is None


@pytest.mark.parametrize("text", ["네", "넵", "네, 맞아요", "맞아요", "응", "예약해 주세요", "yes", "OK"])
def test_yes(text: str) -> None:
    assert parsers.is_yes(text)


@pytest.mark.parametrize("text", ["네 명이요", "아니요", "예약 시간 바꿀래요", "no"])
def test_not_yes(text: str) -> None:
    assert not parsers.is_yes(text)


def test_intents() -> None:
    assert parsers.is_no("아니요, 틀렸어요") and parsers.is_no("nope")
    assert parsers.is_skip("없어요") and parsers.is_skip("딱히 없습니다") and parsers.is_skip("skip")
    assert parsers.is_cancel("예약 취소할게요") and parsers.is_cancel("cancel")
    assert parsers.is_restart("새 예약 할게요") and parsers.is_restart("start over")
    assert parsers.is_correction("인원 3명으로 바꿔 주세요") and parsers.is_correction("금요일 말고 토요일")
    assert not parsers.is_correction("내일 7시")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("제 이름은 김민수입니다", "김민수"),
        ("홍길동이요", "홍길동"),
        ("김민수예요", "김민수"),
        ("예약자는 이영희로 해 주세요", "이영희"),
        ("my name is John Park", "John Park"),
    ],
)
def test_names(text: str, expected: str) -> None:
    assert parsers.parse_text(text, name_like=True) == expected


def test_korean_numerals() -> None:
    assert parsers.native_number("스물다섯") == 25 and parsers.native_number("열한") == 11
    assert (
        parsers.sino_number("이십사") == 24 and parsers.sino_number("십") == 10 and parsers.sino_number("백이") == 102
    )
    assert parsers.sino_number("이삼") is None and parsers.native_number("가나") is None
