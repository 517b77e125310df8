"""Sharing a mailbox with roles in headless Chromium, and what each member then sees."""

from playwright.sync_api import expect

from crm.models import Contact
from sharing.models import GrantChange
from sync.models import Email
from tests.browser import SCREENSHOTS
from tests.factories import EmailAccountFactory, GroupFactory, UserFactory
from tests.test_browser_wizard import _sign_in


def _add_role(page, name: str):
    page.fill("#grantee-search", name.split()[0])
    add = page.locator(f"#grantee-candidates button:has-text('Add {name} (role)')")
    expect(add).to_be_visible()
    add.click()
    expect(page.locator(f"#settings-sharing tr:has-text('{name} (role)')")).to_contain_text(
        "not saved yet"
    )


def test_it_shares_a_mailbox_with_roles_and_each_member_sees_what_their_role_gives(
    live_server, page
):
    admin = UserFactory(permissions=["sharing.setup_shared_access"])
    account = EmailAccountFactory(owner=admin, address="sales@example.test")
    seller, reader = UserFactory(), UserFactory()
    GroupFactory(name="Sales team", members=[seller])
    GroupFactory(name="Readers", members=[reader])
    contact = Contact.objects.create(name="Peter Partner")
    email = Email.objects.create(account=account, message_key="k1", subject="Offer for Peter")
    email.contacts.add(contact)

    _sign_in(page, live_server, admin)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")
    page.check("#settings-sharing input[name=shared_access]")
    _add_role(page, "Sales team")
    # The shared-access tick survives adding a row: the section comes back as left.
    expect(page.locator("#settings-sharing input[name=shared_access]")).to_be_checked()
    page.check("input[aria-label='Send emails: Sales team (role)']")
    page.uncheck("input[aria-label='Access emails: Sales team (role)']")
    _add_role(page, "Readers")
    page.click("button:has-text('Save shared access')")
    expect(page.locator("#settings-sharing .saved")).to_contain_text("Saved.")
    expect(page.locator("#settings-sharing")).not_to_contain_text("not saved yet")
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "sharing.png", full_page=True)
    assert GrantChange.objects.count() == 2

    page.context.clear_cookies()
    _sign_in(page, live_server, seller)
    expect(page.locator("#shared-mailboxes")).to_contain_text("sales@example.test")
    expect(page.locator("#shared-mailboxes")).to_contain_text("you can send from it")
    expect(page.locator("table.emails")).to_contain_text("Offer for Peter")

    page.context.clear_cookies()
    _sign_in(page, live_server, reader)
    expect(page.locator("#panel-count")).to_have_text("0 emails")
    expect(page.locator("body")).not_to_contain_text("sales@example.test")
    page.goto(f"{live_server.url}/contacts/{contact.pk}/")
    expect(page.locator(".timeline")).to_contain_text("Offer for Peter")


def test_it_says_why_a_button_did_nothing_once_the_mailbox_is_no_longer_shared(live_server, page):
    # A grantee with the settings page open, the grant revoked meanwhile: Save answered
    # 404, which htmx dropped silently (the page went on reading "Unsaved changes").
    from tests.factories import MailboxGrantFactory

    dave = UserFactory(permissions=["sharing.setup_shared_sync"])
    grant = MailboxGrantFactory(user=dave, can_setup=True)
    _sign_in(page, live_server, dave)
    page.goto(f"{live_server.url}/mailboxes/{grant.account.pk}/")
    error = page.locator("#request-error")
    expect(error).to_be_hidden()
    grant.delete()
    # A refresh set off by script (the status reads again after news): said, but the
    # focus stays where the user is.
    page.focus("#id_download-sync_period")
    page.evaluate("htmx.trigger(document.body, 'sync-settings-saved')")
    expect(error).to_be_visible()
    expect(page.locator("#id_download-sync_period")).to_be_focused()
    # Another address answering in the background says nothing of this one.
    page.evaluate("htmx.ajax('GET', '/email/', {target: 'body', swap: 'none'})")
    page.wait_for_timeout(300)
    expect(error).to_be_visible()
    page.select_option("#id_download-sync_period", "3m")
    page.click("#settings-download button:has-text('Save')")
    expect(error).to_be_visible()
    expect(error).to_contain_text("no longer shared with you")
    expect(error).to_be_focused()
    page.screenshot(path=SCREENSHOTS / "request-error.png", full_page=True)
