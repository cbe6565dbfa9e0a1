"""Signing in and out in a real browser, against a real server with MSGTRACE_AUTH on."""

from __future__ import annotations

import re

from playwright.sync_api import Page, expect

from tests.authserver import PASSWORD, USERNAME


def _watch_console(page: Page) -> list[str]:
    problems: list[str] = []
    page.on("console", lambda m: problems.append(m.text) if m.type == "error" else None)
    page.on("pageerror", lambda exc: problems.append(str(exc)))
    return problems


def _sign_in(page: Page, password: str = PASSWORD) -> None:
    page.get_by_label("User name").fill(USERNAME)
    page.get_by_label("Password").fill(password)
    page.get_by_role("button", name="Sign in").click()


def test_sign_in_takes_you_to_the_page_you_asked_for_and_log_out_ends_it(
    page, auth_server, screenshot
):
    problems = _watch_console(page)
    page.goto(f"{auth_server.url}/traces?q=error:true")
    expect(page).to_have_url(re.compile(r"/login\?next="))
    expect(page.get_by_role("heading", name="Sign in to msgtrace")).to_be_visible()
    # Signed out, the top bar offers nothing that would lead back here.
    expect(page.locator("nav.nav")).to_have_count(0)
    screenshot(page, "login")

    _sign_in(page, password="not the password")
    expect(page.get_by_role("alert")).to_contain_text("Please enter a correct username")
    expect(page.get_by_label("User name")).to_have_value(USERNAME)
    screenshot(page, "login-error")

    _sign_in(page)
    expect(page).to_have_url(f"{auth_server.url}/traces?q=error:true")
    expect(page.locator(".user-menu")).to_contain_text(USERNAME)
    # The live socket opens on the session: auth is on, and it is let in.
    expect(page.locator("#live")).to_have_attribute("data-live-state", "live")
    screenshot(page, "signed-in")

    page.get_by_role("button", name="Log out").click()
    expect(page).to_have_url(f"{auth_server.url}/login")
    page.goto(f"{auth_server.url}/")
    expect(page).to_have_url(re.compile(r"/login\?next=/$"))
    assert problems == []


def test_an_htmx_request_after_the_session_ends_goes_to_the_login_page(page, context, auth_server):
    page.goto(f"{auth_server.url}/login?next=/traces")
    _sign_in(page)
    expect(page).to_have_url(f"{auth_server.url}/traces")
    context.clear_cookies()  # the session ends (expired, or signed out in another tab)
    page.evaluate("htmx.ajax('GET', '/traces?sort=-duration', {target: 'main'})")
    # The whole page goes to the login page (HX-Redirect), not a login form in a fragment.
    expect(page).to_have_url(re.compile(r"/login\?next=/traces"))
    expect(page.locator("main form.login-form")).to_have_count(1)
    expect(page.locator("main main")).to_have_count(0)
