"""A full reservation with the embedded model (Qwen2.5-0.5B): the dialogue reaches a stored record, the model
answers off-form questions afterwards, and the model's schema-constrained extraction works on the real engine."""

from __future__ import annotations

from dataclasses import replace
from datetime import date
from pathlib import Path

import pytest

from daehwa.config import Settings
from daehwa.intelligence.forms import FormState
from daehwa.pipeline import TurnRequest
from daehwa.providers.modelfiles import ModelFiles
from daehwa.services import build_services

from .conftest import require

QWEN = "qwen2.5-0.5b"
TODAY = date(2026, 12, 3)


@pytest.mark.local_model
async def test_a_reservation_with_the_embedded_model(tmp_path: Path, model_cache: Path) -> None:
    avail = ModelFiles(model_cache).availability(QWEN)
    require(avail.available, f"local model {QWEN} is not available: {avail.reason}")
    settings = Settings(
        data_dir=tmp_path,
        database_url=f"sqlite:///{tmp_path / 'test.db'}",
        default_model=f"local/{QWEN}",
        local_model=QWEN,
        local_context_size=2048,
        model_cache_dir=model_cache,
        _env_file=None,  # type: ignore[call-arg]
    )
    svc = build_services(settings)
    await svc.start()
    try:
        assert svc.forms is not None
        svc.forms.today = lambda: TODAY
        alice = await svc.store.create_user("alice", password_hash=None)
        conv, _ = await svc.chat.start_conversation(alice, persona="reservation")
        replies = []
        for text in ("다음 주 금요일 저녁 7시에 두 명이요", "김민수입니다", "010-1234-5678", "창가요", "네"):
            _, finished = await svc.chat.run(TurnRequest(user=alice, content=text, conversation_id=conv.id))
            replies.append(finished.message.content)
            assert finished.model == "daehwa"  # the form's own reply: no model call, whatever the model's speed
        assert "예약이 완료되었어요" in replies[-1]
        [record] = await svc.store.list_form_records(alice.id, conversation_id=conv.id)
        assert record.values == {
            "date": "2026-12-11", "time": "19:00", "party": 2, "name": "김민수", "phone": "010-1234-5678",
            "seat": "window",
        }  # fmt: skip
        # After the form, the embedded model answers, in Korean.
        _, finished = await svc.chat.run(TurnRequest(user=alice, content="주차할 수 있나요?", conversation_id=conv.id))
        assert finished.model.endswith(QWEN) and any("가" <= ch <= "힣" for ch in finished.message.content)

        # The extractor's model call: a json_schema response_format the engine enforces, read back by the parsers.
        persona = svc.personas.get("reservation")
        assert persona.form is not None
        spec = replace(persona.form, extract_timeout_seconds=120)  # a busy CPU must not turn this into a skip
        state = FormState(form=spec.name, asking="date")
        found = await svc.forms.extractor.extract(
            spec, state, "크리스마스 당일로 할게요 (Christmas day)", TODAY, model=f"local/{QWEN}"
        )
        assert svc.metrics.form_extract_failures._value.get() == 0  # the reply was valid JSON of the schema
        if "date" in found:  # the small model may answer null; when it answers, it is a date the parsers read
            assert found["date"].source == "model" and isinstance(found["date"].value, date)
    finally:
        await svc.aclose()
