from datetime import timedelta

from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from django.utils import timezone

from sync.models import MailboxSync
from sync.services import mailboxes_due
from systemsettings.models import SystemSetting
from systemsettings.selectors import mailbox_sync_interval
from tests.factories import EmailAccountFactory


def test_it_queues_mailboxes_whose_last_sync_is_older_than_the_interval(db):
    SystemSetting.objects.filter(code="MailboxSyncInterval").update(value="10")
    never = EmailAccountFactory()
    stale = EmailAccountFactory()
    fresh = EmailAccountFactory()
    manual = EmailAccountFactory(auto_sync=False)
    broken = EmailAccountFactory()
    now = timezone.now()
    MailboxSync.objects.create(account=stale, last_started_at=now - timedelta(minutes=11))
    MailboxSync.objects.create(account=fresh, last_started_at=now - timedelta(minutes=9))
    MailboxSync.objects.create(
        account=broken, last_started_at=None, health=MailboxSync.Health.NEEDS_ATTENTION
    )
    assert sorted(mailboxes_due()) == sorted([never.pk, stale.pk])
    # Queued ones count as started: the next minute's dispatch does not queue them again.
    assert mailboxes_due() == []
    assert manual.pk not in mailboxes_due()


def test_it_finds_due_mailboxes_in_a_constant_number_of_queries(db):
    for _ in range(3):
        EmailAccountFactory()
    mailbox_sync_interval()  # read once, then kept for a few seconds: not a per-run query
    with CaptureQueriesContext(connection) as few:
        mailboxes_due()
    for _ in range(30):
        EmailAccountFactory()
    with CaptureQueriesContext(connection) as many:
        mailboxes_due()
    assert len(many) == len(few)


def test_it_starts_a_download_from_the_button(client, db, queued):
    account = EmailAccountFactory()
    client.force_login(account.owner)
    response = client.post(reverse("sync:download", args=[account.pk]))
    assert response.status_code == 302
    assert queued == [account.pk]


def test_it_hides_another_users_mailbox_from_the_download_button(client, db):
    account = EmailAccountFactory()
    client.force_login(EmailAccountFactory().owner)
    assert client.post(reverse("sync:download", args=[account.pk])).status_code == 404
    assert client.get(reverse("sync:status", args=[account.pk])).status_code == 404


def test_it_shows_progress_while_a_sync_runs_and_polls_for_more(client, db):
    from sync.models import SyncRun

    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, claimed_until=timezone.now() + timedelta(minutes=1))
    SyncRun.objects.create(account=account, new_emails=120)
    client.force_login(account.owner)
    running = client.get(reverse("sync:status", args=[account.pk])).text
    assert "120 new emails stored so far" in running
    assert 'hx-trigger="every 2s"' in running
    assert "<progress" in running

    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    SyncRun.objects.update(state=SyncRun.State.SUCCEEDED)
    done = client.get(reverse("sync:status", args=[account.pk])).text
    assert "every 2s" not in done
    assert "Next download" in done and "<progress" not in done


def test_it_tells_the_owner_what_to_do_when_the_password_stopped_working(client, db):
    account = EmailAccountFactory()
    MailboxSync.objects.create(
        account=account,
        health=MailboxSync.Health.NEEDS_ATTENTION,
        last_error="The mail server did not accept the login or password.",
        last_error_kind="credentials",
    )
    client.force_login(account.owner)
    page = client.get(reverse("accounts:settings", args=[account.pk])).text
    assert "Needs your attention" in page
    assert "Enter the new one under “Change email settings”" in page


def test_it_retries_transient_errors_a_bounded_number_of_times(monkeypatch):
    from sync import tasks
    from sync.services import TransientSyncError

    calls = []

    def flaky(*, account_id, claim_token):
        calls.append(account_id)
        raise TransientSyncError("connection reset")

    monkeypatch.setattr(tasks, "mailbox_sync", flaky)
    # Eager mode runs each retry at once instead of after its backoff.
    result = tasks.sync_mailbox.apply(args=[7])
    assert result.failed()
    assert calls == [7] * (tasks.sync_mailbox.max_retries + 1)
    assert tasks.sync_mailbox.retry_backoff and tasks.sync_mailbox.retry_jitter


def test_it_tells_when_the_next_download_is_due(client, db):
    account = EmailAccountFactory()
    MailboxSync.objects.create(
        account=account,
        last_started_at=timezone.now() - timedelta(minutes=2),
        last_success_at=timezone.now() - timedelta(minutes=2),
    )
    client.force_login(account.owner)
    url = reverse("sync:status", args=[account.pk])
    # MailboxSyncInterval is 5 minutes by default.
    assert "Next download in about 2\xa0minutes." in client.get(url).text
    account.auto_sync = False
    account.save()
    assert "Automatic download is off" in client.get(url).text


def test_it_says_so_when_the_task_queue_is_down(client, db):
    from tests.servers.broker import publishing_to
    from tests.servers.dovecot import free_port

    account = EmailAccountFactory()
    client.force_login(account.owner)
    # A broker address nothing listens on: the button still answers, and says why
    # nothing started (the dispatcher queues the mailbox once the queue is back).
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        response = client.post(reverse("sync:download", args=[account.pk]), follow=True)
    assert response.status_code == 200
    assert "task queue cannot be reached right now: automatic downloads go on" in response.text


def test_it_leaves_mailboxes_due_when_the_task_queue_goes_away(db):
    from sync.services import mailboxes_dispatch
    from tests.servers.broker import publishing_to
    from tests.servers.dovecot import free_port

    accounts = [EmailAccountFactory() for _ in range(3)]
    # A broker nobody listens on: nothing is queued, and nothing is marked as started,
    # so the next tick (with the queue back) queues all three at once.
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        assert mailboxes_dispatch() == 0
    assert sorted(mailboxes_due()) == sorted(a.pk for a in accounts)
