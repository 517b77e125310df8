"""Playwright driving Debian's Chromium (never a downloaded browser).

Every browser context the suite opens (through `page`, or `browser.new_context()` in a
test) reports Content-Security-Policy violations from its pages and their frames, as
Chromium writes them to the console; a browser test that caused one fails."""

import os
import shutil
from pathlib import Path

import pytest

CHROMIUM = os.environ.get("CHROMIUM_PATH") or shutil.which("chromium") or "/usr/bin/chromium"
SCREENSHOTS = Path(__file__).resolve().parent.parent / "test-results"
# Keep Chromium off the closed network and able to run as root in CI.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

# What the current test's pages violated: "<page url>: <Chromium's message>".
CSP_VIOLATIONS: list[str] = []


def is_csp_violation(text: str) -> bool:
    # Chromium: "Refused to apply inline style because it violates the following Content
    # Security Policy directive: …", "… violates the following Content Security Policy …"
    return "Content Security Policy" in text or "Content-Security-Policy" in text


def watch_csp(context):
    """Record every CSP violation a page (or a frame in it) of `context` reports."""

    def on_console(message):
        if is_csp_violation(message.text):
            where = message.page.url if message.page else "?"
            CSP_VIOLATIONS.append(f"{where}: {message.text}")

    context.on("console", on_console)
    return context


def htmx_settled(page) -> None:
    """Wait until htmx has finished every swap on `page`.

    htmx inserts swapped-in nodes (class `htmx-added`) and only attaches their `hx-*`
    handlers in the settle step ~20 ms later: typing into a field that is visible but not
    yet processed fires no request, so a test must wait for this before it types."""
    from playwright.sync_api import expect

    busy = ".htmx-added, .htmx-settling, .htmx-swapping, .htmx-request"
    expect(page.locator(busy)).to_have_count(0)


class CheckedBrowser:
    """The Playwright browser, whose new contexts and pages are watched (watch_csp)."""

    def __init__(self, browser):
        self._browser = browser

    def new_context(self, **kwargs):
        return watch_csp(self._browser.new_context(**kwargs))

    def new_page(self, **kwargs):
        return self.new_context(**kwargs).new_page()

    def __getattr__(self, name):
        return getattr(self._browser, name)


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        pytest.fail(f"Chromium is not installed at {CHROMIUM} (make test installs it).")
    # Playwright's sync API runs an event loop in this thread; the ORM calls that
    # tests make between page actions are still plain synchronous calls.
    os.environ["DJANGO_ALLOW_ASYNC_UNSAFE"] = "true"
    from playwright.sync_api import expect, sync_playwright

    # As long as a page action waits (`page` sets 15 s): the 5 s default of `expect` ran
    # out on a loaded machine (three xdist workers beside a database load) while the
    # server was still answering.
    expect.set_options(timeout=15_000)
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield CheckedBrowser(browser)
        browser.close()


@pytest.fixture(autouse=True)
def _no_csp_violations(request):
    """Fails a browser test whose pages broke the Content-Security-Policy (an inline
    script or style, a resource from elsewhere): the policy must fit every page."""
    if not {"browser", "page"} & set(request.fixturenames):
        yield
        return
    CSP_VIOLATIONS.clear()
    yield
    found, CSP_VIOLATIONS[:] = list(CSP_VIOLATIONS), []
    if found:
        pytest.fail("Content-Security-Policy violations:\n" + "\n".join(found))


@pytest.fixture
def page(browser, request):
    context = browser.new_context()
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"{request.node.name}.png", full_page=True)
    context.close()
