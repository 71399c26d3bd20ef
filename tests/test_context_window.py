"""The window, the summary and the recalled excerpts: which messages are sent, in what order, within the budget."""

from __future__ import annotations

import dataclasses
import json

import pytest

from daehwa.context.limits import Budget
from daehwa.context.policy import ContextPolicy
from daehwa.context.report import ContextReport
from daehwa.context.summary import (
    MIN_BATCH,
    Entry,
    Summary,
    extended,
    language_of,
    pending,
    still_valid,
    summary_prompt,
)
from daehwa.context.tokens import EstimateTokenizer, count_message_tokens
from daehwa.context.window import WINDOW_STEP, Recalled, assemble, select_window
from daehwa.errors import ConfigError, InvalidRequest

TOK = EstimateTokenizer()


def history(n: int, text: str = "message number {i} about something") -> list[Entry]:
    return [Entry(f"m{i}", "user" if i % 2 == 0 else "assistant", text.format(i=i)) for i in range(n)]


def budget(tokens: int) -> Budget:
    return Budget(tokens=tokens, window=tokens + 1024, reply_tokens=1024, cap=None)


def test_everything_that_fits_is_sent_when_no_count_limit_applies():
    costs, roles = [10] * 10, ["user", "assistant"] * 5
    assert select_window(costs, roles, room=1000, recent_messages=0) == 0
    assert select_window(costs, roles, room=1000, recent_messages=10) == 0


def test_a_count_limited_window_moves_in_steps_and_opens_with_a_user_message():
    roles = ["user", "assistant"] * 20
    starts = [select_window([10] * n, roles[:n], room=10_000, recent_messages=16) for n in range(17, 40, 2)]
    assert all(s % 2 == 0 for s in starts)  # never an assistant first
    assert all(n - s >= 16 for n, s in zip(range(17, 40, 2), starts, strict=True))
    assert all(n - s < 16 + WINDOW_STEP for n, s in zip(range(17, 40, 2), starts, strict=True))
    assert len(set(starts)) < len(starts)  # it stays put for a few turns (the prompt's start stays cached)


def test_the_budget_limits_the_window_and_the_reserve_is_kept_free():
    costs, roles = [100] * 20, ["user", "assistant"] * 10
    assert select_window(costs, roles, room=1000) == 10
    assert select_window(costs, roles, room=1000, reserve=300) == 14  # 7 messages fit in 700, then a user first


def test_a_message_too_long_for_the_budget_is_an_error_naming_the_setting():
    with pytest.raises(InvalidRequest, match="DAEHWA_CONTEXT_MAX_TOKENS") as caught:
        select_window([5000], ["user"], room=1000)
    assert caught.value.code == "context_length_exceeded"


def test_assemble_puts_the_summary_in_the_system_prompt_and_excerpts_right_before_the_question():
    h = history(30)
    summary = Summary("c", "m0", "m11", 12, "The user asked about Seoul's weather.", "fake/echo")
    recalled = [Recalled((h[4], h[5]), 0.42)]
    messages, report = assemble(
        "You are helpful.",
        h,
        window_start=14,
        tokenizer=TOK,
        budget=budget(3000),
        policy=ContextPolicy(),
        summary=summary,
        recalled=recalled,
    )
    assert messages[0].role == "system" and messages[0].content.startswith("You are helpful.")
    assert "Seoul's weather" in messages[0].content and "12 messages" in messages[0].content
    assert messages[-1].content == h[-1].content
    assert messages[-2].role == "system" and "quoted, not new messages" in messages[-2].content
    assert "message number 4" in messages[-2].content and "message number 5" in messages[-2].content
    assert [m.content for m in messages[1:-2]] == [e.content for e in h[14:-1]]
    assert report.dropped == 14
    assert [m.id for m in report.messages] == [e.id for e in h[14:]]
    assert report.summary is not None and (report.summary.first_id, report.summary.last_id) == ("m0", "m11")
    assert report.recalled[0].ids == ("m4", "m5") and report.recalled[0].score == 0.42
    assert report.tokens == count_message_tokens(messages, TOK) <= 3000
    assert report.tokens == report.system_tokens + sum(m.tokens for m in report.messages) + sum(
        r.tokens for r in report.recalled
    ) + TOK.prompt_overhead(messages)
    assert not report.exact and report.tokenizer == "estimate" and report.policy == "summary+recall+recent"
    assert ContextReport.from_dict(report.as_dict()) == report
    with_mood = dataclasses.replace(report, mood={"label": "joy", "scores": {"joy": 0.9}})
    for one in (report, with_mood):  # the hand-written as_dict is the JSON of every field, as asdict would give
        assert one.as_dict() == json.loads(json.dumps(dataclasses.asdict(one)))


def test_the_recent_only_policy_sends_neither_summary_nor_excerpts():
    h = history(30)
    summary = Summary("c", "m0", "m11", 12, "S", "m")
    messages, report = assemble(
        None,
        h,
        window_start=14,
        tokenizer=TOK,
        budget=budget(3000),
        policy=ContextPolicy.parse("recent"),
        summary=summary,
        recalled=[Recalled((h[4], h[5]), 0.4)],
    )
    assert [m.content for m in messages] == [e.content for e in h[14:]]
    assert report.summary is None and report.recalled == () and report.policy == "recent"


def test_excerpts_that_do_not_fit_are_left_out_with_a_note():
    h = history(20, text="{i} " + "긴 문장 " * 60)
    _, report = assemble(
        None,
        h,
        window_start=16,
        tokenizer=TOK,
        budget=budget(1200),
        policy=ContextPolicy(),
        recalled=[Recalled((h[0], h[1]), 0.5), Recalled((h[2], h[3]), 0.4)],
    )
    assert report.tokens <= 1200
    assert len(report.recalled) < 2
    assert any("left out" in n for n in report.notes)


def test_korean_conversations_get_korean_labels():
    h = history(10, text="서울 날씨 {i}")
    messages, _ = assemble(
        None,
        h,
        window_start=4,
        tokenizer=TOK,
        budget=budget(3000),
        policy=ContextPolicy(),
        summary=Summary("c", "m0", "m3", 4, "요약", "m"),
        recalled=[Recalled((h[0], h[1]), 0.3)],
        language="ko",
    )
    assert messages[0].content.startswith("[이전 대화 요약")
    assert "인용이며 새 메시지가 아닙니다" in messages[-2].content and "사용자: 서울 날씨 0" in messages[-2].content


def test_policies_parse_and_name_the_setting_when_wrong():
    assert ContextPolicy.parse("summary+recall+recent") == ContextPolicy()
    assert ContextPolicy.parse("recall").summary is False
    assert ContextPolicy.parse("recent, summary").name == "summary+recent"
    with pytest.raises(ConfigError, match=r"DAEHWA_CONTEXT_POLICY.*summary, recall, recent"):
        ContextPolicy.parse("everything", where="DAEHWA_CONTEXT_POLICY")


# -- summaries -----------------------------------------------------------------------------------------------------
def test_a_summary_is_due_once_enough_messages_left_the_window_and_only_new_ones_are_asked_for():
    h = history(40)
    assert pending(h, MIN_BATCH - 1, None) is None
    first = pending(h, 12, None)
    assert first is not None and [e.id for e in first] == [f"m{i}" for i in range(12)]
    summary = extended(None, first, conversation_id="c", text=" S1 ", model="m")
    assert (summary.first_id, summary.last_id, summary.messages, summary.text) == ("m0", "m11", 12, "S1")
    assert pending(h, 14, summary) is None  # only 2 new messages left the window
    more = pending(h, 20, summary)
    assert more is not None and [e.id for e in more] == [f"m{i}" for i in range(12, 20)]
    bigger = extended(summary, more, conversation_id="c", text="S2", model="m")
    assert (bigger.first_id, bigger.last_id, bigger.messages) == ("m0", "m19", 20)


def test_a_summary_that_covered_a_deleted_message_is_no_longer_valid():
    h = history(40)
    summary = Summary("c", "m0", "m11", 12, "S", "m")
    assert still_valid(summary, h)
    assert not still_valid(summary, h[:11])  # edited back past m11
    assert not still_valid(summary, h[:5] + h[6:])  # a message inside the covered range is gone
    assert not still_valid(None, h)
    assert pending(h[:5] + h[6:], 12, summary) is not None  # written again from the start


def test_summary_prompts_follow_the_conversation_language_and_extend_the_previous_summary():
    entries = [Entry("m0", "user", "서울 날씨 알려줘"), Entry("m1", "assistant", "맑고 15도입니다.")]
    assert language_of([e.content for e in entries]) == "ko"
    assert language_of(["What is the weather in Seoul?"]) == "en"
    ko = summary_prompt(None, entries, language="ko")
    assert ko[0].role == "system" and "한국어" in ko[0].content
    assert "사용자: 서울 날씨 알려줘" in ko[1].content and "어시스턴트: 맑고 15도입니다." in ko[1].content
    previous = Summary("c", "m0", "m1", 2, "이전 요약 내용", "m")
    extend = summary_prompt(previous, entries, language="ko")
    assert "지금까지의 요약:\n이전 요약 내용" in extend[1].content
    en = summary_prompt(previous, [Entry("m2", "user", "x" * 5000)], language="en")
    assert "Summary so far:" in en[1].content and len(en[1].content) < 2000  # long messages are cut
