"""Conversation intelligence in the real page (chromium): recommendation cards under a reply and "not interested",
and the "my interests" panel (list, delete one, delete all). Uses the harness of tests/test_web_browser.py."""

from __future__ import annotations

from typing import Any

import pytest

from .test_web_browser import Server, Tab, browser, server, tab  # noqa: F401  (the browser harness's fixtures)

pytestmark = pytest.mark.browser


def test_cards_under_the_reply_and_the_interests_panel(tab: Tab, server: Server) -> None:  # noqa: F811
    page: Any = tab.page
    tab.login()
    tab.new_chat()
    page.select_option("#persona-select", "guide")
    tab.send("파이썬 코드가 너무 느린데 성능 최적화는 어떻게 하나요?")
    reply = tab.wait_final()
    card = reply.locator(".rec-card[data-item='python-performance']")
    card.wait_for()
    assert card.locator(".rec-title").inner_text() == "파이썬 성능 최적화 가이드"
    assert card.locator(".rec-title").get_attribute("href", timeout=1000).startswith("https://")
    assert card.locator(".rec-title").get_attribute("rel") == "noopener noreferrer"
    with page.expect_response(lambda r: r.url.endswith("/api/recommendations/feedback")) as done:
        card.locator(".rec-dismiss").click()
    assert done.value.status == 204
    page.wait_for_selector(".rec-card[data-item='python-performance']", state="detached")

    # The same question again: the dismissed guide is not offered any more; cards come back after a reload.
    tab.send("파이썬 코드가 너무 느린데 성능 최적화는 어떻게 하나요?")
    assert tab.wait_final().locator(".rec-card[data-item='python-performance']").count() == 0
    tab.goto(page.url.removeprefix(server.url))
    page.wait_for_selector(".msg-assistant .rec-card")
    # Not on any reply: the first one, where it was dismissed, included (the stored reply respects the feedback).
    assert page.locator(".rec-card[data-item='python-performance']").count() == 0

    # The interests panel: what was learned from the two messages, deletable one by one or all at once.
    page.click("#interests-open")
    page.wait_for_selector("#interests-dialog .interest[data-term='파이썬']")
    terms = page.locator("#interests-dialog .interest-term").all_inner_texts()
    assert "최적화" in terms and "성능" in terms
    page.click("#interests-dialog .interest[data-term='파이썬'] .interest-delete")
    page.wait_for_selector("#interests-dialog .interest[data-term='파이썬']", state="detached")
    page.click("#interests-clear")
    page.wait_for_function("() => !document.querySelector('#interests-dialog .interest')")
    page.wait_for_selector("#interests-dialog .interests-status:has-text('아직 기억한 관심사가 없어요.')")
    page.screenshot(path="test-artifacts/intelligence-panel.png")
    tab.assert_clean()
