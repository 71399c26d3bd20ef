"""Form definitions from persona TOML, and the state machine: ask one field at a time, extract from free answers,
re-ask with the reason, confirm, correct any field, complete."""

from __future__ import annotations

import tomllib
from datetime import date
from pathlib import Path

import pytest

from daehwa.errors import ConfigError
from daehwa.intelligence.extract import parse_answer
from daehwa.intelligence.forms import FormMachine, FormSpec, FormState, Step, parse_form, particles, progress
from daehwa.personas import PersonaCatalog
from daehwa.personas.persona import parse_persona

TODAY = date(2026, 12, 3)
BUILTIN = Path(__file__).resolve().parents[1] / "daehwa" / "personas" / "builtin" / "reservation.toml"


@pytest.fixture
def spec() -> FormSpec:
    form = PersonaCatalog.load().get("reservation").form
    assert form is not None
    return form


def run(spec: FormSpec, answers: list[str], state: FormState | None = None) -> tuple[FormState, list[Step]]:
    machine = FormMachine(spec)
    state = state or machine.start()
    steps = []
    for answer in answers:
        step = machine.advance(state, answer, parse_answer(spec, state, answer, TODAY), TODAY)
        steps.append(step)
        state = step.state
    return state, steps


def test_the_builtin_reservation_form(spec: FormSpec) -> None:
    assert [f.name for f in spec.fields] == ["date", "time", "party", "name", "phone", "seat"]
    assert [f.type for f in spec.fields] == ["date", "time", "number", "text", "phone", "choice"]
    assert not spec.field("seat").required and spec.field("party").maximum == 12


def test_one_sentence_fills_several_fields_and_the_next_missing_one_is_asked(spec: FormSpec) -> None:
    state, [step] = run(spec, ["다음 주 금요일 저녁 7시에 두 명이요"])
    assert state.values == {"date": "2026-12-11", "time": "19:00", "party": 2}
    assert state.asking == "name" and step.reply is not None
    assert step.reply.endswith("예약자 성함을 알려 주세요.")
    assert "인원 2명으로 적어 둘게요" in step.reply


def test_each_invalid_value_is_reasked_with_its_reason(spec: FormSpec) -> None:
    state, steps = run(spec, ["어제", "12월 32일", "내년 12월 24일", "1월 20일 새벽 3시", "오후 2시", "스무 명"])
    replies = [s.reply or "" for s in steps]
    assert "지난 날짜는 선택할 수 없어요" in replies[0]
    assert "그런 날짜는 없어요" in replies[1]
    assert "60일 이내" in replies[2] or "그런 날짜" in replies[2]
    assert "11:30 이후로만" in replies[3] and "몇 시에" in replies[3]  # the date was taken, the time refused
    assert state.values["date"] == "2027-01-20" and state.values["time"] == "14:00"
    assert "12 이하여야 해요" in replies[5] and state.asking == "party"
    assert steps[5].errors == {"party": "too_large"}


def test_an_answer_that_is_not_understood_is_asked_again(spec: FormSpec) -> None:
    state, [step] = run(spec, ["음... 잘 모르겠어요"])
    assert step.reply is not None and step.reply.startswith("죄송해요, 날짜를 알아듣지 못했어요.")
    assert state.asking == "date" and state.values == {}


def test_optional_fields_can_be_skipped_and_confirmation_lists_everything(spec: FormSpec) -> None:
    state, steps = run(spec, ["내일 12시 4명", "박지성", "010-2222-3333", "없어요"])
    assert state.status == "confirming" and state.skipped == ["seat"]
    reply = steps[-1].reply or ""
    assert "- 좌석: 없음" in reply and "- 연락처: 010-2222-3333" in reply and '맞으면 "네"' in reply


def test_corrections_confirm_and_complete(spec: FormSpec) -> None:
    state, _ = run(spec, ["내일 12시 4명", "박지성", "010-2222-3333", "룸으로요"])
    state, steps = run(spec, ["아니요", "날짜", "모레", "금요일 말고 토요일로 해 주세요", "네"], state)
    assert "어떤 항목을 고칠까요?" in (steps[0].reply or "")
    assert steps[1].reply == "어느 날짜로 예약할까요? (예: 내일, 다음 주 금요일, 12월 24일)"
    assert "12월 5일 (토)" in (steps[2].reply or "")
    assert state.values["date"] == "2026-12-05" and state.values["seat"] == "room"
    assert steps[-1].completed and state.status == "done" and steps[-1].reply is None


def test_a_given_value_is_not_replaced_by_an_answer_about_something_else(spec: FormSpec) -> None:
    state, _ = run(spec, ["12월 24일 7시 2명"])
    state, _ = run(spec, ["내일 연락 주세요, 김민수입니다"], state)  # "내일" here is not a new date
    assert state.values["date"] == "2026-12-24"
    assert "김민수" in state.values["name"]


def test_english_answers_get_english_questions(spec: FormSpec) -> None:
    state, steps = run(spec, ["next friday at 7pm for 2 people", "John Park", "010-1234-5678", "window please", "yes"])
    assert steps[0].reply == "Noted: date Fri Dec 11, time 7:00 PM, party size 2 people. Under what name?"
    assert steps[-1].completed and state.values["seat"] == "window" and state.values["name"] == "John Park"


def test_cancel_then_restart(spec: FormSpec) -> None:
    state, steps = run(spec, ["내일 7시", "취소"])
    assert state.status == "cancelled" and "취소했어요" in (steps[-1].reply or "")
    state, steps = run(spec, ["고마워요"], state)
    assert steps[0].reply is None  # the model answers; the form is not started again by itself
    state, _ = run(spec, ["새로 예약할게요"], state)
    assert state.status == "collecting" and state.values == {}


def test_state_round_trips_through_meta_and_ignores_another_forms(spec: FormSpec) -> None:
    state, _ = run(spec, ["내일 7시 2명"])
    again = FormState.from_meta(state.to_meta(), spec)
    assert again is not None and again.to_meta() == state.to_meta()
    assert FormState.from_meta({**state.to_meta(), "form": "other"}, spec) is None
    assert FormState.from_meta({"form": "reservation", "values": {"unknown": 1}}, spec).values == {}  # type: ignore[union-attr]


def test_progress(spec: FormSpec) -> None:
    state, _ = run(spec, ["내일 7시 2명"])
    shown = progress(spec, state, "ko")
    assert (shown["filled"], shown["total"], shown["next"], shown["done"]) == (3, 6, "name", False)
    assert shown["fields"][0]["display"] == "12월 4일 (금)" and shown["fields"][3]["value"] is None
    assert progress(spec, None, "en")["started"] is False


def test_particles() -> None:
    assert particles("날짜") == {"eul": "를", "ro": "로"}
    assert particles("인원 2명") == {"eul": "을", "ro": "으로"}
    assert particles("오후 7시")["ro"] == "로"
    assert particles("John")["ro"] == "(으)로"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"fields": []}, "at least one"),
        ({"fields": [{"name": "x", "type": "colour", "prompt": "?"}]}, "type must be one of"),
        ({"fields": [{"name": "x", "type": "text"}]}, "needs prompt"),
        ({"fields": [{"name": "x", "type": "choice", "prompt": "?"}]}, "no choices"),
        ({"fields": [{"name": "x", "prompt": "?"}, {"name": "x", "prompt": "?"}]}, "unique"),
        ({"fields": [{"name": "t", "type": "time", "min": "7pm", "prompt": "?"}]}, "HH:MM"),
        ({"fields": [{"name": "x", "prompt": "?"}], "webhook": "ftp://x"}, "webhook must be"),
        ({"fields": [{"name": "x", "prompt": "?", "colour": 1}]}, "unknown keys"),
    ],
)
def test_bad_form_tables_name_the_fix(table: dict[str, object], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_form(table, "test.toml")


def test_a_persona_file_with_a_form() -> None:
    data = tomllib.loads(BUILTIN.read_text(encoding="utf-8"))
    persona = parse_persona(data, "reservation.toml")
    assert persona.form is not None and persona.form.name == "reservation"
    assert parse_persona({"name": "x", "system": "hi"}, "x.toml").form is None
