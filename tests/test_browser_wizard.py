"""The add-mailbox wizard in headless Chromium, against Dovecot and aiosmtpd."""

import uuid

import pytest
from playwright.sync_api import expect

from accounts.models import EmailAccount
from providers.models import ProviderDomain
from tests.browser import SCREENSHOTS, htmx_settled
from tests.conftest import MAIL_USERS
from tests.factories import PASSWORD, UserFactory
from tests.mailbox import Mailbox, make_message


def _sign_in(page, live_server, user):
    page.goto(f"{live_server.url}/login/?next=/email/")
    page.fill("#id_username", user.username)
    page.fill("#id_password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{live_server.url}/email/")


def _shot(page, name):
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"wizard-{name}.png", full_page=True)


@pytest.fixture
def eager_tasks():
    # No worker runs beside live_server: queued tasks run in the web thread instead.
    from mailsetup.celery import app

    before = app.conf.task_always_eager
    app.conf.task_always_eager = True
    yield
    app.conf.task_always_eager = before


def test_it_adds_a_mailbox_of_a_known_domain(
    live_server, page, test_provider, dovecot, eager_tasks
):
    subject = f"Welcome {uuid.uuid4().hex[:8]}"
    Mailbox(dovecot, "alice@example.test", MAIL_USERS["alice@example.test"]).append(
        "INBOX", make_message(subject=subject)
    )
    user = UserFactory(first_name="Alice", last_name="Archer")
    _sign_in(page, live_server, user)
    page.click("text=New email account")
    page.fill("#id_address", "alice@example.test")
    _shot(page, "1-address")
    page.click("button:has-text('Next')")
    expect(page.locator("#provider-name")).to_have_text("Test Mail")
    expect(page.locator(".via")).to_contain_text("found in Email providers domains")
    assert "/mailboxes/new/sign-in/" in page.url  # htmx pushed the step's address

    page.fill("#id_password", "not-the-password")
    page.click("button:has-text('Sign in')")
    expect(page.locator("#id_password_error")).to_contain_text(
        "did not accept the login or password"
    )
    expect(page.locator("#id_password")).to_have_value("")
    _shot(page, "3-wrong-password")
    assert not EmailAccount.objects.exists()

    page.fill("#id_password", MAIL_USERS["alice@example.test"])
    _shot(page, "3-sign-in")
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server.url}/email/")
    notification = page.locator(".notification")
    expect(notification).to_contain_text("alice@example.test is connected")
    _shot(page, "4-notification")
    account = EmailAccount.objects.get(owner=user)
    notification.locator("text=Additional setup").click()
    page.wait_for_url(f"{live_server.url}/mailboxes/{account.pk}/")
    expect(page.locator("h1")).to_have_text("alice@example.test settings")
    expect(page.locator("body")).to_contain_text("1 week")

    page.goto(f"{live_server.url}/email/")
    page.click(".notification >> button:has-text('Download emails')")
    page.wait_for_url(f"{live_server.url}/mailboxes/{account.pk}/#sync")
    expect(page.locator(".sync-status")).to_contain_text("Last download just now: 1 new email")
    page.goto(f"{live_server.url}/email/")
    page.click(f"text={subject}")
    expect(page.locator("h1")).to_have_text(subject)
    _shot(page, "5-email")

    page.goto(f"{live_server.url}/email/")
    page.click(".notification >> text=Dismiss")
    expect(page.locator(".notification")).to_have_count(0)
    page.reload()
    expect(page.locator(".notification")).to_have_count(0)


def test_it_remembers_a_picked_provider_so_the_next_user_skips_the_choice(
    live_server, browser, page, test_provider
):
    _sign_in(page, live_server, UserFactory())
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", "carol@elsewhere.test")
    page.click("button:has-text('Next')")
    expect(page.locator("[data-step=provider]")).to_be_visible()
    htmx_settled(page)
    # The list is swapped in as the user types (after a pause): a swap after the tick
    # would undo it, so the tick waits for that answer and for htmx to settle.
    with page.expect_response(lambda r: "q=test" in r.url):
        page.fill("#provider-search", "test")
    expect(page.locator("#provider-list label")).to_have_count(1)
    expect(page.locator(".htmx-request")).to_have_count(0)
    _shot(page, "2-provider")
    page.check("#provider-list input[type=radio]")
    expect(page.locator("#provider-list input[type=radio]")).to_be_checked()
    page.click("[data-step=provider] button:has-text('Next')")
    expect(page.locator(".via")).to_contain_text("chosen by you")
    page.fill("#id_password", MAIL_USERS["carol@elsewhere.test"])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server.url}/email/")
    assert ProviderDomain.objects.get(domain="elsewhere.test").provider == test_provider

    context = browser.new_context()
    other = context.new_page()
    _sign_in(other, live_server, UserFactory())
    other.goto(f"{live_server.url}/mailboxes/new/")
    other.fill("#id_address", "dave@elsewhere.test")
    other.click("button:has-text('Next')")
    expect(other.locator("#provider-name")).to_have_text("Test Mail")
    expect(other.locator(".via")).to_contain_text("found in Email providers domains")
    context.close()


def test_it_fills_ports_from_security_when_a_manager_adds_a_server(live_server, page, db):
    _sign_in(page, live_server, UserFactory(permissions=["providers.manage_email_providers"]))
    page.goto(f"{live_server.url}/mailboxes/new/provider/?address=anna@newcorp.test")
    page.click("text=Add new server")
    expect(page.locator("[data-step=new_server]")).to_be_visible()
    page.select_option("#id_imap_security", "starttls")
    expect(page.locator("#id_imap_port")).to_have_value("143")
    page.select_option("#id_smtp_security", "starttls")
    expect(page.locator("#id_smtp_port")).to_have_value("587")
    page.fill("#id_smtp_port", "465")
    expect(page.locator("#id_smtp_security")).to_have_value("ssl")
    page.fill("#id_imap_port", "10993")
    page.select_option("#id_imap_security", "ssl")
    expect(page.locator("#id_imap_port")).to_have_value("10993")  # a custom port stays
    _shot(page, "2-new-server")


def test_it_works_without_javascript(live_server, browser, test_provider):
    context = browser.new_context(java_script_enabled=False)
    page = context.new_page()
    _sign_in(page, live_server, UserFactory())
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", "alice@example.test")
    page.click("button:has-text('Next')")
    page.fill("#id_password", MAIL_USERS["alice@example.test"])
    page.click("button:has-text('Sign in')")
    page.wait_for_url(f"{live_server.url}/email/")
    expect(page.locator(".notification")).to_contain_text("alice@example.test is connected")
    context.close()
