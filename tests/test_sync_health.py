"""Health is the truth: what the status and the "See why" page say about a mailbox, from
the states the sync leaves behind."""

import re
from datetime import UTC, datetime, timedelta

from django.urls import reverse
from django.utils import timezone

from sync.models import Email, EmailLocation, Folder, MailboxSync, UnstoredMessage, WorkerHeartbeat
from sync.selectors import mailbox_health
from sync.services import mailbox_sync
from tests.factories import EmailAccountFactory, UserFactory
from tests.mailbox import make_message


def _health(account):
    state = MailboxSync.objects.filter(account=account).first()
    return mailbox_health(account, state, running=False)


def test_it_reads_ok_only_when_nothing_is_wrong(synced_mailbox, client):
    account, mailbox = synced_mailbox
    mailbox.append("INBOX", make_message(subject="fine"))
    mailbox_sync(account_id=account.pk)
    assert _health(account).ok
    folder = Folder.objects.get(account=account, path="INBOX")
    UnstoredMessage.objects.create(folder=folder, uidvalidity=folder.uidvalidity, uid=99, error="x")
    health = _health(account)
    assert health.level == "problems"
    assert health.problems == ["1 email in INBOX could not be stored."]
    client.force_login(account.owner)
    status = client.get(reverse("sync:status", args=[account.pk])).text
    assert "1 email in INBOX could not be stored." in status
    assert reverse("sync:problems", args=[account.pk]) in status


def test_it_names_a_folder_the_server_refuses_and_emails_it_could_not_read(db):
    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())
    inbox = Folder.objects.create(account=account, path="INBOX", uidvalidity=1)
    Folder.objects.create(
        account=account, path="Archive", last_error="The server refused to read this folder: NO",
        failing_since=timezone.now(),
    )  # fmt: skip
    for number, problem in enumerate(["unreadable", "unreadable", "incomplete", ""]):
        email = Email.objects.create(account=account, message_key=f"k{number}", problem=problem)
        EmailLocation.objects.create(email=email, folder=inbox, uidvalidity=1, uid=number + 1)
    health = _health(account)
    assert health.level == "problems"
    assert health.problems == [health.problems[0]] and health.problems[0].startswith(
        "Archive: The server refused to read this folder: NO"
    )
    # Stored, with their originals: worth knowing, not a fault that blocks anything.
    assert health.notes == [
        "2 emails in INBOX could not be read; their original is kept.",
        "1 email in INBOX was stored in part (a size limit or a broken structure); the "
        "originals are kept.",
    ]
    # A folder the owner no longer downloads (or the server deleted) is not counted.
    account.folder_mode = "custom"
    account.save()
    Folder.objects.filter(path="INBOX").update(chosen=True)
    health = _health(account)
    assert (health.level, health.problems) == ("ok", [])


def test_it_says_when_no_download_happened_although_one_was_due(db):
    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now() - timedelta(hours=2))
    health = _health(account)
    assert health.level == "stuck"
    assert "background service is not running" in health.headline
    WorkerHeartbeat.objects.create(name="worker", beat_at=timezone.now())
    health = _health(account)
    assert health.level == "stuck" and "although one was due every 5 minutes" in health.headline
    MailboxSync.objects.filter(account=account).update(last_success_at=timezone.now())
    assert _health(account).ok


def test_it_shows_each_folders_count_on_the_server_beside_the_stored_count(synced_mailbox, client):
    account, mailbox = synced_mailbox
    old = timezone.now() - timedelta(days=90)
    mailbox.append("INBOX", make_message(subject="old"), when=old)
    mailbox.append("INBOX", make_message(subject="a"), make_message(subject="b"))
    mailbox.append("Projects", make_message(subject="c"))
    mailbox_sync(account_id=account.pk)
    client.force_login(account.owner)
    page = client.get(reverse("sync:problems", args=[account.pk])).text
    inbox = Folder.objects.get(account=account, path="INBOX")
    row = re.search(rf'<tr id="folder-{inbox.pk}">(.*?)</tr>', page, re.S).group(1)
    assert re.findall(r"<td[^>]*>([^<]*)</td>", row)[:3] == ["INBOX", "3", "2"]
    assert "older than the download period (1 week) stay on the server only" in page


def test_it_shows_the_problems_page_only_to_those_who_see_the_mailbox(db, client):
    account = EmailAccountFactory()
    client.force_login(UserFactory())
    assert client.get(reverse("sync:problems", args=[account.pk])).status_code == 404
    client.force_login(account.owner)
    assert client.get(reverse("sync:problems", args=[account.pk])).status_code == 200


def test_it_promises_a_retry_only_where_one_will_come(db):
    # A download that failed with a kind tried again later: with automatic download
    # off nothing tries again (the dispatcher skips the mailbox, the task's own retries
    # end within the hour), nor without a worker running beat's heartbeat.
    from sync.selectors import BY_HAND, SERVICE_DOWN
    from sync.services import heartbeat_record, mailboxes_due

    account = EmailAccountFactory()
    two_days = timezone.now() - timedelta(days=2)
    MailboxSync.objects.create(
        account=account, last_started_at=two_days, failing_since=two_days,
        last_error="The connection closed.", last_error_kind="connection",
    )  # fmt: skip
    assert _health(account).advice == SERVICE_DOWN  # no worker has ever beaten
    heartbeat_record(hostname="worker@test")
    assert "tries again by itself" in _health(account).advice
    account.auto_sync = False
    account.save()
    assert account.pk not in mailboxes_due()
    health = _health(account)
    assert (health.level, health.advice) == ("failing", BY_HAND)
    # Provider trouble: fixed by an administrator, then downloaded by hand.
    MailboxSync.objects.filter(account=account).update(last_error_kind="tls")
    assert _health(account).advice.endswith(BY_HAND)
    # Not everything stored, automatic download off: both said, the advice true.
    MailboxSync.objects.filter(account=account).update(failing_since=None)
    Folder.objects.create(account=account, path="Archive", last_error="NO",
                          failing_since=timezone.now())  # fmt: skip
    health = _health(account)
    assert health.level == "problems"
    assert health.headline == "Not everything could be stored, and automatic download is off."
    assert "tries again by itself" not in health.advice and BY_HAND in health.advice


def test_it_tells_what_failed_sending_from_a_mailbox_whose_downloads_are_fine(db, client):
    # A mailbox read "OK" everywhere while every email from it was refused, retried for
    # an hour, or its Sent copy lost: health said nothing of sending.
    from health.selectors import classify
    from sending.models import OutgoingEmail

    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())
    assert _health(account).level == "ok"
    State, Copy = OutgoingEmail.State, OutgoingEmail.Copy

    def outgoing(key, on=account, days=0, **fields):
        row = OutgoingEmail.objects.create(
            account=on, author=on.owner, message_id=f"{key}@x.test", raw=b"x", **fields
        )
        written = timezone.now() - timedelta(days=days, minutes=len(key))
        OutgoingEmail.objects.filter(pk=row.pk).update(created_at=written, queued_at=written)

    outgoing("f1", state=State.FAILED, error_kind="smtp_auth_disabled", error="AUTH off (old)")
    outgoing("f", state=State.FAILED, error_kind="rejected", error="550 no such user")
    outgoing("u", state=State.UNCERTAIN, error_kind="handed_over", error="broke")
    outgoing("q", state=State.QUEUED, error_kind="refused", attempts=5, error="refused")
    outgoing("c", state=State.SENT, sent_copy=Copy.FAILED, sent_copy_error="[OVERQUOTA]")
    # Not counted: a week old, queued for its first try, sent, another mailbox's.
    outgoing("old", days=8, state=State.FAILED, error="ancient")
    outgoing("new", state=State.QUEUED)
    outgoing("fine", state=State.SENT, sent_copy=Copy.STORED)
    outgoing("theirs", on=EmailAccountFactory(), state=State.FAILED, error="theirs")
    health = _health(account)
    assert health.level == "sending"
    assert health.sending == [
        "1 email not sent. The last: AUTH off (old)",
        "1 email not sent: the server refused the message or a recipient. The last: 550 no "
        "such user",
        "1 email may have been sent: the connection broke after the server took the message "
        "and before it confirmed. Check before sending again.",
        "1 email waiting to be tried again. The last answer: refused",
        "The copy of 1 sent email could not be put in the Sent folder. The last: [OVERQUOTA]",
    ]
    [row] = classify([account])
    assert (row.key, row.cause) == ("sending_failed", health.headline)
    assert "1 email not sent. The last: AUTH off (old)" in row.problems
    client.force_login(account.owner)
    status = client.get(reverse("sync:status", args=[account.pk])).text
    assert "Sending from this mailbox failed in the last week." in status
    assert "550 no such user" in status
    # A download failing is said first; what failed sending is still listed.
    MailboxSync.objects.filter(account=account).update(
        failing_since=timezone.now(), last_error="refused", last_error_kind="refused"
    )
    health = _health(account)
    assert health.level == "failing" and len(health.sending) == 5
    # A provider set up for sending only has no Sent folder: no copy is missing.
    account.provider.receive_enabled = False
    account.provider.save()
    assert not any("Sent folder" in line for line in _health(account).sending)


def test_it_calls_sending_failing_only_while_it_fails_and_for_the_mailbox(db):
    # A failure a later email got past (the password fixed), or one message's own
    # refusal (a recipient's typo), is listed but does not make the mailbox "failing";
    # "off" keeps its words (downloads are not known to work).
    from sending.models import OutgoingEmail

    State, Copy = OutgoingEmail.State, OutgoingEmail.Copy
    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())

    def outgoing(key, days=0, **fields):
        row = OutgoingEmail.objects.create(
            account=account, author=account.owner, message_id=f"{key}@x.test", raw=b"x", **fields
        )
        written = timezone.now() - timedelta(days=days)
        OutgoingEmail.objects.filter(pk=row.pk).update(created_at=written, queued_at=written)

    outgoing("typo", days=1, state=State.FAILED, error_kind="rejected", error="550 no user")
    health = _health(account)
    assert (health.level, len(health.sending)) == ("ok", 1)
    assert "refused the message or a recipient" in health.sending[0]
    outgoing("pw", days=5, state=State.FAILED, error_kind="credentials", error="535 bad")
    assert _health(account).level == "sending"
    outgoing("after", days=4, state=State.SENT, sent_copy=Copy.FAILED, sent_copy_error="quota")
    health = _health(account)  # sent since: the password was fixed; the copy failed
    assert health.level == "sending" and len(health.sending) == 3
    outgoing("copied", days=3, state=State.SENT, sent_copy=Copy.STORED)
    health = _health(account)
    assert health.level == "ok" and len(health.sending) == 3
    account.auto_sync = False
    account.save()
    outgoing("waiting", state=State.QUEUED, attempts=2, error_kind="refused", error="refused")
    health = _health(account)
    assert (health.level, health.headline) == ("off", "Automatic download is off.")
    assert len(health.sending) == 4


def test_it_dates_a_failure_as_the_pages_date_everything(db, settings):
    # "Downloads have failed since 2026-12-06 08:15", where every page writes
    # "6 Dec 2026, 08:15".
    settings.TIME_ZONE = "UTC"
    account = EmailAccountFactory()
    since = timezone.make_aware(datetime(2026, 12, 6, 8, 15), timezone=UTC)
    MailboxSync.objects.create(account=account, failing_since=since, last_error="refused")
    assert _health(account).headline == "Downloads have failed since 6 Dec 2026, 08:15: refused"


def test_it_takes_an_email_sent_again_and_sent_as_getting_past_earlier_failures(db):
    # Two emails refused for the password (Monday, Tuesday); on Wednesday, once it is
    # fixed, Monday's is sent again and goes: sending works, whatever day it was written.
    from sending.models import OutgoingEmail

    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())

    def refused(key, days):
        row = OutgoingEmail.objects.create(
            account=account, author=account.owner, message_id=f"{key}@x.test", raw=b"x",
            state=OutgoingEmail.State.FAILED, error_kind="credentials", error="535 bad",
        )  # fmt: skip
        written = timezone.now() - timedelta(days=days)
        OutgoingEmail.objects.filter(pk=row.pk).update(created_at=written, queued_at=written)
        return row

    monday, _tuesday = refused("mon", 3), refused("tue", 2)
    assert _health(account).level == "sending"
    OutgoingEmail.objects.filter(pk=monday.pk).update(
        state=OutgoingEmail.State.SENT, sent_copy=OutgoingEmail.Copy.STORED,
        queued_at=timezone.now() - timedelta(days=1), sent_at=timezone.now(),
    )  # fmt: skip
    health = _health(account)
    assert health.level == "ok" and health.sending == ["1 email not sent. The last: 535 bad"]


def test_it_says_each_mailbox_s_state_on_the_owner_s_mailbox_list(db, client):
    """A mailbox whose password stopped working does not look like one that works, and
    the list reads them all in the same queries however many there are."""
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    user = UserFactory()
    fine = EmailAccountFactory(owner=user, address="fine@example.test")
    MailboxSync.objects.create(account=fine, last_success_at=timezone.now())
    refused = EmailAccountFactory(owner=user, address="refused@example.test")
    MailboxSync.objects.create(
        account=refused, health=MailboxSync.Health.NEEDS_ATTENTION, last_error_kind="credentials",
        last_error="The mail server did not accept the login or password.",
    )  # fmt: skip
    client.force_login(user)
    client.get(reverse("accounts:list"))  # the session's first page reads more
    with CaptureQueriesContext(connection) as two:
        page = client.get(reverse("accounts:list")).text

    def row(account):
        return re.search(rf'<tr id="mailbox-{account.pk}"(.*?)</tr>', page, re.S).group(1)

    assert 'data-health="ok"' in row(fine) and ">OK<" in row(fine)
    assert 'data-health="attention"' in row(refused)
    assert "Needs your attention: The mail server did not accept" in row(refused)
    assert f"{reverse('accounts:settings', args=[refused.pk])}#sync" in row(refused)
    for number in range(3):
        more = EmailAccountFactory(owner=user, address=f"more{number}@example.test")
        MailboxSync.objects.create(account=more, last_success_at=timezone.now())
    with CaptureQueriesContext(connection) as five:
        client.get(reverse("accounts:list"))
    assert len(five) == len(two)


def test_it_tells_a_colleague_who_may_not_set_the_mailbox_up_whom_to_ask(db, client):
    # A "Send emails" colleague read "Enter the new one under “Change email settings”",
    # a page that is not found for them.
    from tests.factories import MailboxGrantFactory

    owner = UserFactory(first_name="Anna", last_name="Owner")
    account = EmailAccountFactory(owner=owner, shared_access=True)
    MailboxSync.objects.create(
        account=account, health=MailboxSync.Health.NEEDS_ATTENTION, last_error_kind="credentials",
        last_error="The mail server did not accept the login or password.",
    )  # fmt: skip
    sender = MailboxGrantFactory(account=account, user=UserFactory(), can_send=True).user
    setup = MailboxGrantFactory(account=account, user=UserFactory(), can_setup=True).user
    status = reverse("sync:status", args=[account.pk])
    told = "Enter the new one under “Change email settings”"
    client.force_login(sender)
    page = client.get(status).text
    assert "Ask its owner, Anna Owner, or whoever may set up this mailbox:" in page
    for viewer in (owner, setup):
        client.force_login(viewer)
        page = client.get(status).text
        assert told in page and "Ask its owner" not in page
    # What the app retries by itself says the same to everyone.
    MailboxSync.objects.filter(account=account).update(
        health=MailboxSync.Health.OK, failing_since=timezone.now(), last_error="timed out",
        last_error_kind="timeout",
    )  # fmt: skip
    client.force_login(sender)
    page = client.get(status).text
    assert "Downloads have failed since" in page and "Ask its owner" not in page
    # Automatic download off: its switch and "Download emails now" are the owner's.
    type(account).objects.filter(pk=account.pk).update(auto_sync=False)
    page = client.get(status).text
    assert "Ask its owner, Anna Owner, or whoever may set up this mailbox:" in page


def test_it_does_not_call_a_copy_missing_from_sent_a_failed_send(db, client):
    # "Sending from this mailbox failed … in its author's Outbox, where it can be sent
    # again", for an email that went and whose copy alone could not be filed.
    from sending.models import OutgoingEmail

    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())
    OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="c@x.test", raw=b"x",
        state=OutgoingEmail.State.SENT, sent_copy=OutgoingEmail.Copy.FAILED,
        sent_copy_error="[OVERQUOTA] Mailbox is full",
    )  # fmt: skip
    health = _health(account)
    assert health.level == "sending"
    assert health.headline == (
        "Emails were sent, but their copies could not be put in the Sent folder."
    )
    assert "Nothing is to be sent again" in health.advice
    client.force_login(account.owner)
    status = client.get(reverse("sync:status", args=[account.pk])).text
    assert "Copies of emails sent in the last week are missing from the Sent folder." in status
    assert "Outbox" not in status and "[OVERQUOTA] Mailbox is full" in status
    # With an email not sent beside it: a failed send, as before.
    OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id="f@x.test", raw=b"x",
        state=OutgoingEmail.State.FAILED, error="535 bad",
    )  # fmt: skip
    assert _health(account).headline == "Downloads work, but sending from this mailbox failed."
    assert "Outbox" in client.get(reverse("sync:status", args=[account.pk])).text
