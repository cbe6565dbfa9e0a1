"""Real-browser fixtures: one Chromium, a fresh context and page per test, screenshots.

The pages are driven against a real ``msgtrace start`` (the ``server`` fixtures), seeded
through the real ingest path with the OpenTelemetry SDK. Nothing here touches the
database in-process.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright

from tests.browser import Spans

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking"]
VIEWPORT = {"width": 1440, "height": 900}
SCREENSHOTS = Path(__file__).resolve().parents[1] / "screenshots"


@pytest.fixture(scope="package")
def browser() -> Iterator[Browser]:
    """One Chromium for all browser tests.

    Package scope rather than session scope: while Playwright's sync API is running, its
    event loop counts as running in this thread, and Django then refuses in-process
    database access (SynchronousOnlyOperation) to every test module that runs after these.
    """
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def new_context(browser: Browser) -> Iterator[Callable[..., BrowserContext]]:
    """``new_context(**options)``: a fresh context at 1440×900, closed after the test."""
    made: list[BrowserContext] = []

    def make(**options) -> BrowserContext:
        context = browser.new_context(**{"viewport": VIEWPORT, "color_scheme": "light", **options})
        made.append(context)
        return context

    yield make
    for context in made:
        context.close()


@pytest.fixture
def context(new_context) -> BrowserContext:
    return new_context()


@pytest.fixture
def csp_refusals() -> list[str]:
    """What the Content-Security-Policy refused on ``page`` (a test that provokes it clears it)."""
    return []


@pytest.fixture
def page(context: BrowserContext, csp_refusals: list[str]) -> Iterator[Page]:
    """A page that fails its test if the CSP refused anything on it: our own pages must
    work under the policy, so a refusal means a page of ours broke (or markup got past
    escaping)."""
    page = context.new_page()

    def note(message) -> None:
        if "Content Security Policy" in message.text:
            csp_refusals.append(message.text)

    page.on("console", note)
    yield page
    assert csp_refusals == [], f"the CSP refused: {csp_refusals}"


@pytest.fixture(scope="session")
def screenshot() -> Callable[[Page, str], None]:
    """Save the page as ``tests/screenshots/<name>-<scheme>.png`` in light and in dark."""
    SCREENSHOTS.mkdir(exist_ok=True)

    def shoot(page: Page, name: str) -> None:
        for scheme in ("light", "dark"):
            page.emulate_media(color_scheme=scheme)
            # caret="initial": hiding the caret leaves style="" on inputs, which htmx's
            # history snapshots then restore, and the CSP (rightly) refuses.
            page.screenshot(
                path=SCREENSHOTS / f"{name}-{scheme}.png", animations="disabled", caret="initial"
            )
        page.emulate_media(color_scheme="light")

    return shoot


@pytest.fixture(scope="session")
def otel(live_server_process) -> Callable[..., Spans]:
    """``otel(service, resource=..., scope=...)``: spans exported to the session's server."""

    def build(service: str, **options) -> Spans:
        return Spans(live_server_process.url, service, **options)

    return build
