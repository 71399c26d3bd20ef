"""The settings dialog in the real page (chromium): the "remember my interests" switch and "Delete account /
계정 삭제" with its confirmation, ending at the login view. Uses the harness of tests/test_web_browser.py (a
server of this module's own: the test deletes its user)."""

from __future__ import annotations

from typing import Any

import pytest

from .test_web_browser import PASSWORD, USER, Server, Tab, browser, server, tab  # noqa: F401  (the harness's fixtures)

pytestmark = pytest.mark.browser


def test_interests_switch_and_deleting_the_account(tab: Tab, server: Server) -> None:  # noqa: F811
    page: Any = tab.page
    tab.login()
    assert page.locator("#interests-open").inner_text() == "설정"
    page.click("#interests-open")
    toggle = page.locator("#interests-enabled")
    page.wait_for_function("() => document.querySelector('#interests-dialog .interests-status').textContent !== ''")
    assert toggle.is_checked()
    with page.expect_response(lambda r: r.url.endswith("/api/me/interests") and r.request.method == "PUT") as done:
        toggle.uncheck()
    assert done.value.status == 200 and done.value.json()["enabled"] is False
    page.wait_for_selector("#interests-dialog .interests-status:has-text('관심사 기억이 꺼져 있어요')")
    page.keyboard.press("Escape")

    tab.goto("/")  # the switch is stored, not kept by the page
    page.click("#interests-open")
    page.wait_for_selector("#interests-dialog .interests-status:has-text('관심사 기억이 꺼져 있어요')")
    assert not toggle.is_checked()

    # Delete account: the button opens a confirmation that needs the user name (and the password).
    page.click("#account-delete")
    confirm = page.locator("#account-delete-confirm")
    assert confirm.is_disabled()
    assert USER in page.locator(".account-confirm").inner_text()
    page.fill("#account-delete-name", "someone-else")
    assert confirm.is_disabled()
    page.fill("#account-delete-name", USER)
    page.fill("#account-delete-password", "not the password")
    confirm.click()
    page.wait_for_selector(".account-error:has-text('비밀번호가 맞지 않아요.')")
    page.screenshot(path="test-artifacts/account-delete.png")
    page.fill("#account-delete-password", PASSWORD)
    with page.expect_response(lambda r: r.url.endswith("/api/me") and r.request.method == "DELETE") as gone:
        confirm.click()
    assert gone.value.status == 200 and gone.value.json()["deleted"] is True
    page.wait_for_selector("#login-view:not([hidden])")
    assert page.locator("#login-error").inner_text() == "계정을 삭제했어요."

    # The account is gone: signing in again fails, and a reload stays on the login view.
    page.fill("#login-username", USER)
    page.fill("#login-password", PASSWORD)
    page.press("#login-password", "Enter")
    page.wait_for_selector("#login-error:has-text('사용자 이름 또는 비밀번호가 맞지 않아요.')")
    tab.goto("/")
    assert page.locator("#login-view").is_visible() and page.locator("#app").is_hidden()
    tab.assert_clean()
