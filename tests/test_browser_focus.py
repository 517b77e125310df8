"""Issue 17, point 11, in headless Chromium: after each wizard step swapped in by htmx,
the focus is on the new step's first field (it used to take 8 Tabs to reach the password)."""

from playwright.sync_api import expect

from tests.factories import UserFactory
from tests.test_browser_wizard import _sign_in


def test_it_focuses_the_next_steps_first_field_after_the_address_step(
    live_server, page, test_provider
):
    _sign_in(page, live_server, UserFactory())
    page.goto(f"{live_server.url}/mailboxes/new/")
    expect(page.locator("#id_address")).to_be_focused()
    page.fill("#id_address", "alice@example.test")
    page.click("button:has-text('Next')")
    expect(page.locator("[data-step=sign_in]")).to_be_visible()
    expect(page.locator("#id_password")).to_be_focused()
    # A refused password: the field to type it again has the focus.
    page.keyboard.type("not-the-password")
    page.keyboard.press("Enter")
    expect(page.locator("#id_password_error")).to_be_visible()
    expect(page.locator("#id_password")).to_be_focused()


def test_it_focuses_the_provider_search_when_the_provider_is_unknown(
    live_server, page, test_provider
):
    _sign_in(page, live_server, UserFactory(is_staff=True, is_superuser=True))
    page.goto(f"{live_server.url}/mailboxes/new/")
    page.fill("#id_address", "carol@elsewhere.test")
    page.keyboard.press("Enter")
    expect(page.locator("[data-step=provider]")).to_be_visible()
    expect(page.locator("#provider-search")).to_be_focused()
    page.click("text=Add new server")
    expect(page.locator("[data-step=new_server]")).to_be_visible()
    first = page.locator(
        "[data-step=new_server] form .field input, [data-step=new_server] form .field select"
    ).first
    expect(first).to_be_focused()


def test_it_focuses_the_message_after_unlinking_an_email(live_server, page, db):
    from crm.models import Company
    from sync.models import Email
    from tests.factories import EmailAccountFactory

    account = EmailAccountFactory()
    email = Email.objects.create(account=account, message_key="k", subject="Offer")
    email.companies.add(Company.objects.create(name="Acme", web_domain="acme.test"))
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/emails/{email.pk}/")
    page.click("button[aria-label='Unlink Acme']")
    expect(page.locator("#links-state")).to_have_text("Acme unlinked.")
    expect(page.locator("#links-state")).to_be_focused()
