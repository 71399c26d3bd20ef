"""The form step through the real pipeline with the fake provider: ask, re-ask with the reason, correct, confirm,
complete (the record stored), the webhook retried against a local HTTP server, and a dead webhook not blocking."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from daehwa.config import Settings
from daehwa.pipeline import TurnRequest
from daehwa.providers.registry import ProviderRegistry
from daehwa.services import Services, build_services
from daehwa.types import User

from .conftest import FakeProvider, Script

TODAY = date(2026, 12, 3)  # a Thursday
BUILTIN = Path(__file__).resolve().parents[1] / "daehwa" / "personas" / "builtin" / "reservation.toml"


class Hook:
    """A local webhook endpoint that fails the first ``failures`` calls with 503."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.bodies: list[dict[str, Any]] = []
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                hook.bodies.append(body)
                self.send_response(503 if len(hook.bodies) <= hook.failures else 204)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hook() -> Iterator[Hook]:
    h = Hook(failures=2)
    yield h
    h.close()


def booking_persona(tmp_path: Path, url: str, retries: int = 3) -> Path:
    text = BUILTIN.read_text(encoding="utf-8").replace(
        'name = "reservation"\ntitle = { ko = "예약 도우미"', 'name = "booking"\ntitle = { ko = "예약 도우미"', 1
    )
    text = text.replace(
        "[form]\n", f'[form]\nwebhook = {{ url = "{url}", retries = {retries}, backoff_seconds = 0.05 }}\n', 1
    )
    d = tmp_path / "personas"
    d.mkdir()
    (d / "booking.toml").write_text(text, encoding="utf-8")
    return d


async def make_services(settings: Settings, provider: FakeProvider, personas_dir: Path | None = None) -> Services:
    if personas_dir is not None:
        settings = settings.model_copy(update={"personas_dir": personas_dir})
    svc = build_services(settings, providers=ProviderRegistry([provider]))
    await svc.start()
    assert svc.forms is not None
    svc.forms.today = lambda: TODAY
    return svc


async def say(svc: Services, user: User, conversation_id: str, text: str | None) -> tuple[str, dict[str, Any]]:
    request = TurnRequest(user=user, content=text, conversation_id=conversation_id, regenerate=text is None)
    _, finished = await svc.chat.run(request)
    return finished.message.content, dict(finished.reply_meta)


async def test_a_reservation_is_asked_step_by_step_corrected_confirmed_and_stored(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    svc = await make_services(settings, fake_provider)
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, first = await svc.chat.start_conversation(alice, persona="reservation")
        assert "예약 도우미" in first[0].content
        reply, meta = await say(svc, alice, conv.id, "다음 주 금요일 저녁 7시에 두 명이요")
        assert "12월 11일 (금)" in reply and "오후 7시" in reply and "2명" in reply
        assert "성함" in reply and meta["form"]["next"] == "name"
        reply, _ = await say(svc, alice, conv.id, "제 이름은 김민수입니다")
        assert "전화번호" in reply
        # An invalid value is re-asked with the reason.
        reply, meta = await say(svc, alice, conv.id, "010-123-456")
        assert "자릿수" in reply and "전화번호를 알려 주세요" in reply
        assert meta["form"]["errors"] == {"phone": "phone_digits"}
        await say(svc, alice, conv.id, "010-1234-5678")
        reply, meta = await say(svc, alice, conv.id, "없어요")  # the optional seating
        assert "확인해 주세요" in reply and meta["form"]["status"] == "confirming"
        # A time outside the opening hours is refused with the hours; then a correction of another field.
        reply, _ = await say(svc, alice, conv.id, "시간은 밤 10시로 바꿔 주세요")
        assert "21:00 이전까지만" in reply
        reply, _ = await say(svc, alice, conv.id, "6시 반")
        assert "오후 6시 30분" in reply and "확인해 주세요" in reply
        reply, _ = await say(svc, alice, conv.id, "인원 3명으로 바꿔 주세요")
        assert "- 인원: 3명" in reply
        # Regenerating repeats the question, deterministically.
        again, _ = await say(svc, alice, conv.id, None)
        assert again.startswith("입력하신 내용을 확인해 주세요")
        reply, meta = await say(svc, alice, conv.id, "네, 맞아요")
        assert "예약이 완료되었어요" in reply and meta["form"]["status"] == "done"
        records = await svc.store.list_form_records(alice.id, conversation_id=conv.id)
        assert len(records) == 1 and records[0].id in reply
        assert records[0].values == {
            "date": "2026-12-11", "time": "18:30", "party": 3, "name": "김민수", "phone": "010-1234-5678",
        }  # fmt: skip
        assert fake_provider.requests == []  # every form reply was the machine's, not the model's
        # Once done, the model answers again, told about the record.
        reply, _ = await say(svc, alice, conv.id, "주차 되나요?")
        assert reply.startswith("echo: ")
        system = fake_provider.requests[-1].messages[0].content
        assert records[0].id in system and "Fri Dec 11" in system
        assert svc.metrics.forms_completed.labels("reservation")._value.get() == 1
    finally:
        await svc.aclose()


async def test_cancel_and_start_over(settings: Settings, fake_provider: FakeProvider) -> None:
    svc = await make_services(settings, fake_provider)
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, _ = await svc.chat.start_conversation(alice, persona="reservation")
        await say(svc, alice, conv.id, "내일 점심 12시")
        reply, meta = await say(svc, alice, conv.id, "취소할게요")
        assert "취소했어요" in reply and meta["form"]["status"] == "cancelled"
        reply, meta = await say(svc, alice, conv.id, "새 예약 할게요, 모레 6시에 4명")
        assert "12월 5일" in reply and "오후 6시" in reply and "4명" in reply and meta["form"]["next"] == "name"
    finally:
        await svc.aclose()


async def test_the_webhook_is_retried_until_the_endpoint_takes_it(
    settings: Settings, fake_provider: FakeProvider, hook: Hook, tmp_path: Path
) -> None:
    svc = await make_services(settings, fake_provider, booking_persona(tmp_path, hook.url))
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, _ = await svc.chat.start_conversation(alice, persona="booking")
        for text in ("12월 24일 7시 2명", "홍길동", "01098765432", "창가 자리요", "네"):
            reply, meta = await say(svc, alice, conv.id, text)
        assert "예약이 완료되었어요" in reply
        assert svc.forms is not None
        await svc.forms.webhooks.drain()
        assert len(hook.bodies) == 3  # two 503s, then 204
        body = hook.bodies[-1]
        assert body["record_id"] == meta["form"]["record_id"] and body["values"]["seat"] == "window"
        assert body["values"]["date"] == "2026-12-24" and body["values"]["time"] == "19:00"
        record = await svc.store.get_form_record(alice.id, body["record_id"])
        assert record is not None and record.delivery == "delivered"
    finally:
        await svc.aclose()


async def test_a_dead_webhook_never_blocks_the_reply(
    settings: Settings, fake_provider: FakeProvider, tmp_path: Path
) -> None:
    # Nothing listens on this port: every attempt fails at once, after the reply went out.
    svc = await make_services(settings, fake_provider, booking_persona(tmp_path, "http://127.0.0.1:9/hook", retries=2))
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, _ = await svc.chat.start_conversation(alice, persona="booking")
        for text in ("12월 24일 7시 2명", "홍길동", "010-9876-5432", "없어요", "네"):
            reply, meta = await say(svc, alice, conv.id, text)
        assert "예약이 완료되었어요" in reply
        record = await svc.store.get_form_record(alice.id, meta["form"]["record_id"])
        assert record is not None and record.delivery == "pending"  # the reply did not wait for the webhook
        assert svc.forms is not None
        await svc.forms.webhooks.drain()
        record = await svc.store.get_form_record(alice.id, meta["form"]["record_id"])
        assert record is not None and record.delivery == "failed"
        assert svc.metrics.form_webhook_failures.labels("reservation")._value.get() == 1
    finally:
        await svc.aclose()


async def test_the_model_fills_what_the_parsers_cannot_and_a_sure_parser_wins(
    settings: Settings, fake_provider: FakeProvider
) -> None:
    svc = await make_services(settings, fake_provider)
    try:
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, _ = await svc.chat.start_conversation(alice, persona="reservation")
        # No date in this answer for the parsers: the model's JSON (schema-constrained) gives it.
        fake_provider.enqueue(Script(chunks=['{"value": "2026-12-25"}']))
        reply, _ = await say(svc, alice, conv.id, "크리스마스 당일로 부탁해요")
        assert "12월 25일 (금)" in reply
        request = fake_provider.requests[-1]
        assert request.params.response_format is not None
        assert request.params.response_format["type"] == "json_schema"
        # A sure parser reading never asks the model.
        asked = len(fake_provider.requests)
        await say(svc, alice, conv.id, "저녁 7시")
        assert len(fake_provider.requests) == asked
        # Garbage from the model is ignored: the field is re-asked, nothing breaks.
        fake_provider.enqueue(Script(chunks=["not json"]))
        reply, _ = await say(svc, alice, conv.id, "음 글쎄요 우리 가족 전부요")
        assert "인원" in reply and "몇 분이 오시나요?" in reply
        assert svc.metrics.form_extract_failures._value.get() == 1
    finally:
        await svc.aclose()
