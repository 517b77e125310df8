"""/metrics (issue 18): Prometheus' view of the same truth as the "Mailbox health" page,
read from the database at scrape time; the task queue's depth from the real Redis of the
suite; only for a bearer token or a staff user, and never a secret in it."""

import os
from datetime import timedelta

import pytest
import redis
from django.db import connection, transaction
from django.urls import reverse
from django.utils import timezone
from prometheus_client.parser import text_string_to_metric_families

from health.selectors import STATES
from sending.models import OutgoingEmail
from sync.models import Email, MailboxSync, SyncRun, WorkerHeartbeat
from sync.search import vectors_later
from tests.factories import EmailAccountFactory, UserFactory
from tests.test_health_page import known_mailboxes

URL = reverse("health:metrics")
TOKEN = "scrape-token-for-the-test"
REDIS_URL = os.environ.get("TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


@pytest.fixture
def scrape(client, settings):
    settings.METRICS_TOKEN = TOKEN
    settings.CELERY_BROKER_URL = "filesystem://"

    def scrape() -> dict[tuple, float]:
        response = client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"})
        assert response.status_code == 200, response.status_code
        assert response["Content-Type"].startswith("text/plain; version=")
        samples = {}
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                samples[(sample.name, *sorted(sample.labels.items()))] = sample.value
        scrape.text = response.text
        return samples

    return scrape


def _ago(**delta):
    return timezone.now() - timedelta(**delta)


def test_it_counts_mailboxes_by_state_and_lag(db, scrape):
    WorkerHeartbeat.objects.create(name="worker", beat_at=timezone.now())
    known_mailboxes()
    samples = scrape()

    def mailboxes(state, lag):
        return samples[("mailsetup_mailboxes", ("lag", lag), ("state", state))]

    assert mailboxes("ok", "under_5m") == 1
    assert mailboxes("needs_owner", "under_6h") == 1
    assert mailboxes("failing", "under_6h") == 1
    assert mailboxes("stuck", "over_1d") == 1
    assert mailboxes("blocked_folder", "under_5m") == 1
    assert mailboxes("syncing", "under_5m") == 1
    assert mailboxes("off", "never") == 1
    # Every series is there, zero or not (a state that empties must read 0, not vanish);
    # the removed mailbox is in none of them.
    series = [value for key, value in samples.items() if key[0] == "mailsetup_mailboxes"]
    assert len(series) == len(STATES) * 7 == 11 * 7 and sum(series) == 7
    # The listener's connections: a family with nothing in it until push/ is wired in.
    assert "# TYPE mailsetup_listener_connections gauge" in scrape.text


def test_it_reports_the_last_hours_runs_by_outcome_and_duration(db, scrape):
    account, other = EmailAccountFactory(), EmailAccountFactory()
    for seconds, state, owner in [
        (3, "succeeded", account), (45, "succeeded", other), (700, "failed", account),
        (20, "interrupted", other),
    ]:  # fmt: skip
        started = _ago(minutes=20)
        SyncRun.objects.create(
            account=owner, state=state, started_at=started,
            finished_at=started + timedelta(seconds=seconds),
        )  # fmt: skip
    SyncRun.objects.create(account=account, state="running", started_at=_ago(minutes=1))
    # Before the window, and a removed mailbox's: neither counts.
    SyncRun.objects.create(
        account=account, state="failed", started_at=_ago(hours=2), finished_at=_ago(hours=2)
    )
    removed = EmailAccountFactory(removed_at=timezone.now())
    SyncRun.objects.create(account=removed, state="failed", finished_at=timezone.now())
    samples = scrape()
    outcomes = {
        key[1][1]: value for key, value in samples.items()
        if key[0] == "mailsetup_sync_runs_last_hour"
    }  # fmt: skip
    assert outcomes == {"running": 1, "succeeded": 2, "failed": 1, "interrupted": 1}
    buckets = {
        key[1][1]: value for key, value in samples.items()
        if key[0] == "mailsetup_sync_run_duration_seconds_bucket"
    }  # fmt: skip
    assert buckets["1.0"] == 0 and buckets["5.0"] == 1 and buckets["30.0"] == 2
    assert buckets["60.0"] == 3 and buckets["600.0"] == 3 and buckets["1800.0"] == 4
    assert buckets["+Inf"] == 4
    assert samples[("mailsetup_sync_run_duration_seconds_gsum",)] == 768
    assert samples[("mailsetup_sync_run_duration_seconds_gcount",)] == 4


def test_it_reports_emails_stored_and_outgoing_emails_by_state(db, scrape):
    account = EmailAccountFactory()
    for number in range(3):
        Email.objects.create(account=account, message_key=f"k{number}")
    for number, state in enumerate(["queued", "sent", "sent", "failed", "uncertain"]):
        OutgoingEmail.objects.create(
            account=account, message_id=f"<{number}@example.test>", raw=b"x", state=state
        )
    with connection.cursor() as cursor:
        # The figure is PostgreSQL's statistics' (no scrape reads every email): fresh
        # ones, as autovacuum would keep them.
        cursor.execute("ANALYZE sync_email")
    samples = scrape()
    assert samples[("mailsetup_emails_stored",)] == 3
    assert samples[("mailsetup_emails_waiting_for_search",)] == 0
    with transaction.atomic(), vectors_later():
        Email.objects.create(account=account, message_key="waiting")
    assert scrape()[("mailsetup_emails_waiting_for_search",)] == 1
    outgoing = {
        key[1][1]: value for key, value in samples.items() if key[0] == "mailsetup_outgoing_emails"
    }
    assert outgoing == {"queued": 1, "sending": 0, "sent": 2, "failed": 1, "uncertain": 1}


@pytest.fixture
def broker(settings):
    client = redis.Redis.from_url(REDIS_URL)
    queue = "health-test-queue"
    keys = [queue, *(f"{queue}\x06\x16{step}" for step in (3, 6, 9))]
    client.delete(*keys)
    yield client, queue
    client.delete(*keys)


def test_it_reads_the_task_queues_depth_from_redis(db, scrape, settings, broker):
    client, queue = broker
    settings.CELERY_TASK_DEFAULT_QUEUE = queue
    # Without Redis as the broker there is no cheap depth to read: no such series.
    assert ("mailsetup_celery_broker_up",) not in scrape()
    settings.CELERY_BROKER_URL = REDIS_URL
    assert scrape()[("mailsetup_celery_queue_length", ("queue", queue))] == 0
    client.rpush(queue, "a", "b", "c")
    client.rpush(f"{queue}\x06\x166", "d")  # a task of another priority
    samples = scrape()
    assert samples[("mailsetup_celery_broker_up",)] == 1
    assert samples[("mailsetup_celery_queue_length", ("queue", queue))] == 4


def test_it_says_the_broker_is_down_without_its_password(db, scrape, settings):
    settings.CELERY_BROKER_URL = "redis://:broker-password-123@127.0.0.1:1/0"
    samples = scrape()
    assert samples[("mailsetup_celery_broker_up",)] == 0
    assert ("mailsetup_celery_queue_length", ("queue", "celery")) not in samples
    assert "broker-password-123" not in scrape.text
    assert TOKEN not in scrape.text


def test_it_answers_a_token_or_staff_only(client, db, settings):
    MailboxSync.objects.create(account=EmailAccountFactory(), last_success_at=timezone.now())
    settings.METRICS_TOKEN = ""
    settings.CELERY_BROKER_URL = "filesystem://"
    # No token set: no bearer opens it, not even an empty one.
    assert client.get(URL).status_code == 403
    assert client.get(URL, headers={"Authorization": "Bearer "}).status_code == 403
    client.force_login(UserFactory())
    assert client.get(URL).status_code == 403
    client.force_login(UserFactory(is_staff=True))
    assert client.get(URL).status_code == 200
    client.logout()
    settings.METRICS_TOKEN = TOKEN
    assert client.get(URL, headers={"Authorization": f"Bearer {TOKEN}"}).status_code == 200
    for wrong in (f"Bearer {TOKEN}x", f"Bearer {TOKEN[:-1]}", TOKEN, f"Basic {TOKEN}"):
        assert client.get(URL, headers={"Authorization": wrong}).status_code == 403, wrong
    client.force_login(UserFactory(is_staff=True, is_active=False))
    assert client.get(URL).status_code == 403


def test_it_reports_the_listener_as_push_tells_it(db, scrape, monkeypatch):
    # The two wiring points (health.listener), standing in for push.selectors.
    from health import listener

    account = EmailAccountFactory()
    MailboxSync.objects.create(account=account, last_success_at=timezone.now())
    monkeypatch.setattr(listener, "disconnected", lambda ids: {account.pk: "down"})
    monkeypatch.setattr(listener, "connection_counts", lambda: {"watching": 12, "backoff": 2})
    samples = scrape()
    assert samples[("mailsetup_mailboxes", ("lag", "under_5m"), ("state", "listener"))] == 1
    assert samples[("mailsetup_listener_connections", ("state", "watching"))] == 12
    assert samples[("mailsetup_listener_connections", ("state", "backoff"))] == 2


def test_it_counts_mailboxes_no_listener_watches_and_those_on_the_interval(db, scrape, settings):
    """Through push's real rows: a mailbox added while no listener ran (it has no watch
    row) reads "listener"; one whose server cannot be watched reads "interval", not
    "ok"; with PUSH_ENABLED off, neither is disconnected and the scrape says push is off."""
    from push.models import MailboxWatch

    settings.PUSH_LEASE_SECONDS = 60
    unwatched = EmailAccountFactory()
    type(unwatched).objects.filter(pk=unwatched.pk).update(
        created_at=timezone.now() - timedelta(hours=1)
    )
    unsupported = EmailAccountFactory()
    MailboxWatch.objects.create(account=unsupported, state=MailboxWatch.State.NOT_SUPPORTED)
    for account in (unwatched, unsupported):
        MailboxSync.objects.create(account=account, last_success_at=timezone.now())
    samples = scrape()

    def mailboxes(state):
        return samples[("mailsetup_mailboxes", ("lag", "under_5m"), ("state", state))]

    assert (mailboxes("listener"), mailboxes("interval"), mailboxes("ok")) == (1, 1, 0)
    assert samples[("mailsetup_push_enabled",)] == 1
    settings.PUSH_ENABLED = False
    samples = scrape()
    assert (mailboxes("listener"), mailboxes("interval"), mailboxes("ok")) == (0, 0, 2)
    assert samples[("mailsetup_push_enabled",)] == 0
