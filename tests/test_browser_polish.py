"""Issue 17, point 12, in headless Chromium: the compose message box is styled like the
other fields, and the help page opened from the wizard leads back to it."""

from playwright.sync_api import expect

from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory, EmailProviderFactory, UserFactory
from tests.test_browser_wizard import _sign_in


def test_it_styles_the_compose_message_box(live_server, page, db):
    account = EmailAccountFactory()
    page.set_viewport_size({"width": 1280, "height": 900})
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/compose/")
    box = page.locator("#id_body")
    style = box.evaluate(
        "(e) => { const s = getComputedStyle(e); return {radius: s.borderRadius,"
        " font: s.fontFamily, body: getComputedStyle(document.body).fontFamily,"
        " width: e.getBoundingClientRect().width,"
        " form: e.closest('form').getBoundingClientRect().width,"
        " height: e.getBoundingClientRect().height}; }"
    )
    assert style["radius"] == "6px"
    assert style["font"] == style["body"]
    # As wide as the form's content (its padding aside), and room for a real message.
    assert style["width"] > style["form"] - 80
    assert style["height"] >= 256
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "issue17-12-compose.png", full_page=True)


def test_it_returns_from_the_help_page_to_the_wizard(live_server, page, db):
    provider = EmailProviderFactory(security_guide="gmail", app_password_required=True)
    _sign_in(page, live_server, UserFactory())
    step = f"/mailboxes/new/sign-in/?address=ann%40gmail.test&provider={provider.pk}"
    page.goto(f"{live_server.url}{step}")
    page.click("#secure-connection-help")
    expect(page.locator("h1")).to_have_text("Set up a secure mailbox connection")
    page.click("#back-to-wizard")
    expect(page.locator("[data-step=sign_in]")).to_be_visible()
    expect(page.locator("main")).to_contain_text("ann@gmail.test")
