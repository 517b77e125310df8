"""Issue 17, point 4: what the status shows while a download runs, from the run's own
record, against the suite's Dovecot; and the status after "Download emails now"."""

from datetime import timedelta

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sync import engine
from sync.models import MailboxSync, SyncRun
from sync.selectors import REQUEST_WAIT, sync_status
from sync.services import mailbox_sync
from sync.store import Store
from tests.factories import EmailAccountFactory
from tests.mailbox import make_message


def _fill(mailbox, counts: dict[str, int]) -> None:
    for folder, count in counts.items():
        mailbox.append(folder, *[make_message(subject=f"{folder} {n}") for n in range(count)])


@pytest.fixture
def watched_batches(monkeypatch):
    """The run's record as the status page reads it (from the database), at each batch
    the run stores."""
    seen = []
    original = Store.batch

    def batch(self, folder, uidvalidity, items):
        run = SyncRun.objects.filter(account=self.account, state="running").first()
        seen.append(
            None if run is None else
            (folder.path, run.folders_done, run.folders_total, run.messages_done,
             run.messages_total, run.new_emails)
        )  # fmt: skip
        return original(self, folder, uidvalidity, items)

    monkeypatch.setattr(Store, "batch", batch)
    monkeypatch.setattr(engine, "BATCH", 4)
    return seen


def test_it_shows_a_first_download_folder_by_folder_with_a_bar_that_only_grows(
    synced_mailbox, watched_batches
):
    account, mailbox = synced_mailbox
    account.sync_period = "all"
    account.save()
    _fill(mailbox, {"INBOX": 10, "Clients": 6, "Archive/2025": 3})

    run = mailbox_sync(account_id=account.pk)

    assert run.state == SyncRun.State.SUCCEEDED
    folders = run.folders_total
    assert folders >= 3  # and the server's own (Sent, Trash, ...) that are downloaded
    assert (run.folders_done, run.messages_total, run.messages_done) == (folders, 19, 19)
    assert run.progress == 100
    # Written at the start of a first download: the page shows the totals from the
    # first batch on, never a record without them.
    assert None not in watched_batches
    assert all(seen[2] == folders and seen[4] == 19 for seen in watched_batches)
    done = [seen[3] for seen in watched_batches]
    assert done == sorted(done) and done[-1] < 19
    stored = [seen[5] for seen in watched_batches]
    assert stored == sorted(stored) and len(stored) >= 5  # 10 + 6 + 3 in batches of 4


def test_it_counts_folders_but_shows_no_bar_when_it_is_no_first_download(
    synced_mailbox, watched_batches
):
    account, mailbox = synced_mailbox
    _fill(mailbox, {"INBOX": 2, "Clients": 1})
    mailbox_sync(account_id=account.pk)
    _fill(mailbox, {"Clients": 5})
    watched_batches.clear()

    run = mailbox_sync(account_id=account.pk)

    assert run.new_emails == 5
    assert run.folders_done == run.folders_total >= 2
    assert (run.messages_total, run.progress) == (0, None)
    # Its record is written with its first batch, as before: not at its start.
    assert watched_batches[0] is None


def test_it_adds_no_query_to_an_idle_run(synced_mailbox):
    account, mailbox = synced_mailbox
    _fill(mailbox, {"INBOX": 1})
    mailbox_sync(account_id=account.pk)
    with CaptureQueriesContext(connection) as idle:
        run = mailbox_sync(account_id=account.pk)
    # Claim (with the request's mark), the folder list, the run's record with the
    # release: no write for the progress of a run with nothing to show.
    assert run.folders_done == run.folders_total >= 1
    table = SyncRun._meta.db_table
    assert not [q for q in idle.captured_queries if q["sql"].startswith(f'UPDATE "{table}"')]
    assert len([q for q in idle.captured_queries if table in q["sql"]]) == 1  # its end


def test_it_shows_an_exchange_first_download_folder_by_folder(exchange_mailbox, ews_server):
    account, address = exchange_mailbox
    for n in range(3):
        ews_server.add_message(
            "inbox", make_message(subject=f"m {n}", to=address), received=timezone.now(),
            mailbox=address,
        )  # fmt: skip
    run = mailbox_sync(account_id=account.pk)
    assert run.state == SyncRun.State.SUCCEEDED, run.error
    assert run.folders_done == run.folders_total >= 2  # Inbox, Sent Items, ...
    # The folder list's own counts (FindFolder's TotalCount): 3 in all.
    assert (run.messages_total, run.messages_done, run.progress) == (3, 3, 100)


def _status(client, account) -> str:
    return client.get(reverse("sync:status", args=[account.pk]), HTTP_HX_REQUEST="true").text


def test_it_starts_looking_at_once_after_the_button_and_until_a_run_takes_it(client, db, queued):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    answer = client.post(reverse("sync:download", args=[account.pk]), HTTP_HX_REQUEST="true")
    # The status itself, in place of the old one, already looking again every 2 s.
    assert answer.text.lstrip().startswith(f'<div id="sync-status-{account.pk}"')
    assert "Download asked for: it starts in a moment." in answer.text
    assert 'hx-trigger="every 2s"' in answer.text
    assert queued == [account.pk]

    # A run takes the mailbox (its claim clears the mark): progress.
    from sync.services import _claim

    token, _ = _claim(account.pk)
    assert MailboxSync.objects.get(account=account).download_requested_at is None
    SyncRun.objects.create(
        account=account, folders_total=6, folders_done=2, messages_total=400,
        messages_done=100, new_emails=80,
    )  # fmt: skip
    running = _status(client, account)
    assert "Downloading: 2 of 6 folders done, 80 new emails stored so far" in running
    assert '<progress max="100" value="25" aria-label="First download">' in running
    assert 'hx-trigger="every 2s"' in running

    # Done: the result, and no more looking.
    from sync.services import _release

    SyncRun.objects.update(state="succeeded", folders_done=6, messages_done=400)
    _release(account.pk, token, last_success_at=timezone.now())
    done = _status(client, account)
    assert "every 2s" not in done
    # Issue 17, point 12: "just now", never "0 minutes ago".
    assert "Last download just now: 80 new emails, 6 folders checked." in done
    # Due within the minute: said so, never "in about 0 minutes".
    MailboxSync.objects.filter(account=account).update(
        last_started_at=timezone.now() - timedelta(minutes=5) + timedelta(seconds=20)
    )  # MailboxSyncInterval: 5 minutes by default
    due = _status(client, account)
    assert "Next download within a minute." in due and "0 minutes" not in due


def test_it_says_why_an_asked_for_download_has_not_started(client, db, queued):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    client.post(reverse("sync:download", args=[account.pk]))
    asked = timezone.now() - REQUEST_WAIT - timedelta(seconds=1)
    MailboxSync.objects.filter(account=account).update(download_requested_at=asked)
    status = _status(client, account)
    assert "has not started: the app&#x27;s background service is not running" in status
    assert "every 2s" not in status  # it stops looking; a reload looks again
    # Long past, it is forgotten: the mailbox's health says the rest.
    MailboxSync.objects.filter(account=account).update(
        download_requested_at=timezone.now() - timedelta(hours=1)
    )
    assert "has not started" not in _status(client, account)


def test_it_lets_a_run_in_progress_answer_a_request_made_meanwhile(synced_mailbox, queued):
    account, _mailbox = synced_mailbox
    from sync.services import _claim, download_request

    _token, _ = _claim(account.pk)  # a scheduled run holds the mailbox
    assert download_request(account_id=account.pk)
    assert sync_status(account)["running"]
    # The task queued by the button finds the mailbox taken: that run is the download.
    assert mailbox_sync(account_id=account.pk) is None
    assert MailboxSync.objects.get(account=account).download_requested_at is None
