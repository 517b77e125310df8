"""push.services: the listeners' leases, against PostgreSQL."""

from datetime import timedelta

from django.utils import timezone

from push import services
from push.models import MailboxWatch
from tests.factories import EmailAccountFactory


def test_it_gives_and_compares_leases_in_the_database_time(db, settings, monkeypatch):
    settings.PUSH_LEASE_SECONDS = 60
    account = EmailAccountFactory()
    real = timezone.now()
    # This listener's machine is an hour behind: its leases would have run out already.
    monkeypatch.setattr(timezone, "now", lambda: real - timedelta(hours=1))
    assert services.watches_claim(holder="slow clock", limit=10) == [(account.pk, False)]
    lease = MailboxWatch.objects.get(account=account).lease_expires_at
    assert real < lease < real + timedelta(minutes=5)
    # Another machine an hour ahead: the lease is alive all the same, not taken.
    monkeypatch.setattr(timezone, "now", lambda: real + timedelta(hours=1))
    assert services.watches_claim(holder="fast clock", limit=10) == []
    monkeypatch.setattr(timezone, "now", lambda: real - timedelta(hours=1))
    assert services.watches_renew(holder="slow clock") == {account.pk}
    assert MailboxWatch.objects.get(account=account).lease_expires_at >= lease
    # A lease that did run out (in the database's time) is taken over.
    MailboxWatch.objects.filter(account=account).update(
        lease_expires_at=real - timedelta(seconds=1)
    )
    assert services.watches_claim(holder="fast clock", limit=10) == [(account.pk, True)]


def test_it_queues_one_sync_until_a_worker_starts_it(db, monkeypatch):
    from sync import services as sync_services
    from sync.models import MailboxSync

    published = []
    monkeypatch.setattr(
        sync_services, "publish", lambda task, *args: published.append(args) or True
    )
    account = EmailAccountFactory()
    MailboxWatch.objects.create(account=account)
    assert services.watch_sync_queue(account_id=account.pk) == services.QUEUED
    # Not started yet (the task queue is backed up): that one will see the change.
    assert services.watch_sync_queue(account_id=account.pk) == services.WAITING
    assert len(published) == 1
    # A worker started it, and its run holds the claim: queued after that run.
    now = timezone.now()
    MailboxSync.objects.update_or_create(
        account=account,
        defaults={"last_started_at": now, "claimed_until": now + timedelta(minutes=5)},
    )
    assert services.watch_sync_queue(account_id=account.pk) == services.BUSY
    MailboxSync.objects.filter(account=account).update(claimed_until=None)
    assert services.watch_sync_queue(account_id=account.pk) == services.QUEUED
    # Waiting too long (a task lost with its broker): queued again.
    MailboxWatch.objects.filter(account=account).update(sync_queued_at=now - timedelta(hours=1))
    assert services.watch_sync_queue(account_id=account.pk) == services.QUEUED
    assert len(published) == 3


def test_it_says_the_owner_is_needed_whichever_thread_drops_the_mailbox_first(db):
    from mail.errors import MailError

    account = EmailAccountFactory()
    assert services.watches_claim(holder="me", limit=10) == [(account.pk, False)]
    # The OAuth refresh recorded the revoked grant itself; the leases' thread drops the
    # mailbox before the watch's own report arrives.
    type(account).objects.filter(pk=account.pk).update(reconnect_needed_at=timezone.now())
    assert services.watches_drop_ineligible(holder="me") == {account.pk}
    watch = MailboxWatch.objects.get(account=account)
    assert (watch.holder, watch.state) == ("", MailboxWatch.State.NEEDS_OWNER)
    services.watch_owner_needed(
        account_id=account.pk, holder="me", failure=MailError("reconnect", "Sign in again.")
    )
    watch.refresh_from_db()
    assert (watch.state, watch.error_kind) == (MailboxWatch.State.NEEDS_OWNER, "reconnect")
    # A row another listener holds by then is not touched.
    MailboxWatch.objects.filter(account=account).update(holder="other", error_kind="")
    services.watch_owner_needed(
        account_id=account.pk, holder="me", failure=MailError("reconnect", "Sign in again.")
    )
    assert MailboxWatch.objects.get(account=account).holder == "other"
