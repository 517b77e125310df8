"""Issue 18 end to end in headless Chromium: an email appended to the suite's Dovecot by
another connection appears on an open Email page with no reload, through the real
listener (IDLE) and the real sync; only the task queue's hop is taken in place (the
sync the listener queues runs at once, as a worker would run it)."""

from playwright.sync_api import expect

from push.listener import Listener
from push.models import MailboxWatch
from sync.services import mailbox_sync
from tests.mailbox import make_message
from tests.push_servers import config, eventually, running, state_of
from tests.test_browser_wizard import _sign_in


def test_it_shows_a_pushed_email_on_an_open_email_page(
    live_server, page, synced_mailbox, inline_sync, short_lease
):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="Before the page opened"))
    mailbox_sync(account_id=account.pk)
    _sign_in(page, live_server, account.owner)
    rows = page.locator("#panel-emails tbody tr")
    expect(rows).to_have_count(1)
    page.evaluate("window.__same_document = true")
    with running(Listener(config=config())):
        eventually(lambda: state_of(account) == MailboxWatch.State.WATCHING, what="watching")
        mailbox.append("INBOX", make_message(subject="Pushed while you looked"))
        expect(rows).to_have_count(2, timeout=15_000)
        expect(rows.first).to_contain_text("Pushed while you looked")
    assert page.evaluate("window.__same_document") is True
