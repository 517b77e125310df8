"""The sweep (beat, every minute): nothing outgoing stays queued or sending for ever, and
queuing an email twice never sends it twice. The tasks it queues are recorded here;
tests/test_sending_stuck.py runs it with real workers, a killed one and a stopped broker."""

import threading
from datetime import timedelta

import pytest
from django.db import connection
from django.utils import timezone

from sending.message import Draft
from sending.models import OutgoingEmail
from sending.services import (
    COPY_QUEUE_DOWN,
    MAX_ATTEMPTS,
    QUEUE_DOWN,
    STOPPED_BEFORE_HAND_OVER,
    UNCERTAIN_AFTER_CRASH,
    outgoing_create,
    outgoing_send,
    outgoing_sweep,
)
from tests.conftest import MAIL_USERS
from tests.factories import EmailAccountFactory

State, Copy = OutgoingEmail.State, OutgoingEmail.Copy


@pytest.fixture
def queued_tasks(monkeypatch):
    """(task name, outgoing id) of every task queued, in order; nothing runs them."""
    from sending import tasks

    calls = []
    for task in (tasks.send_email, tasks.store_sent_copy):
        monkeypatch.setattr(task, "delay", lambda pk, name=task.name: calls.append((name, pk)))
    return calls


@pytest.fixture
def lease(settings):
    settings.SENDING_CLAIM_LEASE_SECONDS = 600
    settings.SENDING_QUEUED_GRACE_SECONDS = 300
    return timedelta(seconds=600)


def _row(account, **fields) -> OutgoingEmail:
    return OutgoingEmail.objects.create(
        account=account, author=account.owner, message_id=f"{fields.get('subject')}@x.test",
        raw=b"Subject: x\r\n\r\nx\r\n", **fields,
    )  # fmt: skip


def _draft(account) -> Draft:
    return Draft(
        sender=account.address, sender_name="", subject="Once", text="Hello",
        to=[{"name": "", "address": "peter@partner.test"}], cc=[], bcc=[],
    )  # fmt: skip


def _ago(**delta):
    return timezone.now() - timedelta(**delta)


def test_it_leaves_an_email_waiting_for_its_retry_alone_and_queues_a_late_one_once(
    db, queued_tasks, lease
):
    account = EmailAccountFactory()
    waiting = _row(
        account, subject="waiting", next_attempt_at=timezone.now() + timedelta(minutes=8)
    )
    fresh = _row(account, subject="fresh", next_attempt_at=_ago(minutes=4))
    late = _row(account, subject="late", next_attempt_at=_ago(minutes=6))

    counts = outgoing_sweep()

    assert queued_tasks == [("sending.send", late.pk)]
    assert counts["queued"] == 1
    late.refresh_from_db()
    assert late.next_attempt_at > _ago(seconds=5)  # the grace starts again
    outgoing_sweep()
    assert queued_tasks == [("sending.send", late.pk)]
    for row in (waiting, fresh):
        assert OutgoingEmail.objects.get(pk=row.pk).state == State.QUEUED


def test_it_queues_an_email_the_task_queue_refused_at_the_next_sweep(db, queued_tasks, lease):
    account = EmailAccountFactory()
    refused = _row(account, subject="refused", error=QUEUE_DOWN, error_kind="queue")

    outgoing_sweep()

    assert queued_tasks == [("sending.send", refused.pk)]
    refused.refresh_from_db()
    assert (refused.state, refused.error, refused.error_kind) == (State.QUEUED, "", "")


def test_it_keeps_the_note_while_the_task_queue_is_still_down(db, lease):
    from tests.servers.broker import publishing_to
    from tests.servers.dovecot import free_port

    account = EmailAccountFactory()
    refused = _row(account, subject="refused", error=QUEUE_DOWN, error_kind="queue")
    with publishing_to(f"redis://127.0.0.1:{free_port()}/0"):
        assert outgoing_sweep()["queued"] == 0
    refused.refresh_from_db()
    assert (refused.state, refused.error_kind) == (State.QUEUED, "queue")


def test_it_takes_back_what_a_dead_worker_held(db, queued_tasks, lease):
    account = EmailAccountFactory()
    before = _row(account, subject="before", state=State.SENDING, attempts=1,
                  claimed_at=_ago(minutes=11))  # fmt: skip
    after = _row(account, subject="after", state=State.SENDING, attempts=1,
                 claimed_at=_ago(minutes=11), handed_over_at=_ago(minutes=11))  # fmt: skip
    working = _row(account, subject="working", state=State.SENDING, attempts=1,
                   claimed_at=_ago(minutes=9))  # fmt: skip
    worn = _row(account, subject="worn", state=State.SENDING, attempts=MAX_ATTEMPTS,
                claimed_at=_ago(minutes=11))  # fmt: skip

    counts = outgoing_sweep()

    assert queued_tasks == [("sending.send", before.pk)]
    assert counts == {"uncertain": 1, "given_up": 1, "taken_back": 1, "queued": 1, "copies": 0}
    rows = {r.subject: r for r in OutgoingEmail.objects.all()}
    assert (rows["before"].state, rows["before"].error) == (State.QUEUED, STOPPED_BEFORE_HAND_OVER)
    assert (rows["after"].state, rows["after"].error) == (State.UNCERTAIN, UNCERTAIN_AFTER_CRASH)
    assert rows["working"].state == State.SENDING
    assert rows["worn"].state == State.FAILED and f"{MAX_ATTEMPTS} times" in rows["worn"].error
    assert working.pk and worn.pk and after.pk


def test_it_queues_sent_copies_that_are_late_or_whose_worker_died(db, queued_tasks, lease):
    account = EmailAccountFactory()
    sent = {"state": State.SENT, "sent_at": _ago(hours=1)}
    late = _row(account, subject="late", next_attempt_at=_ago(minutes=6), **sent)
    storing = _row(
        account, subject="storing", sent_copy=Copy.STORING, claimed_at=_ago(minutes=11),
        next_attempt_at=_ago(minutes=11), **sent,
    )  # fmt: skip
    refused = _row(account, subject="refused", sent_copy_error=COPY_QUEUE_DOWN, **sent)
    _row(account, subject="stored", sent_copy=Copy.STORED, next_attempt_at=_ago(hours=1), **sent)
    _row(account, subject="by server", sent_copy=Copy.BY_SERVER, next_attempt_at=_ago(hours=1),
         **sent)  # fmt: skip
    _row(account, subject="failed", state=State.FAILED, next_attempt_at=_ago(hours=1))

    outgoing_sweep()

    assert sorted(queued_tasks) == sorted(
        ("sending.sent_copy", row.pk) for row in (late, storing, refused)
    )
    storing.refresh_from_db()
    assert storing.sent_copy == Copy.PENDING


def test_it_sends_once_however_often_the_email_is_queued(
    test_provider, outbox, django_capture_on_commit_callbacks
):
    account = EmailAccountFactory(
        provider=test_provider, address="alice@example.test",
        password=MAIL_USERS["alice@example.test"],
    )  # fmt: skip
    with django_capture_on_commit_callbacks():
        outgoing = outgoing_create(author=account.owner, account=account, draft=_draft(account))
    with django_capture_on_commit_callbacks():
        for _ in range(3):  # the task, a sweep's, and the broker's redelivery
            outgoing_send(outgoing_id=outgoing.pk)
    outgoing.refresh_from_db()
    assert (outgoing.state, outgoing.attempts, len(outbox.messages)) == (State.SENT, 1, 1)


@pytest.fixture
def gated(transactional_db, test_provider, smtp_servers, settings):
    """Alice's mailbox sending through an SMTP server that holds a session where the test
    says (tests/servers/gated_smtp.py): (server, account); released and stopped after."""
    from tests.servers.gated_smtp import gated_smtp_server

    server = gated_smtp_server(smtp_servers["starttls"].users).start()
    try:
        test_provider.smtp_port = server.port
        test_provider.save()
        account = EmailAccountFactory(
            provider=test_provider, address="alice@example.test",
            password=MAIL_USERS["alice@example.test"],
        )  # fmt: skip
        settings.MAIL_CONNECT_TIMEOUT = 30
        yield server, account
    finally:
        server.handler.release.set()
        server.stop()


def _worker(outgoing_id: int, results: list) -> threading.Thread:
    """outgoing_send in a thread of its own, as another worker would run it (its own
    database connection, closed after); its result goes to `results`."""

    def run():
        try:
            results.append(outgoing_send(outgoing_id=outgoing_id))
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_it_never_hands_over_once_the_sweep_took_the_email_back(gated, settings, queued_tasks):
    """A worker slower than the lease (held at RCPT) loses its claim to the sweep; another
    worker sends the email; the slow one then must not send it too."""
    server, account = gated
    outgoing = outgoing_create(author=account.owner, account=account, draft=_draft(account))
    queued_tasks.clear()
    server.handler.hold_at = "rcpt"
    slow_result = []
    thread = _worker(outgoing.pk, slow_result)
    assert server.handler.reached.wait(15)
    settings.SENDING_CLAIM_LEASE_SECONDS = 0
    outgoing_sweep()
    assert queued_tasks == [("sending.send", outgoing.pk)]
    outgoing_send(outgoing_id=outgoing.pk)  # another worker, not held
    server.handler.release.set()
    thread.join(30)
    outgoing.refresh_from_db()
    assert slow_result == [None]
    assert (outgoing.state, outgoing.attempts) == (State.SENT, 2)
    assert len(server.handler.messages) == 1


def test_it_leaves_alone_an_email_handed_over_while_the_sweep_takes_back(
    transactional_db, queued_tasks, lease
):
    """A worker past its lease hands its email over between the sweep's read of what to
    take back and its update: taken back, the email read "before handing it to the mail
    server", and the next worker, unable to hand it over, left it "sending" under its
    own claim, so that the first worker's 250 matched no claim: "May have been sent"."""
    from django.db import connections

    account = EmailAccountFactory()
    row = _row(account, subject="late", state=State.SENDING, attempts=1,
               claimed_at=_ago(minutes=11))  # fmt: skip
    other = connections.create_connection("default")
    other.set_autocommit(False)
    with other.cursor() as cursor:  # the worker's hand-over, not committed yet
        cursor.execute(
            "UPDATE sending_outgoingemail SET handed_over_at = now() WHERE id = %s", [row.pk]
        )
    counts = {}

    def sweep():
        try:
            counts.update(outgoing_sweep())
        finally:
            connection.close()

    sweeper = threading.Thread(target=sweep)
    sweeper.start()
    with connection.cursor() as cursor:
        for _ in range(200):  # until the sweep's update waits for the worker's row
            cursor.execute(
                "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                " AND query LIKE 'UPDATE \"sending_outgoingemail\"%%'"
            )
            if cursor.fetchone()[0]:
                break
            threading.Event().wait(0.05)
        else:
            pytest.fail("the sweep never waited for the row")
    other.commit()
    other.close()
    sweeper.join(10)
    row.refresh_from_db()
    assert (row.state, row.error) == (State.SENDING, "")
    assert row.handed_over_at is not None
    assert counts["taken_back"] == 0
    counts = outgoing_sweep()  # the next one: the worker is gone, it may have been sent
    row.refresh_from_db()
    assert (row.state, row.error) == (State.UNCERTAIN, UNCERTAIN_AFTER_CRASH)


def test_it_tells_the_server_s_refusal_though_the_sweep_said_it_may_have_been_sent(
    gated, settings, queued_tasks
):
    """A send outlasting its lease after the hand-over (a large upload) is called "May
    have been sent" by the sweep; the server's answer then is a refusal: the email was
    not sent, and says so."""
    server, account = gated
    outgoing = outgoing_create(author=account.owner, account=account, draft=_draft(account))
    server.handler.hold_at = "data"
    server.handler.answer = "554 5.6.0 Message refused by policy"
    thread = _worker(outgoing.pk, [])
    assert server.handler.reached.wait(15)
    settings.SENDING_CLAIM_LEASE_SECONDS = 0
    assert outgoing_sweep()["uncertain"] == 1
    server.handler.release.set()
    thread.join(30)
    outgoing.refresh_from_db()
    assert outgoing.state == State.FAILED
    assert "refused by policy" in outgoing.error and outgoing.error_kind != "handed_over"


def test_it_runs_the_sweep_every_minute_through_beat():
    from django.conf import settings

    from sending.tasks import sweep_outgoing

    entry = settings.CELERY_BEAT_SCHEDULE["sending-sweep"]
    assert (entry["task"], entry["schedule"]) == (sweep_outgoing.name, 60)
