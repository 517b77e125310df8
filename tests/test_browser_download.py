"""Issue 17, point 4 in headless Chromium: after "Download emails now" the status
updates by itself, from the first moment: asked for, folders done of total and emails
stored with a bar that fills during a first download, then the result. The download
is the real one against the suite's Dovecot, run in a thread in place of a worker,
one batch at a time as the test lets it."""

import threading

import pytest
from django.db import connection
from playwright.sync_api import expect

from sync import engine
from sync import services as sync_services
from sync.models import SyncRun
from sync.store import Store
from tests.browser import SCREENSHOTS
from tests.mailbox import make_message
from tests.test_browser_wizard import _sign_in


def _shot(page, name: str) -> None:
    SCREENSHOTS.mkdir(exist_ok=True)
    page.screenshot(path=SCREENSHOTS / f"issue17-4-{name}.png", full_page=True)


class Worker:
    """Stands in for a Celery worker: runs the queued download in a thread once the
    test lets it start, and stores one batch per permit."""

    def __init__(self):
        self.start = threading.Event()
        self.batches = threading.Semaphore(0)
        self.thread = None
        self.error = None

    def queue(self, task, account_id):
        def run():
            try:
                assert self.start.wait(30)
                sync_services.mailbox_sync(account_id=account_id)
            except Exception as error:  # reported by the test
                self.error = error
            finally:
                connection.close()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()
        return True


@pytest.fixture
def worker(monkeypatch):
    worker = Worker()
    monkeypatch.setattr(sync_services, "publish", worker.queue)
    monkeypatch.setattr(engine, "BATCH", 4)
    original = Store.batch

    def batch(self, *args, **kwargs):
        assert worker.batches.acquire(timeout=30), "the test never let this batch through"
        return original(self, *args, **kwargs)

    monkeypatch.setattr(Store, "batch", batch)
    yield worker
    worker.start.set()
    for _ in range(100):
        worker.batches.release()
    if worker.thread:
        worker.thread.join(30)


def test_it_shows_the_download_live_from_the_button_to_the_result(
    live_server, page, synced_mailbox, worker
):
    account, mailbox = synced_mailbox
    account.sync_period = "all"
    account.save()
    for folder, count in {"INBOX": 8, "Clients": 6, "Archive": 4}.items():
        mailbox.append(folder, *[make_message(subject=f"{folder} {n}") for n in range(count)])
    _sign_in(page, live_server, account.owner)
    page.goto(f"{live_server.url}/mailboxes/{account.pk}/")
    status = page.locator(f"#sync-status-{account.pk}")
    expect(status).to_contain_text("Not downloaded yet.")

    page.click("button:has-text('Download emails now')")
    # No reload: the answer is the status itself, and it keeps looking.
    expect(status).to_contain_text("Download asked for: it starts in a moment.")
    _shot(page, "asked-for")

    worker.start.set()
    worker.batches.release()
    worker.batches.release()
    # Two batches of four stored; the run waits before its third.
    expect(status).to_contain_text("8 new emails stored so far")
    expect(status).to_contain_text(" folders done")
    bar = status.locator("progress[aria-label='First download']")
    value = int(bar.get_attribute("value"))
    assert 0 < value < 100
    text = status.inner_text()
    assert "0 of " in text or "1 of " in text  # INBOX (8 of them) may be done already
    _shot(page, "progress")

    for _ in range(20):
        worker.batches.release()
    expect(status).to_contain_text("Last download", timeout=20_000)
    expect(status).to_contain_text("18 new emails")
    expect(status.locator("progress")).to_have_count(0)
    # It stopped looking every 2 s (it waits for news of new emails instead).
    assert status.get_attribute("hx-trigger") == (
        "new-emails from:body, sync-settings-saved from:body"
    )
    _shot(page, "done")
    worker.thread.join(30)
    assert worker.error is None
    run = SyncRun.objects.get(account=account)
    assert (run.new_emails, run.messages_done, run.messages_total) == (18, 18, 18)


def test_it_keeps_looking_after_download_emails_on_the_email_page(
    live_server, page, synced_mailbox, worker
):
    from accounts.models import AccountNotification

    account, mailbox = synced_mailbox
    mailbox.append("INBOX", *[make_message(subject=f"hello {n}") for n in range(3)])
    AccountNotification.objects.create(account=account, kind=AccountNotification.Kind.ACCOUNT_ADDED)
    _sign_in(page, live_server, account.owner)
    page.click(".notification button:has-text('Download emails')")
    # The settings page, already showing the download as asked for and looking again.
    page.wait_for_url(f"{live_server.url}/mailboxes/{account.pk}/#sync")
    status = page.locator(f"#sync-status-{account.pk}")
    expect(status).to_contain_text("Download asked for")
    worker.start.set()
    for _ in range(5):
        worker.batches.release()
    expect(status).to_contain_text("Last download", timeout=20_000)
    expect(status).to_contain_text("3 new emails")
    _shot(page, "from-email-page-done")
