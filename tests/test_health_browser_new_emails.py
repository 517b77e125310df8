"""Issue 18, point 5 in headless Chromium: an email appended to the suite's Dovecot
appears on an open Email page, and its mailbox's status says so, with no reload. The
sync that stores it runs here, in the test, in place of the worker the listener's
notification would queue (push/ queues it; that part is its own tests')."""

from django.db import transaction
from playwright.sync_api import expect

from sync.models import MailboxSync
from sync.services import mailbox_sync
from tests.browser import SCREENSHOTS
from tests.mailbox import make_message
from tests.test_browser_wizard import _sign_in


def test_it_shows_an_email_stored_after_the_page_opened_without_a_reload(
    live_server, page, synced_mailbox
):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="Before the page opened"))
    mailbox_sync(account_id=account.pk)
    _sign_in(page, live_server, account.owner)
    rows = page.locator("#panel-emails tbody tr")
    expect(rows).to_have_count(1)
    status = page.locator(f"#sync-status-{account.pk}")
    expect(status).to_contain_text("1 new email")
    # Nothing arrives: the page keeps asking, and the list stays as it is.
    page.wait_for_timeout(4_000)
    expect(rows).to_have_count(1)
    page.evaluate("window.__same_document = true")

    mailbox.append("INBOX", make_message(subject="Arrived while you looked"))
    mailbox_sync(account_id=account.pk)
    assert MailboxSync.objects.get(account=account).last_success_at is not None
    expect(rows).to_have_count(2)
    expect(rows.first).to_contain_text("Arrived while you looked")
    expect(page.locator("#panel-count")).to_contain_text("2 emails")
    # The mailbox's status too: its last download stored one new email.
    expect(status).to_contain_text("Last download just now: 1 new email")
    # The same document all along: no reload happened.
    assert page.evaluate("window.__same_document") is True
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "issue18-5-new-email.png", full_page=True)


def test_it_shows_a_new_email_on_an_open_contact_timeline(live_server, page, db):
    from crm.models import Contact
    from sync.models import Email
    from tests.factories import EmailAccountFactory

    account = EmailAccountFactory()
    contact = Contact.objects.create(name="Ann Example")
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/contacts/{contact.pk}/")
    expect(page.locator("#timeline")).to_contain_text("Nothing yet that you can see.")
    page.fill("#timeline-search", "half typed")
    page.evaluate("window.__same_document = true")
    # As the sync stores an email from Ann: the email and its link to her in one
    # transaction (sync.store).
    with transaction.atomic():
        email = Email.objects.create(account=account, message_key="k", subject="Hello from Ann")
        email.contacts.add(contact)
    expect(page.locator("#timeline .entry-email")).to_contain_text("Hello from Ann")
    # The search box outside the entries keeps what was typed; no reload happened.
    expect(page.locator("#timeline-search")).to_have_value("half typed")
    assert page.evaluate("window.__same_document") is True
