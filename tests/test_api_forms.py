"""GET /api/conversations/{id}/form: the form's progress, for its owner only."""

from __future__ import annotations

from datetime import date

import httpx

from daehwa.services import Services
from tests.api_helpers import auth

pytest_plugins = ["tests.api_fixtures"]


async def test_form_progress_route(client: httpx.AsyncClient, services: Services, alice_key: str, bob_key: str) -> None:
    assert services.forms is not None
    services.forms.today = lambda: date(2026, 12, 3)
    r = await client.post("/api/conversations", json={"persona": "reservation"}, headers=auth(alice_key))
    cid = r.json()["conversation"]["id"]
    r = await client.get(f"/api/conversations/{cid}/form", headers=auth(alice_key))
    body = r.json()
    assert r.status_code == 200 and body["form"] == "reservation" and body["started"] is False
    assert body["next"] == "date" and body["filled"] == 0 and body["total"] == 6

    r = await client.post(
        f"/api/conversations/{cid}/messages", json={"content": "내일 저녁 7시 2명이요"}, headers=auth(alice_key)
    )
    assert r.status_code == 200, r.text
    assert r.json()["message"]["content"].endswith("예약자 성함을 알려 주세요.")
    body = (await client.get(f"/api/conversations/{cid}/form", headers=auth(alice_key))).json()
    assert (body["status"], body["next"], body["filled"], body["done"]) == ("collecting", "name", 3, False)
    shown = {f["name"]: f["display"] for f in body["fields"]}
    assert shown["date"] == "12월 4일 (금)" and shown["time"] == "오후 7시" and shown["party"] == "2명"

    for text in ("김민수", "010-1234-5678", "없어요", "네"):
        await client.post(f"/api/conversations/{cid}/messages", json={"content": text}, headers=auth(alice_key))
    body = (await client.get(f"/api/conversations/{cid}/form", headers=auth(alice_key))).json()
    assert body["done"] is True and body["record_id"] and body["next"] is None and body["delivery"] is None

    # Another user's conversation is missing; a persona without a form has none.
    r = await client.get(f"/api/conversations/{cid}/form", headers=auth(bob_key))
    assert r.status_code == 404
    r = await client.post("/api/conversations", json={"persona": "assistant"}, headers=auth(alice_key))
    other = r.json()["conversation"]["id"]
    assert (await client.get(f"/api/conversations/{other}/form", headers=auth(alice_key))).json() == {
        "form": None, "title": None, "status": None, "started": False, "fields": [], "filled": 0, "total": 0,
        "next": None, "done": False, "record_id": None, "delivery": None,
    }  # fmt: skip
