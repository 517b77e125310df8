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
